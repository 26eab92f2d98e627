// Shared constants and helpers for the CPU (.cpp) and CUDA (.cu) kernels of dyco_ops.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define DYCO_HD __host__ __device__ __forceinline__
#else
#define DYCO_HD inline
#endif

namespace dyco {

// Grid cell edge = radius / sqrt(3) * kCellShrink: two points sharing a cell are always within
// the radius (the margin absorbs rounding), and linked points are at most 2 cells apart per axis.
constexpr double kCellShrink = 0.999;
constexpr int kNeighbourReach = 2;

DYCO_HD double cell_size(double radius) { return radius / sqrt(3.0) * kCellShrink; }

// splitmix64 finaliser: a cheap, well-mixed 64-bit hash.
DYCO_HD uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

DYCO_HD uint64_t hash4(int64_t a, int64_t b, int64_t c, int64_t d) {
  uint64_t h = mix64(static_cast<uint64_t>(a) + 0x9e3779b97f4a7c15ULL);
  h = mix64(h ^ static_cast<uint64_t>(b));
  h = mix64(h ^ static_cast<uint64_t>(c));
  return mix64(h ^ static_cast<uint64_t>(d));
}

// Smallest power of two >= 2 * n (load factor <= 0.5 for open addressing).
inline int64_t table_capacity(int64_t n) {
  int64_t cap = 16;
  while (cap < 2 * n) cap <<= 1;
  return cap;
}

// ---------------------------------------------------------------- decoder ops
// Shared by the CPU and CUDA kernels so that both round exactly like the PyTorch reference.

// Squared distance of two float64 points, summed x, y, z in that order.
DYCO_HD double sq_dist(const double* a, const double* b) {
  const double dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
  return dx * dx + dy * dy + dz * dz;
}

DYCO_HD double clamped_extent(double lo, double hi) {
  const double extent = hi - lo;
  return extent > 0.0 ? extent : 0.0;
}

// Volume of a box from its corners; inverted extents count as empty.
DYCO_HD double box_volume(const double* lo, const double* hi) {
  return clamped_extent(lo[0], hi[0]) * clamped_extent(lo[1], hi[1]) *
         clamped_extent(lo[2], hi[2]);
}

// IoU of two boxes (xmin, ymin, zmin, xmax, ymax, zmax); 0 where the union is 0.
DYCO_HD double box_iou(const double* a, const double* b) {
  double lo[3], hi[3];
  for (int d = 0; d < 3; ++d) {
    lo[d] = a[d] > b[d] ? a[d] : b[d];
    hi[d] = a[d + 3] < b[d + 3] ? a[d + 3] : b[d + 3];
  }
  const double inter = box_volume(lo, hi);
  const double uni = box_volume(a, a + 3) + box_volume(b, b + 3) - inter;
  return uni > 0.0 ? inter / uni : 0.0;
}

// Otsu level of a value in [0, 1]: min(floor(v * bins), bins - 1), in float64.
DYCO_HD int64_t otsu_level(double v, int64_t bins) {
  const int64_t level = static_cast<int64_t>(floor(v * static_cast<double>(bins)));
  return level < bins - 1 ? level : bins - 1;
}

// Otsu split of one histogram: s / bins for the split of largest between-class variance
// w0*w1*(mu0-mu1)^2 (levels < s vs >= s; ties -> smallest s), 0.5 when no split has two
// non-empty classes. Counts and level sums are exact integers; the float operations and their
// order are the reference's.
DYCO_HD double otsu_split(const int64_t* hist, int64_t bins) {
  int64_t n = 0, total = 0;
  for (int64_t l = 0; l < bins; ++l) {
    n += hist[l];
    total += hist[l] * l;
  }
  const double nf = static_cast<double>(n);
  int64_t n0 = 0, s0 = 0, best = 0;
  double best_var = 0.0;
  for (int64_t s = 1; s < bins; ++s) {
    n0 += hist[s - 1];
    s0 += hist[s - 1] * (s - 1);
    const int64_t n1 = n - n0, s1 = total - s0;
    if (n0 == 0 || n1 == 0) continue;
    const double w0 = static_cast<double>(n0) / nf, w1 = static_cast<double>(n1) / nf;
    const double diff = static_cast<double>(s0) / static_cast<double>(n0) -
                        static_cast<double>(s1) / static_cast<double>(n1);
    const double var = w0 * w1 * diff * diff;
    if (var > best_var) {  // strict: ties keep the smallest split
      best_var = var;
      best = s;
    }
  }
  return best > 0 ? static_cast<double>(best) / static_cast<double>(bins) : 0.5;
}

}  // namespace dyco
