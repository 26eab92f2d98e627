// Python bindings of the dyco_ops CUDA kernels (defined in cuda_ops.cu). Every function takes
// the current CUDA stream as a trailing integer handle; dyco_ops.native passes it and sets the
// device, which keeps these sources free of c10/cuda headers (absent from CPU torch).
#include <torch/extension.h>

#include <tuple>

namespace dyco_cuda {
std::tuple<at::Tensor, at::Tensor> voxelize(const at::Tensor& coords, int64_t stream);
std::tuple<at::Tensor, at::Tensor> scatter_mean(const at::Tensor& values, const at::Tensor& index,
                                                int64_t num_segments, int64_t stream);
at::Tensor scatter_max(const at::Tensor& values, const at::Tensor& index, int64_t num_segments,
                       int64_t stream);
at::Tensor connected_components(const at::Tensor& points, const at::Tensor& labels,
                                double radius, int64_t stream);
at::Tensor mask_iou(const at::Tensor& masks, int64_t stream);
}  // namespace dyco_cuda

namespace {

void require_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "dyco_ops CUDA kernel: ", name, " must be a CUDA tensor");
}

std::tuple<at::Tensor, at::Tensor> voxelize(const at::Tensor& coords, int64_t stream) {
  require_cuda(coords, "coords");
  return dyco_cuda::voxelize(coords, stream);
}

std::tuple<at::Tensor, at::Tensor> scatter_mean(const at::Tensor& values, const at::Tensor& index,
                                                int64_t num_segments, int64_t stream) {
  require_cuda(values, "values");
  require_cuda(index, "index");
  return dyco_cuda::scatter_mean(values.contiguous(), index.contiguous(), num_segments, stream);
}

at::Tensor scatter_max(const at::Tensor& values, const at::Tensor& index, int64_t num_segments,
                       int64_t stream) {
  require_cuda(values, "values");
  require_cuda(index, "index");
  return dyco_cuda::scatter_max(values.contiguous(), index.contiguous(), num_segments, stream);
}

at::Tensor connected_components(const at::Tensor& points, const at::Tensor& labels,
                                double radius, int64_t stream) {
  require_cuda(points, "points");
  require_cuda(labels, "labels");
  return dyco_cuda::connected_components(points, labels, radius, stream);
}

at::Tensor mask_iou(const at::Tensor& masks, int64_t stream) {
  require_cuda(masks, "masks");
  return dyco_cuda::mask_iou(masks, stream);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dyco_ops CUDA kernels";
  m.def("voxelize", &voxelize, "unique voxels (lexicographic) and point -> voxel index");
  m.def("scatter_mean", &scatter_mean, "segment mean (+ counts)");
  m.def("scatter_max", &scatter_max, "segment max, empty segments 0");
  m.def("connected_components", &connected_components, "radius graph components per label");
  m.def("mask_iou", &mask_iou, "pairwise IoU of bool masks");
}
