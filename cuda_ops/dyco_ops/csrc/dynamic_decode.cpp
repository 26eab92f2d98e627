// DyCo3D's per-proposal dynamic mask decoder on the CPU (inference only).
//
// Two passes over the proposals, each parallel over proposals: count each proposal's kept
// candidates (the yz box test), a prefix sum gives every proposal its slice of the output,
// then decode into that slice. Both passes read the inputs copied once into candidate order
// (`Sorted`), not scattered rows. Kept rows are decoded kTile at a time in a per-task buffer
// (the next tile prefetched); a layer runs kRows rows x one or two vectors of output columns
// with the accumulators in registers, each weight row ((in, out) row-major as generated, so
// contiguous) loaded once for the kRows rows. An AVX2 + FMA build of the decode pass is
// chosen at run time (~1.5x over the portable SSE one here).
#include "dynamic_decode.h"

#include "check.h"
#include "simd.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace {

constexpr int64_t kRows = 4;             // rows per register block: 4 x 2 vectors of columns
constexpr int64_t kTile = 4 * kRows;     // kept rows gathered and decoded together
constexpr int64_t kSortGrain = 1 << 12;  // rows per task when copying the inputs
constexpr int64_t kAhead = 16;           // rows prefetched ahead when copying the inputs

// Vectors of one register each: Vec8 (ymm) in the AVX2 build, Vec4 (xmm) in the portable one,
// where Vec8 pairs spilled (SSE has 16 xmm registers).
using dyco::simd::load;
using dyco::simd::store;
using dyco::simd::Vec4;
using dyco::simd::Vec8;

template <typename V>
constexpr int64_t kLanes = sizeof(V) / sizeof(float);

struct Layer {
  int64_t in, out;
  int64_t weight, bias;  // offsets into a proposal's parameter row
};

struct Problem {
  const float* features;
  const float* xyz;
  const int64_t* order;
  const int64_t* starts;
  const int64_t* stops;
  const float* box_min;
  const float* box_max;
  const float* centre;
  const float* params;
  int64_t rows, channels, num_params;
  bool relative;
  std::vector<Layer> layers;
  int64_t stride;  // activation buffer row stride: the widest layer, rounded up to 8
};

struct Output {
  const int64_t* offsets;  // proposal k writes [offsets[k], offsets[k + 1])
  float* logits;
  int64_t* points;
  int64_t* ids;
};

// The decoder's per-row inputs copied once into candidate order (entry j is row order[j]):
// every proposal then reads ascending addresses instead of scattered rows, which cost more
// than the decoder itself (a block's candidate ranges add up to ~12 N, its kept rows to
// ~1.5 N).
struct Sorted {
  std::vector<float> x, y, z;
  torch::Tensor features;  // (N, C), a torch buffer: 64-byte aligned, a 16-float row is 1 line
  const float* feature_rows;
};

// Proposal k's yz box and candidate range. Python slicing: a stop before the start is empty.
struct Box {
  const float* y;  // candidate-order y and z, held here so the scan keeps them in registers
  const float* z;
  float y_lo, y_hi, z_lo, z_hi;
  int64_t start, stop;

  Box(const Problem& p, const Sorted& in, int64_t k)
      : y(in.y.data()),
        z(in.z.data()),
        y_lo(p.box_min[k * 3 + 1]),
        y_hi(p.box_max[k * 3 + 1]),
        z_lo(p.box_min[k * 3 + 2]),
        z_hi(p.box_max[k * 3 + 2]),
        start(p.starts[k]),
        stop(std::max(p.starts[k], p.stops[k])) {}

  // Inclusive, as the Python reference; NaN is never inside. Branch-free: kept and dropped
  // candidates alternate in no predictable pattern.
  DYCO_INLINE bool inside(int64_t j) const {
    return (y[j] >= y_lo) & (y[j] <= y_hi) & (z[j] >= z_lo) & (z[j] <= z_hi);
  }
};

// y[r, col : col + N lanes] = act(b + x[r] @ w) for kRows rows; the kRows * N accumulators
// are independent FMA chains.
template <typename V, int N>
DYCO_INLINE void column_block(const Layer& l, const float* w, const float* b, const float* x,
                              float* y, int64_t stride, int64_t col, bool relu) {
  constexpr int64_t L = kLanes<V>;
  V acc[kRows][N];
  for (int n = 0; n < N; ++n)
    for (int r = 0; r < kRows; ++r) acc[r][n] = load<V>(b + col + L * n);
  for (int64_t i = 0; i < l.in; ++i) {
    V wi[N];
    for (int n = 0; n < N; ++n) wi[n] = load<V>(w + i * l.out + col + L * n);
    for (int r = 0; r < kRows; ++r) {
      // float * V broadcasts with one instruction; a V{v, ..., v} literal compiled to a chain
      // of lane inserts.
      const float xi = x[r * stride + i];
      for (int n = 0; n < N; ++n) acc[r][n] += xi * wi[n];
    }
  }
  const V zero{};
  for (int r = 0; r < kRows; ++r)
    for (int n = 0; n < N; ++n)
      store<V>(y + r * stride + col + L * n,
               relu ? (acc[r][n] < zero ? zero : acc[r][n]) : acc[r][n]);
}

// Columns [col, out) of kRows rows, scalar (widths that are no multiple of the lanes).
DYCO_INLINE void column_tail(const Layer& l, const float* w, const float* b, const float* x,
                             float* y, int64_t stride, int64_t col, bool relu) {
  for (int64_t o = col; o < l.out; ++o)
    for (int r = 0; r < kRows; ++r) {
      float acc = b[o];
      for (int64_t i = 0; i < l.in; ++i) acc += x[r * stride + i] * w[i * l.out + o];
      y[r * stride + o] = relu ? std::max(acc, 0.0f) : acc;
    }
}

// The one-output layer: a dot product per row, a vector of inputs at a time.
template <typename V>
DYCO_INLINE void dot_rows(const Layer& l, const float* w, const float* b, const float* x,
                          float* y, int64_t stride) {
  constexpr int64_t L = kLanes<V>;
  const int64_t whole = l.in - l.in % L;
  for (int r = 0; r < kRows; ++r) {
    const float* xr = x + r * stride;
    V acc{};
    for (int64_t i = 0; i < whole; i += L) acc += load<V>(xr + i) * load<V>(w + i);
    float sum = b[0];
    for (int q = 0; q < L; ++q) sum += acc[q];
    for (int64_t i = whole; i < l.in; ++i) sum += xr[i] * w[i];
    y[r * stride] = sum;
  }
}

// One layer on kRows rows of x into y: blocks of two vectors of columns, one, then scalar.
template <typename V>
DYCO_INLINE void layer_rows(const Layer& l, const float* w, const float* b, const float* x,
                            float* y, int64_t stride, bool relu) {
  constexpr int64_t L = kLanes<V>;
  if (l.out == 1 && !relu) return dot_rows<V>(l, w, b, x, y, stride);
  int64_t col = 0;
  for (; l.out - col >= 2 * L; col += 2 * L)
    column_block<V, 2>(l, w, b, x, y, stride, col, relu);
  if (l.out - col >= L) {
    column_block<V, 1>(l, w, b, x, y, stride, col, relu);
    col += L;
  }
  if (col < l.out) column_tail(l, w, b, x, y, stride, col, relu);
}

// n floats from src to dst, 8 at a time (a runtime-sized std::copy is a memmove call per row).
DYCO_INLINE void copy_floats(const float* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) store<Vec8>(dst + i, load<Vec8>(src + i));
  for (; i < n; ++i) dst[i] = src[i];
}

// The decoder inputs of candidates cand[0:n] into x: mask features (+ position relative to
// the centre).
DYCO_INLINE void gather_inputs(const Problem& p, const Sorted& in, int64_t k,
                               const int64_t* cand, int64_t n, float* x) {
  const int64_t c = p.channels;
  const float* centre = p.centre + k * 3;
  for (int64_t r = 0; r < n; ++r) {
    float* dst = x + r * p.stride;
    const int64_t j = cand[r];
    copy_floats(in.feature_rows + j * c, dst, c);
    if (p.relative) {
      dst[c] = in.x[j] - centre[0];
      dst[c + 1] = in.y[j] - centre[1];
      dst[c + 2] = in.z[j] - centre[2];
    }
  }
}

// Logits of candidates cand[0:n] (n <= kTile) under proposal k's decoder; scratch holds two
// kTile-row activation buffers. Rows past n up to a multiple of kRows are computed on stale
// buffer rows and dropped: cheaper than a single-row code path.
template <typename V>
DYCO_INLINE void decode_tile(const Problem& p, const Sorted& in, int64_t k,
                             const int64_t* cand, int64_t n, float* scratch, float* logits) {
  float* x = scratch;
  float* y = scratch + kTile * p.stride;
  gather_inputs(p, in, k, cand, n, x);
  const float* params = p.params + k * p.num_params;
  const size_t last = p.layers.size() - 1;
  for (size_t li = 0; li < p.layers.size(); ++li) {
    const Layer& l = p.layers[li];
    for (int64_t r = 0; r < n; r += kRows)
      layer_rows<V>(l, params + l.weight, params + l.bias, x + r * p.stride,
                    y + r * p.stride, p.stride, li < last);
    std::swap(x, y);
  }
  for (int64_t r = 0; r < n; ++r) logits[r] = x[r * p.stride];
}

// Candidate positions of proposal k's `count` kept rows (pass 1's count) into pos; the scan
// stops at the last kept one, so pos[filled] never writes past the proposal's slice.
DYCO_INLINE void kept_positions(const Box& box, int64_t count, int64_t* pos) {
  if (count == 0) return;
  int64_t filled = 0;
  for (int64_t j = box.start; j < box.stop; ++j) {
    pos[filled] = j;  // kept only if the count advances: no branch per candidate
    filled += box.inside(j);
    if (filled == count) return;
  }
}

// Starts loading the inputs of candidates cand[0:n]: requested one tile ahead, they arrive
// while the current tile is decoded (they are scattered over a block's ~8 MB of features).
DYCO_INLINE void prefetch_inputs(const Problem& p, const Sorted& in, const int64_t* cand,
                                 int64_t n) {
  for (int64_t r = 0; r < n; ++r) {
    const float* row = in.feature_rows + cand[r] * p.channels;
    for (int64_t c = 0; c < p.channels; c += 16) __builtin_prefetch(row + c);
    __builtin_prefetch(in.x.data() + cand[r]);
  }
}

// Proposal k's rows, ids and logits into its output slice: first the kept candidates'
// positions (in the points slice), then kTile rows at a time decoded and their positions
// turned into rows.
template <typename V>
DYCO_INLINE void decode_proposal(const Problem& p, const Sorted& in, int64_t k,
                                 const Output& out, float* scratch) {
  const int64_t first = out.offsets[k], count = out.offsets[k + 1] - first;
  int64_t* pos = out.points + first;
  kept_positions(Box(p, in, k), count, pos);
  prefetch_inputs(p, in, pos, std::min(kTile, count));
  for (int64_t t = 0; t < count; t += kTile) {
    const int64_t n = std::min(kTile, count - t);
    prefetch_inputs(p, in, pos + t + n, std::min(kTile, count - t - n));
    decode_tile<V>(p, in, k, pos + t, n, scratch, out.logits + first + t);
    for (int64_t r = t; r < t + n; ++r) pos[r] = p.order[pos[r]];
  }
  std::fill(out.ids + first, out.ids + first + count, k);
}

template <typename V>
DYCO_INLINE void decode_proposals(const Problem& p, const Sorted& in, const Output& out,
                                  int64_t begin, int64_t end) {
  // Zeroed once per task: a short tile's padding rows then hold numbers, never uninitialised
  // memory (their results are dropped).
  std::vector<float> scratch(2 * kTile * p.stride, 0.0f);
  for (int64_t k = begin; k < end; ++k) decode_proposal<V>(p, in, k, out, scratch.data());
}

void decode_portable(const Problem& p, const Sorted& in, const Output& out, int64_t begin,
                     int64_t end) {
  decode_proposals<Vec4>(p, in, out, begin, end);
}

// The same code compiled for AVX2 + FMA, chosen at run time (as subm_conv.cpp): the decode
// pass ran ~1.5x faster than the portable SSE build on the 1M-point map, and the library
// still runs on a CPU without AVX2.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2,fma"))) void decode_avx2(const Problem& p, const Sorted& in,
                                                     const Output& out, int64_t begin,
                                                     int64_t end) {
  decode_proposals<Vec8>(p, in, out, begin, end);
}
#endif

void decode_all(const Problem& p, const Sorted& in, const Output& out, int64_t k) {
  auto kernel = &decode_portable;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (dyco::simd::use_avx2()) kernel = &decode_avx2;
#endif
  at::parallel_for(0, k, 1, [&](int64_t begin, int64_t end) { kernel(p, in, out, begin, end); });
}

// Fills `in`; false when an order entry lies outside [0, rows).
bool sort_inputs(const Problem& p, Sorted& in) {
  const int64_t c = p.channels;
  for (auto* v : {&in.x, &in.y, &in.z}) v->resize(p.rows);
  in.features = torch::empty({p.rows, c}, torch::kFloat32);
  in.feature_rows = in.features.data_ptr<float>();
  float* features = in.features.data_ptr<float>();
  std::atomic<bool> ok{true};
  at::parallel_for(0, p.rows, kSortGrain, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t row = p.order[j];
      if (static_cast<uint64_t>(row) >= static_cast<uint64_t>(p.rows)) {
        ok.store(false, std::memory_order_relaxed);
        return;
      }
      if (j + kAhead < end) {  // random rows: keep several loads in flight
        const uint64_t ahead = static_cast<uint64_t>(p.order[j + kAhead]);
        if (ahead < static_cast<uint64_t>(p.rows)) {
          for (int64_t q = 0; q < c; q += 16) __builtin_prefetch(p.features + ahead * c + q);
          __builtin_prefetch(p.xyz + ahead * 3);
        }
      }
      in.x[j] = p.xyz[row * 3];
      in.y[j] = p.xyz[row * 3 + 1];
      in.z[j] = p.xyz[row * 3 + 2];
      copy_floats(p.features + row * c, features + j * c, c);
    }
  });
  return ok.load();
}

// offsets[k + 1] - offsets[k] = proposal k's kept candidates.
std::vector<int64_t> output_offsets(const Problem& p, const Sorted& in, int64_t k) {
  std::vector<int64_t> offsets(k + 1, 0);
  at::parallel_for(0, k, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Box box(p, in, i);
      int64_t count = 0;
      for (int64_t j = box.start; j < box.stop; ++j) count += box.inside(j);
      offsets[i + 1] = count;
    }
  });
  for (int64_t i = 0; i < k; ++i) offsets[i + 1] += offsets[i];
  return offsets;
}

std::vector<Layer> parse_layers(const std::vector<std::pair<int64_t, int64_t>>& sizes,
                                int64_t in_channels, int64_t num_params) {
  DYCO_CHECK(!sizes.empty(), "dynamic_mask_decode: layer_sizes is empty");
  std::vector<Layer> layers;
  int64_t offset = 0, expected_in = in_channels;
  for (const auto& [in, out] : sizes) {
    DYCO_CHECK(in == expected_in && out > 0, "dynamic_mask_decode: layer (", in, ", ", out,
                ") does not follow an input of ", expected_in, " channels");
    layers.push_back({in, out, offset, offset + in * out});
    offset += in * out + out;
    expected_in = out;
  }
  DYCO_CHECK(expected_in == 1, "dynamic_mask_decode: the last layer must have 1 output");
  DYCO_CHECK(offset == num_params, "dynamic_mask_decode: layers need ", offset,
              " parameters per proposal, params has ", num_params);
  return layers;
}

int64_t buffer_stride(const std::vector<Layer>& layers) {
  int64_t widest = 0;
  for (const Layer& l : layers) widest = std::max({widest, l.in, l.out});
  return (widest + 7) / 8 * 8;
}

void check_float(const torch::Tensor& t, const char* name, int64_t rows, int64_t cols) {
  DYCO_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32,
              "dynamic_mask_decode: ", name, " must be a float32 CPU tensor, got ",
              t.scalar_type(), " on ", t.device());
  DYCO_CHECK(t.dim() == 2 && t.size(0) == rows && (cols < 0 || t.size(1) == cols),
              "dynamic_mask_decode: ", name, " must be (", rows, ", ", cols, "), got ",
              t.sizes());
}

void check_index(const torch::Tensor& t, const char* name, int64_t rows) {
  DYCO_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kInt64 && t.dim() == 1 &&
                  t.size(0) == rows,
              "dynamic_mask_decode: ", name, " must be (", rows, ",) int64 on the CPU, got ",
              t.sizes(), " ", t.scalar_type(), " on ", t.device());
}

void check_inputs(const torch::Tensor& features, const torch::Tensor& xyz,
                  const torch::Tensor& order, const torch::Tensor& starts,
                  const torch::Tensor& stops, const torch::Tensor& box_min,
                  const torch::Tensor& box_max, const torch::Tensor& centre,
                  const torch::Tensor& params) {
  DYCO_CHECK(features.dim() == 2, "dynamic_mask_decode: features must be (N, C), got ",
              features.sizes());
  DYCO_CHECK(starts.dim() == 1, "dynamic_mask_decode: starts must be (K,), got ",
              starts.sizes());
  const int64_t n = features.size(0), k = starts.size(0);
  check_float(features, "features", n, -1);
  check_float(xyz, "xyz", n, 3);
  check_index(order, "order", n);
  check_index(starts, "starts", k);
  check_index(stops, "stops", k);
  check_float(box_min, "box_min", k, 3);
  check_float(box_max, "box_max", k, 3);
  check_float(centre, "centre", k, 3);
  check_float(params, "params", k, -1);
  const bool wants_grad = features.requires_grad() || params.requires_grad();
  DYCO_CHECK(!(wants_grad && at::GradMode::is_enabled()),
              "dynamic_mask_decode: inference only (no autograd); call it under torch.no_grad()");
}

void check_ranges(const Problem& p, int64_t k) {
  for (int64_t i = 0; i < k; ++i)
    DYCO_CHECK(p.starts[i] >= 0 && p.stops[i] >= 0 && p.starts[i] <= p.rows &&
                    p.stops[i] <= p.rows,
                "dynamic_mask_decode: candidate range ", i, " [", p.starts[i], ", ", p.stops[i],
                ") outside [0, ", p.rows, "]");
}

}  // namespace

namespace dyco {

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> dynamic_mask_decode(
    const torch::Tensor& features, const torch::Tensor& xyz, const torch::Tensor& order,
    const torch::Tensor& starts, const torch::Tensor& stops, const torch::Tensor& box_min,
    const torch::Tensor& box_max, const torch::Tensor& centre, const torch::Tensor& params,
    const std::vector<std::pair<int64_t, int64_t>>& layer_sizes, bool use_relative_position) {
  check_inputs(features, xyz, order, starts, stops, box_min, box_max, centre, params);
  const auto f = features.contiguous(), q = xyz.contiguous(), o = order.contiguous();
  const auto s = starts.contiguous(), e = stops.contiguous(), w = params.contiguous();
  const auto lo = box_min.contiguous(), hi = box_max.contiguous(), c = centre.contiguous();
  const int64_t n = f.size(0), k = s.size(0), channels = f.size(1);
  auto layers = parse_layers(layer_sizes, channels + 3 * use_relative_position, w.size(1));
  const int64_t stride = buffer_stride(layers);
  const Problem p{f.data_ptr<float>(), q.data_ptr<float>(),   o.data_ptr<int64_t>(),
                  s.data_ptr<int64_t>(), e.data_ptr<int64_t>(), lo.data_ptr<float>(),
                  hi.data_ptr<float>(),  c.data_ptr<float>(),   w.data_ptr<float>(),
                  n,                     channels,              w.size(1),
                  use_relative_position, std::move(layers),     stride};
  check_ranges(p, k);
  if (k == 0) {
    auto none = torch::empty({0}, o.options());
    return {torch::empty({0}, f.options()), none, none.clone()};
  }
  Sorted in;
  DYCO_CHECK(sort_inputs(p, in), "dynamic_mask_decode: order entries must lie in [0, ", n,
              ")");
  const std::vector<int64_t> offsets = output_offsets(p, in, k);
  auto logits = torch::empty({offsets[k]}, f.options());
  auto points = torch::empty({offsets[k]}, o.options());
  auto ids = torch::empty({offsets[k]}, o.options());
  const Output out{offsets.data(), logits.data_ptr<float>(), points.data_ptr<int64_t>(),
                   ids.data_ptr<int64_t>()};
  decode_all(p, in, out, k);
  return {logits, points, ids};
}

}  // namespace dyco
