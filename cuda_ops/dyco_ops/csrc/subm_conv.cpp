// Output-stationary submanifold 3x3x3 sparse convolution on the CPU (inference only).
//
// Each output row walks its 27 neighbour slots, and for each present neighbour j at offset k
// adds features[j] @ weight[k] into an accumulator that lives in registers; the row is written
// once. No column matrix (the gather-GEMM's 27 x Cin copy per row) and no scatter (the
// per-offset path's index_add); the weights (27 x Cin x Cout floats) stay in L1/L2.
#include "subm_conv.h"

#include "check.h"
#include "simd.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace {

constexpr int64_t kOffsets = 27;
constexpr int64_t kGrain = 64;  // rows per parallel task: the table slice and outputs fit L1

// A fixed-width column block of Vec8s compiles to a few registers.
using dyco::simd::Vec8;

DYCO_INLINE Vec8 load8(const float* p) { return dyco::simd::load<Vec8>(p); }

// (Vec8{} + v would add 0.0f first: not an identity for -0.0f, so the compiler keeps it.)
DYCO_INLINE Vec8 broadcast8(float v) { return Vec8{v, v, v, v, v, v, v, v}; }

template <typename Index>
struct Args {
  const float* features;
  const Index* table;
  const float* weight;
  const float* bias;  // nullptr: none
  float* out;
  int64_t rows, cin, cout;
};

// A row's present neighbours: input row and weight offset (k * Cin * Cout) of each.
struct Neighbours {
  int64_t row[kOffsets];
  int64_t weight[kOffsets];
  int64_t count = 0;
};

// Compacts row i's table entries without branches (an absent slot, marked by `rows`, is
// written and then overwritten), so the 27 present/absent tests cost no mispredictions.
// Returns true when an entry lies outside [0, rows].
template <typename Index>
DYCO_INLINE bool gather_neighbours(const Args<Index>& a, int64_t i, Neighbours& nb) {
  const Index* slots = a.table + i * kOffsets;
  const uint64_t rows = static_cast<uint64_t>(a.rows);
  bool bad = false;
  nb.count = 0;
  for (int64_t k = 0; k < kOffsets; ++k) {
    const int64_t j = slots[k];
    nb.row[nb.count] = j;
    nb.weight[nb.count] = k * a.cin * a.cout;
    nb.count += static_cast<uint64_t>(j) < rows;
    bad |= static_cast<uint64_t>(j) > rows;
  }
  return bad;
}

// Output columns [col, col + 8 N) of row i. S independent accumulator sets (input channels
// c, c + 1, ... c + S - 1 go to different sets) keep N * S >= ~6 FMA chains in flight: with
// one set a 16-column block would wait on the FMA latency at every input channel.
template <int N, int S, typename Index>
DYCO_INLINE void column_block(const Args<Index>& a, const Neighbours& nb, int64_t i,
                              int64_t col) {
  Vec8 acc[S][N];
  for (int s = 0; s < S; ++s)
    for (int n = 0; n < N; ++n) acc[s][n] = Vec8{};
  const int64_t cin = a.cin, cout = a.cout, whole = cin - cin % S;
  for (int64_t e = 0; e < nb.count; ++e) {
    const float* f = a.features + nb.row[e] * cin;
    const float* w = a.weight + nb.weight[e] + col;
    int64_t c = 0;
    for (; c < whole; c += S)
      for (int s = 0; s < S; ++s) {
        const Vec8 x = broadcast8(f[c + s]);
        for (int n = 0; n < N; ++n) acc[s][n] += x * load8(w + (c + s) * cout + 8 * n);
      }
    for (; c < cin; ++c) {
      const Vec8 x = broadcast8(f[c]);
      for (int n = 0; n < N; ++n) acc[0][n] += x * load8(w + c * cout + 8 * n);
    }
  }
  for (int n = 0; n < N; ++n) {
    Vec8 sum = a.bias ? load8(a.bias + col + 8 * n) : Vec8{};
    for (int s = 0; s < S; ++s) sum += acc[s][n];
    dyco::simd::store(a.out + i * cout + col + 8 * n, sum);
  }
}

// The last cout - col < 8 columns of row i, scalar.
template <typename Index>
DYCO_INLINE void column_tail(const Args<Index>& a, const Neighbours& nb, int64_t i,
                             int64_t col) {
  const int64_t width = a.cout - col;
  float acc[8];
  for (int64_t q = 0; q < width; ++q) acc[q] = a.bias ? a.bias[col + q] : 0.0f;
  for (int64_t e = 0; e < nb.count; ++e) {
    const float* f = a.features + nb.row[e] * a.cin;
    const float* w = a.weight + nb.weight[e] + col;
    for (int64_t c = 0; c < a.cin; ++c, w += a.cout)
      for (int64_t q = 0; q < width; ++q) acc[q] += f[c] * w[q];
  }
  for (int64_t q = 0; q < width; ++q) a.out[i * a.cout + col + q] = acc[q];
}

// All output columns of row i in blocks of 64, 48, 32, 16 and 8, then a tail: the model's
// widths (16..112) are sums of at most two blocks.
template <typename Index>
DYCO_INLINE void row_columns(const Args<Index>& a, const Neighbours& nb, int64_t i) {
  int64_t col = 0;
  for (; a.cout - col >= 64; col += 64) column_block<8, 1>(a, nb, i, col);
  if (a.cout - col >= 48) {
    column_block<6, 1>(a, nb, i, col);
    col += 48;
  }
  if (a.cout - col >= 32) {
    column_block<4, 2>(a, nb, i, col);
    col += 32;
  }
  if (a.cout - col >= 16) {
    column_block<2, 4>(a, nb, i, col);
    col += 16;
  }
  if (a.cout - col >= 8) {
    column_block<1, 4>(a, nb, i, col);
    col += 8;
  }
  if (col < a.cout) column_tail(a, nb, i, col);
}

// Rows [begin, end); true when a table entry was out of range.
template <typename Index>
DYCO_INLINE bool rows(const Args<Index>& a, int64_t begin, int64_t end) {
  bool bad = false;
  Neighbours nb;
  for (int64_t i = begin; i < end; ++i) {
    bad |= gather_neighbours(a, i, nb);
    row_columns(a, nb, i);
  }
  return bad;
}

template <typename Index>
bool rows_portable(const Args<Index>& a, int64_t begin, int64_t end) {
  return rows(a, begin, end);
}

// The same code compiled for AVX2 + FMA, chosen at run time: the build keeps its portable
// flags, so a library built here still loads and runs on a CPU without AVX2.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
template <typename Index>
__attribute__((target("avx2,fma"))) bool rows_avx2(const Args<Index>& a, int64_t begin,
                                                   int64_t end) {
  return rows(a, begin, end);
}
#endif

template <typename Index>
bool run(const Args<Index>& a) {
  auto kernel = &rows_portable<Index>;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (dyco::simd::use_avx2()) kernel = &rows_avx2<Index>;
#endif
  std::atomic<bool> bad{false};
  at::parallel_for(0, a.rows, kGrain, [&](int64_t begin, int64_t end) {
    if (kernel(a, begin, end)) bad.store(true, std::memory_order_relaxed);
  });
  return bad.load();
}

void check_inputs(const torch::Tensor& features, const torch::Tensor& table,
                  const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias) {
  DYCO_CHECK(features.device().is_cpu() && table.device().is_cpu() && weight.device().is_cpu(),
              "subm_conv3d: CPU tensors expected");
  DYCO_CHECK(features.dim() == 2 && features.scalar_type() == torch::kFloat32,
              "subm_conv3d: features must be (V, Cin) float32, got ", features.sizes(), " ",
              features.scalar_type());
  const int64_t v = features.size(0), cin = features.size(1);
  DYCO_CHECK(table.dim() == 2 && table.size(0) == v && table.size(1) == kOffsets,
              "subm_conv3d: table must be (V, 27) = (", v, ", 27), got ", table.sizes());
  DYCO_CHECK(table.scalar_type() == torch::kInt64 || table.scalar_type() == torch::kInt32,
              "subm_conv3d: table must be int64 or int32, got ", table.scalar_type());
  DYCO_CHECK(weight.dim() == 3 && weight.size(0) == kOffsets && weight.size(1) == cin &&
                  weight.scalar_type() == torch::kFloat32,
              "subm_conv3d: weight must be (27, Cin, Cout) float32 with Cin = ", cin, ", got ",
              weight.sizes(), " ", weight.scalar_type());
  if (bias.has_value())
    DYCO_CHECK(bias->device().is_cpu() && bias->dim() == 1 && bias->size(0) == weight.size(2) &&
                    bias->scalar_type() == torch::kFloat32,
                "subm_conv3d: bias must be (Cout,) = (", weight.size(2), ",) float32, got ",
                bias->sizes(), " ", bias->scalar_type());
  const bool wants_grad = features.requires_grad() || weight.requires_grad() ||
                          (bias.has_value() && bias->requires_grad());
  DYCO_CHECK(!(wants_grad && at::GradMode::is_enabled()),
              "subm_conv3d: inference only (no autograd); call it under torch.no_grad()");
}

}  // namespace

namespace dyco {

torch::Tensor subm_conv3d(const torch::Tensor& features, const torch::Tensor& table,
                          const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias) {
  check_inputs(features, table, weight, bias);
  const auto f = features.contiguous(), w = weight.contiguous(), t = table.contiguous();
  const auto b = bias.has_value() ? bias->contiguous() : torch::Tensor();
  const int64_t v = f.size(0), cin = f.size(1), cout = w.size(2);
  auto out = torch::empty({v, cout}, f.options());
  if (v == 0 || cout == 0) return out;
  const float* bias_ptr = b.defined() ? b.data_ptr<float>() : nullptr;
  bool bad;
  if (t.scalar_type() == torch::kInt64)
    bad = run(Args<int64_t>{f.data_ptr<float>(), t.data_ptr<int64_t>(), w.data_ptr<float>(),
                            bias_ptr, out.data_ptr<float>(), v, cin, cout});
  else
    bad = run(Args<int32_t>{f.data_ptr<float>(), t.data_ptr<int32_t>(), w.data_ptr<float>(),
                            bias_ptr, out.data_ptr<float>(), v, cin, cout});
  DYCO_CHECK(!bad, "subm_conv3d: table entries must lie in [0, V] (V = ", v,
              " marks no neighbour)");
  return out;
}

}  // namespace dyco
