// CPU-only helpers for the streaming kernels.
//
// TWINBED_CLONES compiles a hot function twice on x86-64 (x86-64-v3 = AVX2/FMA/BMI2 and the
// baseline) and picks one at load time (GCC/Clang target_clones, an ifunc), so the binary stays
// portable while the loops run 8 lanes wide where the CPU allows. FP contraction is off for the whole
// library, so the AVX2 clone rounds exactly as the baseline one and as the CUDA twin.
// TWINBED_CLONES_AVX512 adds an x86-64-v4 (AVX-512) clone, for compute-bound loops that measured
// faster 16 lanes wide (the quantisers: 1.7-3x in L1), and an x86-64-v2 one, the first level where GCC
// vectorises std::floor (roundps). It is not the default: DSA's masked updates measured 1.3-1.6x
// slower in an AVX-512 clone, and the bandwidth-bound kernels gain nothing.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__x86_64__) && defined(__SSE2__)
#include <emmintrin.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define TWINBED_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define TWINBED_CLONES_AVX512 \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "arch=x86-64-v2", "default")))
#else
#define TWINBED_CLONES
#define TWINBED_CLONES_AVX512
#endif

#define TWINBED_INLINE [[gnu::always_inline]] inline

namespace twinbed::kernels::detail {

// Calls emit(i) for every i in [0, n) with magnitude_key(x[i]) >= tkey, in increasing i. The scan
// tests 16 elements per step with SSE2 and walks only the set bits, so its cost is one read of x
// plus a term proportional to the number of hits.
template <class Emit>
TWINBED_INLINE void for_each_key_ge(const float* x, std::size_t n, std::uint32_t tkey, Emit&& emit) {
  std::size_t i = 0;
#if defined(__x86_64__) && defined(__SSE2__)
  const __m128i absmask = _mm_set1_epi32(0x7fffffff);
  // key >= tkey  <=>  key > tkey - 1 as signed int32 (keys are < 2^31; tkey = 0 gives -1).
  const __m128i thr = _mm_set1_epi32(static_cast<int>(tkey) - 1);
  for (; i + 16 <= n; i += 16) {
    const auto* p = reinterpret_cast<const __m128i*>(x + i);
    const __m128i a0 = _mm_and_si128(_mm_loadu_si128(p + 0), absmask);
    const __m128i a1 = _mm_and_si128(_mm_loadu_si128(p + 1), absmask);
    const __m128i a2 = _mm_and_si128(_mm_loadu_si128(p + 2), absmask);
    const __m128i a3 = _mm_and_si128(_mm_loadu_si128(p + 3), absmask);
    unsigned m = static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(a0, thr)))) |
                 static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(a1, thr)))) << 4 |
                 static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(a2, thr)))) << 8 |
                 static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(a3, thr)))) << 12;
    while (m != 0) {
      emit(i + static_cast<std::size_t>(__builtin_ctz(m)));
      m &= m - 1;
    }
  }
#endif
  for (; i < n; ++i) {
    std::uint32_t u;
    __builtin_memcpy(&u, x + i, sizeof u);
    if ((u & 0x7fffffffU) >= tkey) emit(i);
  }
}

}  // namespace twinbed::kernels::detail
