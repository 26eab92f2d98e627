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

}  // namespace dyco
