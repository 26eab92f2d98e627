// Python bindings of the dyco_ops CUDA kernels (defined in cuda_ops.cu). Every function takes
// the current CUDA stream as a trailing integer handle; dyco_ops.native passes it and sets the
// device, which keeps these sources free of c10/cuda headers (absent from CPU torch).
#include <torch/extension.h>

#include <tuple>

#include "bindings.h"
#include "check.h"

namespace dyco_cuda {
std::tuple<at::Tensor, at::Tensor> voxelize(const at::Tensor& coords, int64_t stream);
std::tuple<at::Tensor, at::Tensor> scatter_mean(const at::Tensor& values, const at::Tensor& index,
                                                int64_t num_segments, int64_t stream);
at::Tensor scatter_max(const at::Tensor& values, const at::Tensor& index, int64_t num_segments,
                       int64_t stream);
at::Tensor connected_components(const at::Tensor& points, const at::Tensor& labels,
                                double radius, int64_t stream);
at::Tensor mask_iou(const at::Tensor& masks, int64_t stream);
at::Tensor furthest_point_sample(const at::Tensor& xyz, const at::Tensor& starts,
                                 const at::Tensor& out_starts, int64_t total, int64_t stream);
std::tuple<at::Tensor, at::Tensor> ball_query(const at::Tensor& query_xyz, const at::Tensor& lo,
                                              const at::Tensor& hi, const at::Tensor& xyz,
                                              double radius, int64_t k, int64_t stream);
at::Tensor box_iou_3d(const at::Tensor& a, const at::Tensor& b, int64_t stream);
at::Tensor otsu_threshold(const at::Tensor& values, const at::Tensor& segment,
                          int64_t num_segments, int64_t bins, int64_t stream);
at::Tensor ln_nms(const at::Tensor& xyz, const at::Tensor& heat, const at::Tensor& available,
                  const at::Tensor& starts, double radius, double threshold,
                  int64_t max_candidates, int64_t cap, int64_t stream);
}  // namespace dyco_cuda

namespace {

void require_cuda(const at::Tensor& t, const char* name) {
  DYCO_CHECK(t.is_cuda(), "dyco_ops CUDA kernel: ", name, " must be a CUDA tensor");
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

// Decoder ops: the Python wrapper passes float64, int64 (uint8 availability), contiguous.
at::Tensor furthest_point_sample(const at::Tensor& xyz, const at::Tensor& starts,
                                 const at::Tensor& out_starts, int64_t total, int64_t stream) {
  require_cuda(xyz, "xyz");
  require_cuda(starts, "starts");
  require_cuda(out_starts, "out_starts");
  return dyco_cuda::furthest_point_sample(xyz.contiguous(), starts.contiguous(),
                                          out_starts.contiguous(), total, stream);
}

std::tuple<at::Tensor, at::Tensor> ball_query(const at::Tensor& query_xyz, const at::Tensor& lo,
                                              const at::Tensor& hi, const at::Tensor& xyz,
                                              double radius, int64_t k, int64_t stream) {
  require_cuda(query_xyz, "query_xyz");
  require_cuda(lo, "lo");
  require_cuda(hi, "hi");
  require_cuda(xyz, "xyz");
  return dyco_cuda::ball_query(query_xyz.contiguous(), lo.contiguous(), hi.contiguous(),
                               xyz.contiguous(), radius, k, stream);
}

at::Tensor box_iou_3d(const at::Tensor& a, const at::Tensor& b, int64_t stream) {
  require_cuda(a, "a");
  require_cuda(b, "b");
  return dyco_cuda::box_iou_3d(a.contiguous(), b.contiguous(), stream);
}

at::Tensor otsu_threshold(const at::Tensor& values, const at::Tensor& segment,
                          int64_t num_segments, int64_t bins, int64_t stream) {
  require_cuda(values, "values");
  require_cuda(segment, "segment");
  return dyco_cuda::otsu_threshold(values.contiguous(), segment.contiguous(), num_segments, bins,
                                   stream);
}

at::Tensor ln_nms(const at::Tensor& xyz, const at::Tensor& heat, const at::Tensor& available,
                  const at::Tensor& starts, double radius, double threshold,
                  int64_t max_candidates, int64_t cap, int64_t stream) {
  require_cuda(xyz, "xyz");
  require_cuda(heat, "heat");
  require_cuda(available, "available");
  require_cuda(starts, "starts");
  return dyco_cuda::ln_nms(xyz.contiguous(), heat.contiguous(), available.contiguous(),
                           starts.contiguous(), radius, threshold, max_candidates, cap, stream);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dyco_ops CUDA kernels";
  DYCO_BIND_SHARED_OPS(m);
}
