// What the vectorised CPU kernels (subm_conv.cpp, dynamic_decode.cpp) share: float vectors as
// GCC/Clang extensions, unaligned loads and stores, and the run-time choice of the AVX2 build.
#pragma once

#include <cstdlib>
#include <cstring>

// The vector helpers are always inlined, so the ABI note about passing AVX vectors is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

#define DYCO_INLINE inline __attribute__((always_inline))

namespace dyco::simd {

// Eight floats: one ymm register with AVX2, two xmm registers in the portable build.
typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec4 __attribute__((vector_size(16)));

template <typename V>
DYCO_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);  // unaligned load
  return v;
}

template <typename V>
DYCO_INLINE void store(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DYCO_HAS_AVX2_BUILD 1
// A kernel is compiled twice, portable and with target("avx2,fma"), and this picks one at run
// time, so a library built here still runs on a CPU without AVX2. DYCO_OPS_PORTABLE=1 forces
// the portable code (tests compare the two on an AVX2 machine).
inline bool use_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          std::getenv("DYCO_OPS_PORTABLE") == nullptr;
  return yes;
}
#endif

}  // namespace dyco::simd
