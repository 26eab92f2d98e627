// CUDA kernels of dyco_ops, written for correctness first (atomics, brute force per cell pair).
// Semantics are defined by dyco_ops/reference.py; inputs are validated by dyco_ops/ops.py.
// Built with --fmad=false so squared distances round exactly as on the CPU.
// Only ATen + the CUDA runtime are included (no c10/cuda headers) so that the file also
// compiles against CPU torch for CI; the caller passes the current stream and sets the device.
// Per-op headers instead of <ATen/ATen.h>: several times faster to compile.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/_unique2.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/bincount.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/floor.h>
#include <ATen/ops/full.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <tuple>

#include "check.h"
#include "common.h"

namespace dyco_cuda {
namespace {

constexpr int kThreads = 256;
using ull = unsigned long long;

int64_t blocks_for(int64_t n) { return (n + kThreads - 1) / kThreads; }

cudaStream_t as_stream(int64_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

void check_launch() {
  const cudaError_t err = cudaGetLastError();
  DYCO_CHECK(err == cudaSuccess, "dyco_ops CUDA kernel launch failed: ", cudaGetErrorString(err));
}

// ---------------------------------------------------------------- voxelize

// Open-addressing insert: each slot is claimed by the first point (its representative) that
// lands there; a point whose coordinates equal the representative's shares its slot.
__global__ void insert_points(const int64_t* __restrict__ coords, int64_t n, int64_t* slot_owner,
                              int64_t capacity, int64_t* __restrict__ point_slot) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t x = coords[3 * i], y = coords[3 * i + 1], z = coords[3 * i + 2];
  uint64_t slot = dyco::hash4(x, y, z, 0) & (capacity - 1);
  while (true) {
    const ull prev = atomicCAS(reinterpret_cast<ull*>(slot_owner + slot), static_cast<ull>(-1),
                               static_cast<ull>(i));
    const int64_t owner = prev == static_cast<ull>(-1) ? i : static_cast<int64_t>(prev);
    if (coords[3 * owner] == x && coords[3 * owner + 1] == y && coords[3 * owner + 2] == z) {
      point_slot[i] = static_cast<int64_t>(slot);
      return;
    }
    slot = (slot + 1) & (capacity - 1);
  }
}

// Permutation sorting rows of `columns` (R, D) lexicographically: stable sorts, last key first.
at::Tensor lexicographic_order(const at::Tensor& columns) {
  auto order = at::arange(columns.size(0), columns.options().dtype(at::kLong));
  for (int64_t d = columns.size(1) - 1; d >= 0; --d) {
    const auto key = columns.select(1, d).index_select(0, order);
    const auto perm = std::get<1>(key.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
    order = order.index_select(0, perm);
  }
  return order;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> voxelize(const at::Tensor& coords_in, int64_t stream_handle) {
  const cudaStream_t stream = as_stream(stream_handle);
  const auto coords = coords_in.to(at::kLong).contiguous();
  const int64_t n = coords.size(0);
  const int64_t capacity = dyco::table_capacity(n);
  auto slot_owner = at::full({capacity}, -1, coords.options());
  auto point_slot = at::empty({n}, coords.options());
  if (n > 0) {
    insert_points<<<blocks_for(n), kThreads, 0, stream>>>(
        coords.data_ptr<int64_t>(), n, slot_owner.data_ptr<int64_t>(), capacity,
        point_slot.data_ptr<int64_t>());
    check_launch();
  }
  const auto occupied = at::nonzero(slot_owner >= 0).squeeze(1);
  const auto voxels = coords.index_select(0, slot_owner.index_select(0, occupied));
  const auto order = lexicographic_order(voxels);
  auto slot_rank = at::full({capacity}, -1, coords.options());
  slot_rank.index_copy_(0, occupied.index_select(0, order),
                        at::arange(order.size(0), coords.options()));
  return {voxels.index_select(0, order), slot_rank.index_select(0, point_slot)};
}

// ---------------------------------------------------------------- scatter reductions

namespace {

template <typename scalar_t>
__global__ void scatter_add_rows(const scalar_t* __restrict__ values,
                                 const int64_t* __restrict__ index, int64_t n, int64_t ch,
                                 scalar_t* out) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= n * ch) return;
  const int64_t i = t / ch, c = t % ch;
  atomicAdd(out + index[i] * ch + c, values[t]);
}

template <typename scalar_t>
__global__ void divide_rows(scalar_t* out, const int64_t* __restrict__ counts, int64_t segments,
                            int64_t ch) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= segments * ch) return;
  const int64_t count = counts[t / ch];
  out[t] = count > 0 ? out[t] / static_cast<scalar_t>(count) : scalar_t(0);
}

// Atomic max through compare-and-swap on the bit pattern; NaN wins, as in torch.amax.
__device__ void atomic_max_value(float* address, float value) {
  int* bits = reinterpret_cast<int*>(address);
  int old = *bits;
  while (true) {
    const float current = __int_as_float(old);
    if (isnan(current) || !(isnan(value) || value > current)) return;
    const int seen = atomicCAS(bits, old, __float_as_int(value));
    if (seen == old) return;
    old = seen;
  }
}

__device__ void atomic_max_value(double* address, double value) {
  ull* bits = reinterpret_cast<ull*>(address);
  ull old = *bits;
  while (true) {
    const double current = __longlong_as_double(static_cast<long long>(old));
    if (isnan(current) || !(isnan(value) || value > current)) return;
    const ull seen = atomicCAS(bits, old, static_cast<ull>(__double_as_longlong(value)));
    if (seen == old) return;
    old = seen;
  }
}

template <typename scalar_t>
__global__ void scatter_max_rows(const scalar_t* __restrict__ values,
                                 const int64_t* __restrict__ index, int64_t n, int64_t ch,
                                 scalar_t* out) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= n * ch) return;
  atomic_max_value(out + index[t / ch] * ch + t % ch, values[t]);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> scatter_mean(const at::Tensor& values, const at::Tensor& index,
                                                int64_t num_segments, int64_t stream_handle) {
  const cudaStream_t stream = as_stream(stream_handle);
  const int64_t n = values.size(0), ch = values.size(1);
  auto out = at::zeros({num_segments, ch}, values.options());
  const auto counts = at::bincount(index, {}, num_segments);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "scatter_mean_cuda", [&] {
    if (n * ch > 0) {
      scatter_add_rows<scalar_t><<<blocks_for(n * ch), kThreads, 0, stream>>>(
          values.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), n, ch,
          out.data_ptr<scalar_t>());
      check_launch();
    }
    if (num_segments * ch > 0) {
      divide_rows<scalar_t><<<blocks_for(num_segments * ch), kThreads, 0, stream>>>(
          out.data_ptr<scalar_t>(), counts.data_ptr<int64_t>(), num_segments, ch);
      check_launch();
    }
  });
  return {out, counts};
}

at::Tensor scatter_max(const at::Tensor& values, const at::Tensor& index, int64_t num_segments,
                       int64_t stream_handle) {
  const cudaStream_t stream = as_stream(stream_handle);
  const int64_t n = values.size(0), ch = values.size(1);
  auto out = at::full({num_segments, ch}, -std::numeric_limits<double>::infinity(),
                      values.options());
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "scatter_max_cuda", [&] {
    if (n * ch > 0) {
      scatter_max_rows<scalar_t><<<blocks_for(n * ch), kThreads, 0, stream>>>(
          values.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), n, ch,
          out.data_ptr<scalar_t>());
      check_launch();
    }
  });
  const auto filled = at::bincount(index, {}, num_segments).gt(0).unsqueeze(1);
  return at::where(filled, out, at::zeros_like(out));
}

// ---------------------------------------------------------------- connected components

namespace {

struct Cell {
  int64_t label, x, y, z;
};

__device__ int compare_cells(const Cell& a, const Cell& b) {
  if (a.label != b.label) return a.label < b.label ? -1 : 1;
  if (a.x != b.x) return a.x < b.x ? -1 : 1;
  if (a.y != b.y) return a.y < b.y ? -1 : 1;
  if (a.z != b.z) return a.z < b.z ? -1 : 1;
  return 0;
}

// Index of `target` among the lexicographically sorted cells (rows of `cells`), or -1.
__device__ int64_t find_cell(const int64_t* __restrict__ cells, int64_t num_cells,
                             const Cell& target) {
  int64_t lo = 0, hi = num_cells;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    const int64_t* row = cells + 4 * mid;
    const int cmp = compare_cells(Cell{row[0], row[1], row[2], row[3]}, target);
    if (cmp == 0) return mid;
    if (cmp < 0) lo = mid + 1;
    else hi = mid;
  }
  return -1;
}

__device__ int64_t find_root(int64_t* parent, int64_t x) {
  while (true) {
    const int64_t p = *static_cast<volatile int64_t*>(parent + x);
    if (p == x) return x;
    x = p;
  }
}

// Lock-free union: a root only ever changes to a smaller index, so no cycle can form.
__device__ void unite(int64_t* parent, int64_t a, int64_t b) {
  while (true) {
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a == b) return;
    if (a < b) {
      const int64_t t = a;
      a = b;
      b = t;
    }
    if (atomicCAS(reinterpret_cast<ull*>(parent + a), static_cast<ull>(a), static_cast<ull>(b)) ==
        static_cast<ull>(a))
      return;
  }
}

// One thread per (cell, neighbour offset) over half of the 5x5x5 neighbourhood.
__global__ void link_cells(const int64_t* __restrict__ cells, const int64_t* __restrict__ start,
                           const double* __restrict__ grouped, int64_t num_cells,
                           double radius_sq, int64_t* parent) {
  constexpr int kSide = 2 * dyco::kNeighbourReach + 1;
  constexpr int kHalf = (kSide * kSide * kSide - 1) / 2;
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= num_cells * kHalf) return;
  const int64_t a = t / kHalf;
  // Offsets kHalf+1 .. 2*kHalf in row-major order over the cube are those after (0,0,0).
  const int code = static_cast<int>(t % kHalf) + kHalf + 1;
  const int dx = code / (kSide * kSide) - dyco::kNeighbourReach;
  const int dy = (code / kSide) % kSide - dyco::kNeighbourReach;
  const int dz = code % kSide - dyco::kNeighbourReach;
  const int64_t* row = cells + 4 * a;
  const int64_t b = find_cell(cells, num_cells, Cell{row[0], row[1] + dx, row[2] + dy, row[3] + dz});
  if (b < 0) return;
  for (int64_t i = start[a]; i < start[a + 1]; ++i) {
    for (int64_t j = start[b]; j < start[b + 1]; ++j) {
      const double ddx = grouped[3 * i] - grouped[3 * j];
      const double ddy = grouped[3 * i + 1] - grouped[3 * j + 1];
      const double ddz = grouped[3 * i + 2] - grouped[3 * j + 2];
      if (ddx * ddx + ddy * ddy + ddz * ddz <= radius_sq) {
        unite(parent, a, b);
        return;
      }
    }
  }
}

__global__ void flatten_roots(int64_t* parent, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) parent[i] = find_root(parent, i);
}

}  // namespace

at::Tensor connected_components(const at::Tensor& points_in, const at::Tensor& labels_in,
                                double radius, int64_t stream_handle) {
  const cudaStream_t stream = as_stream(stream_handle);
  const auto labels = labels_in.to(at::kLong);
  auto result = at::full({labels.size(0)}, -1, labels.options());
  const auto valid = at::nonzero(labels >= 0).squeeze(1);
  if (valid.size(0) == 0) return result;
  const auto points = points_in.to(at::kDouble).index_select(0, valid);
  // Rows (label, cx, cy, cz), sorted lexicographically.
  const auto grid = at::floor(points / dyco::cell_size(radius)).to(at::kLong);
  const auto keys = at::cat({labels.index_select(0, valid).unsqueeze(1), grid}, 1);
  const auto order = lexicographic_order(keys);
  const auto sorted_keys = keys.index_select(0, order);
  const auto grouped = points.index_select(0, order).contiguous();
  const auto is_new = at::ones({order.size(0)}, labels.options().dtype(at::kBool));
  if (order.size(0) > 1)
    is_new.slice(0, 1).copy_(
        sorted_keys.slice(0, 1).ne(sorted_keys.slice(0, 0, order.size(0) - 1)).any(1));
  const auto first_rows = at::nonzero(is_new).squeeze(1);
  const auto cells = sorted_keys.index_select(0, first_rows).contiguous();
  const int64_t num_cells = cells.size(0);
  const auto start = at::cat({first_rows, at::full({1}, order.size(0), first_rows.options())});
  auto parent = at::arange(num_cells, labels.options());
  constexpr int kSide = 2 * dyco::kNeighbourReach + 1;
  const int64_t threads = num_cells * ((kSide * kSide * kSide - 1) / 2);
  link_cells<<<blocks_for(threads), kThreads, 0, stream>>>(
      cells.data_ptr<int64_t>(), start.data_ptr<int64_t>(), grouped.data_ptr<double>(),
      num_cells, radius * radius, parent.data_ptr<int64_t>());
  check_launch();
  flatten_roots<<<blocks_for(num_cells), kThreads, 0, stream>>>(parent.data_ptr<int64_t>(),
                                                                   num_cells);
  check_launch();
  // Number components by their smallest original point index.
  const auto cell_of_row = at::cumsum(is_new.to(at::kLong), 0) - 1;
  const auto root_of_row = parent.index_select(0, cell_of_row);
  const auto original = valid.index_select(0, order);
  auto first_index = at::full({num_cells}, std::numeric_limits<int64_t>::max(), labels.options());
  first_index.scatter_reduce_(0, root_of_row, original, "amin", /*include_self=*/true);
  const auto component =
      std::get<1>(at::_unique2(first_index.index_select(0, root_of_row), true, true, false));
  result.index_copy_(0, original, component);
  return result;
}

// ---------------------------------------------------------------- mask IoU

namespace {

__global__ void pack_bits(const bool* __restrict__ masks, int64_t k, int64_t n, int64_t words,
                          ull* __restrict__ bits) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= k * words) return;
  const int64_t row = t / words, word = t % words;
  ull value = 0;
  for (int b = 0; b < 64; ++b) {
    const int64_t col = word * 64 + b;
    if (col < n && masks[row * n + col]) value |= 1ULL << b;
  }
  bits[t] = value;
}

// One block per (a, b) pair: popcount of the AND over all words, then IoU into both cells.
__global__ void pair_iou(const ull* __restrict__ bits, const int64_t* __restrict__ area,
                         int64_t k, int64_t words, float* __restrict__ iou) {
  const int64_t a = blockIdx.x, b = blockIdx.y;
  if (b < a) return;
  __shared__ long long partial[kThreads];
  long long count = 0;
  for (int64_t w = threadIdx.x; w < words; w += blockDim.x)
    count += __popcll(bits[a * words + w] & bits[b * words + w]);
  partial[threadIdx.x] = count;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const long long inter = partial[0];
    const long long uni = area[a] + area[b] - inter;
    const float value =
        uni > 0 ? static_cast<float>(static_cast<double>(inter) / static_cast<double>(uni)) : 0.f;
    iou[a * k + b] = value;
    iou[b * k + a] = value;
  }
}

}  // namespace

at::Tensor mask_iou(const at::Tensor& masks_in, int64_t stream_handle) {
  const cudaStream_t stream = as_stream(stream_handle);
  const auto masks = masks_in.contiguous();
  const int64_t k = masks.size(0), n = masks.size(1);
  const int64_t words = (n + 63) / 64;
  auto iou = at::zeros({k, k}, masks.options().dtype(at::kFloat));
  if (k == 0) return iou;
  auto bits = at::empty({k, std::max<int64_t>(words, 1)}, masks.options().dtype(at::kLong));
  const auto area = masks.sum({1}, /*keepdim=*/false, at::kLong).contiguous();
  if (words > 0) {
    pack_bits<<<blocks_for(k * words), kThreads, 0, stream>>>(
        masks.data_ptr<bool>(), k, n, words, reinterpret_cast<ull*>(bits.data_ptr<int64_t>()));
    check_launch();
  }
  const dim3 grid(static_cast<unsigned>(k), static_cast<unsigned>(k));
  pair_iou<<<grid, kThreads, 0, stream>>>(reinterpret_cast<const ull*>(bits.data_ptr<int64_t>()),
                                           area.data_ptr<int64_t>(), k, words,
                                           iou.data_ptr<float>());
  check_launch();
  return iou;
}

// ---------------------------------------------------------------- decoder ops
// Inputs are grouped by scene by the Python wrapper: rows stably sorted by batch id, scene s
// spans positions starts[s]..starts[s+1]-1 (ascending position = ascending row), coordinates
// float64. Results are positions in that order; the arithmetic (common.h) is the reference's.

namespace {

// (value, pos) beats (best_value, best_pos): larger value, ties -> smaller position; pos < 0
// means "no candidate".
__device__ __forceinline__ bool beats(double value, int64_t pos, double best_value,
                                      int64_t best_pos) {
  if (pos < 0) return false;
  if (best_pos < 0) return true;
  return value > best_value || (value == best_value && pos < best_pos);
}

// Block-wide argmax over the threads' (value, pos); every thread gets the result. Needs
// blockDim.x == kThreads (a power of two); all threads of the block must call it.
__device__ void block_argmax(double& value, int64_t& pos, double* s_value, int64_t* s_pos) {
  s_value[threadIdx.x] = value;
  s_pos[threadIdx.x] = pos;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    const int other = threadIdx.x + stride;
    if (threadIdx.x < stride &&
        beats(s_value[other], s_pos[other], s_value[threadIdx.x], s_pos[threadIdx.x])) {
      s_value[threadIdx.x] = s_value[other];
      s_pos[threadIdx.x] = s_pos[other];
    }
    __syncthreads();
  }
  value = s_value[0];
  pos = s_pos[0];
  __syncthreads();  // the buffers are reused by the next call
}

// One block per scene. Thread t owns positions lo + t + j * blockDim.x for the whole run, so
// dist[] needs no synchronisation; each pick is a block argmax (ties -> lowest position).
__global__ void fps_kernel(const double* __restrict__ xyz, const int64_t* __restrict__ starts,
                           const int64_t* __restrict__ out_starts, double* dist, int64_t* out) {
  __shared__ double s_value[kThreads];
  __shared__ int64_t s_pos[kThreads];
  const int64_t s = blockIdx.x;
  const int64_t lo = starts[s], hi = starts[s + 1];
  const int64_t first = out_starts[s], take = out_starts[s + 1] - first;
  if (take == 0) return;  // uniform over the block
  for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) dist[i] = i == lo ? -1.0 : INFINITY;
  if (threadIdx.x == 0) out[first] = lo;
  int64_t last = lo;
  for (int64_t t = 1; t < take; ++t) {
    const double* last_point = xyz + 3 * last;
    double best = -1.0;
    int64_t pos = -1;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      double d = dist[i];
      if (d < 0) continue;  // already chosen
      const double d2 = dyco::sq_dist(xyz + 3 * i, last_point);
      if (d2 < d) {
        d = d2;
        dist[i] = d;
      }
      if (d > best) {
        best = d;
        pos = i;
      }
    }
    block_argmax(best, pos, s_value, s_pos);
    if (threadIdx.x == 0) out[first + t] = pos;
    if ((pos - lo) % static_cast<int64_t>(blockDim.x) == static_cast<int64_t>(threadIdx.x))
      dist[pos] = -1.0;  // by its owner
    last = pos;
  }
}

// One thread per query: the first k positions of lo..hi-1 within the radius.
__global__ void ball_query_kernel(const double* __restrict__ query_xyz,
                                  const int64_t* __restrict__ lo, const int64_t* __restrict__ hi,
                                  const double* __restrict__ xyz, int64_t nq, double radius_sq,
                                  int64_t k, int64_t* __restrict__ neighbours,
                                  int64_t* __restrict__ count) {
  const int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (q >= nq) return;
  int64_t c = 0;
  for (int64_t i = lo[q]; i < hi[q] && c < k; ++i)
    if (dyco::sq_dist(query_xyz + 3 * q, xyz + 3 * i) <= radius_sq) neighbours[q * k + c++] = i;
  count[q] = c;
}

// One thread per box pair.
__global__ void box_iou_kernel(const double* __restrict__ a, const double* __restrict__ b,
                               int64_t na, int64_t nb, double* __restrict__ out) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= na * nb) return;
  out[t] = dyco::box_iou(a + 6 * (t / nb), b + 6 * (t % nb));
}

// Histogram of Otsu levels per segment (integer atomics: exact, order-independent).
__global__ void otsu_histogram(const double* __restrict__ values,
                               const int64_t* __restrict__ segment, int64_t m, int64_t bins,
                               int64_t* hist) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= m) return;
  const int64_t slot = segment[i] * bins + dyco::otsu_level(values[i], bins);
  atomicAdd(reinterpret_cast<ull*>(hist + slot), 1ULL);
}

// One thread per segment scans its histogram.
__global__ void otsu_splits(const int64_t* __restrict__ hist, int64_t num_segments, int64_t bins,
                            double* __restrict__ out) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s < num_segments) out[s] = dyco::otsu_split(hist + s * bins, bins);
}

// One block per scene, picks in sequence; each pick is a block argmax of heat over available
// positions, then a parallel pass that suppresses the neighbourhood and takes its max heat.
// Thread t owns the same positions throughout, so avail[] needs no synchronisation.
__global__ void ln_nms_kernel(const double* __restrict__ xyz, const double* __restrict__ heat,
                              uint8_t* avail, const int64_t* __restrict__ starts,
                              double radius_sq, double threshold, int64_t max_candidates,
                              int64_t cap, int64_t* __restrict__ out) {
  __shared__ double s_value[kThreads];
  __shared__ int64_t s_pos[kThreads];
  const int64_t s = blockIdx.x;
  const int64_t lo = starts[s], hi = starts[s + 1];
  int64_t accepted = 0;  // identical in every thread: decisions use broadcast values only
  while (accepted < max_candidates) {
    double best = 0.0;
    int64_t q = -1;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      if (avail[i] && (q < 0 || heat[i] > best)) {
        best = heat[i];
        q = i;
      }
    }
    block_argmax(best, q, s_value, s_pos);
    if (q < 0) break;  // nothing available in this scene
    const double* qp = xyz + 3 * q;
    double local_max = -INFINITY;
    int64_t any = -1;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      if (dyco::sq_dist(xyz + 3 * i, qp) < radius_sq) {
        avail[i] = 0;
        local_max = fmax(local_max, heat[i]);
        any = i;
      }
    }
    block_argmax(local_max, any, s_value, s_pos);  // q is its own neighbour: any >= 0
    if (local_max > 0 && heat[q] / local_max >= threshold) {
      if (threadIdx.x == 0) out[s * cap + accepted] = q;
      ++accepted;
    }
  }
}

}  // namespace

at::Tensor furthest_point_sample(const at::Tensor& xyz, const at::Tensor& starts,
                                 const at::Tensor& out_starts, int64_t total,
                                 int64_t stream_handle) {
  const cudaStream_t stream = as_stream(stream_handle);
  const int64_t scenes = starts.size(0) - 1;
  auto out = at::empty({total}, starts.options());
  auto dist = at::empty({xyz.size(0)}, xyz.options());
  if (scenes > 0 && total > 0) {
    fps_kernel<<<static_cast<unsigned>(scenes), kThreads, 0, stream>>>(
        xyz.data_ptr<double>(), starts.data_ptr<int64_t>(), out_starts.data_ptr<int64_t>(),
        dist.data_ptr<double>(), out.data_ptr<int64_t>());
    check_launch();
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> ball_query(const at::Tensor& query_xyz, const at::Tensor& lo,
                                              const at::Tensor& hi, const at::Tensor& xyz,
                                              double radius, int64_t k, int64_t stream_handle) {
  const cudaStream_t stream = as_stream(stream_handle);
  const int64_t nq = query_xyz.size(0);
  auto neighbours = at::full({nq, k}, -1, lo.options());
  auto count = at::zeros({nq}, lo.options());
  if (nq > 0 && k > 0) {
    ball_query_kernel<<<blocks_for(nq), kThreads, 0, stream>>>(
        query_xyz.data_ptr<double>(), lo.data_ptr<int64_t>(), hi.data_ptr<int64_t>(),
        xyz.data_ptr<double>(), nq, radius * radius, k, neighbours.data_ptr<int64_t>(),
        count.data_ptr<int64_t>());
    check_launch();
  }
  return {neighbours, count};
}

at::Tensor box_iou_3d(const at::Tensor& a, const at::Tensor& b, int64_t stream_handle) {
  const cudaStream_t stream = as_stream(stream_handle);
  const int64_t na = a.size(0), nb = b.size(0);
  auto out = at::empty({na, nb}, a.options());
  if (na * nb > 0) {
    box_iou_kernel<<<blocks_for(na * nb), kThreads, 0, stream>>>(
        a.data_ptr<double>(), b.data_ptr<double>(), na, nb, out.data_ptr<double>());
    check_launch();
  }
  return out;
}

at::Tensor otsu_threshold(const at::Tensor& values, const at::Tensor& segment,
                          int64_t num_segments, int64_t bins, int64_t stream_handle) {
  const cudaStream_t stream = as_stream(stream_handle);
  const int64_t m = values.size(0);
  auto hist = at::zeros({num_segments * bins}, segment.options());
  auto out = at::empty({num_segments}, values.options());
  if (m > 0) {
    otsu_histogram<<<blocks_for(m), kThreads, 0, stream>>>(
        values.data_ptr<double>(), segment.data_ptr<int64_t>(), m, bins,
        hist.data_ptr<int64_t>());
    check_launch();
  }
  if (num_segments > 0) {
    otsu_splits<<<blocks_for(num_segments), kThreads, 0, stream>>>(
        hist.data_ptr<int64_t>(), num_segments, bins, out.data_ptr<double>());
    check_launch();
  }
  return out;
}

at::Tensor ln_nms(const at::Tensor& xyz, const at::Tensor& heat, const at::Tensor& available,
                  const at::Tensor& starts, double radius, double threshold,
                  int64_t max_candidates, int64_t cap, int64_t stream_handle) {
  const cudaStream_t stream = as_stream(stream_handle);
  const int64_t scenes = starts.size(0) - 1;
  auto out = at::full({scenes, cap}, -1, starts.options());
  auto avail = available.clone();
  if (scenes > 0 && cap > 0) {
    ln_nms_kernel<<<static_cast<unsigned>(scenes), kThreads, 0, stream>>>(
        xyz.data_ptr<double>(), heat.data_ptr<double>(), avail.data_ptr<uint8_t>(),
        starts.data_ptr<int64_t>(), radius * radius, threshold, max_candidates, cap,
        out.data_ptr<int64_t>());
    check_launch();
  }
  return out;
}

}  // namespace dyco_cuda
