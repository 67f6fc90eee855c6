// Element-level quantisation arithmetic shared by the CPU reference and the CUDA twin, so that both
// round identically: every multiply and add is rounded on its own (no FMA), and floor is the exact
// IEEE operation on both.
#pragma once

#include <cmath>
#include <cstdint>

#include "twinbed/kernels/common.hpp"

namespace twinbed::kernels::detail {

TWINBED_HD inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
TWINBED_HD inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

TWINBED_HD constexpr int qmax_of(int bits) { return (1 << (bits - 1)) - 1; }

// floor(t) for |t| < 2^31, exact on both sides: one rounding instruction (roundps/vrndscaleps, which
// GCC emits for std::floor once -fno-trapping-math is on) or cvt.rmi on the GPU, then a conversion
// that is exact because the value is already an integer.
TWINBED_HD inline int floor_to_int(float t) {
#if defined(__CUDA_ARCH__)
  return __float2int_rd(t);
#else
  return static_cast<int>(std::floor(t));
#endif
}

// Code in [0, 2·qmax] for x under the block's inverse scale; u = 0.5 (nearest) or U[0,1).
TWINBED_HD inline std::uint32_t quant_code(float x, float inv_scale, int qmax, float u) {
  int q = floor_to_int(add_rn(mul_rn(x, inv_scale), u));
  q = q < -qmax ? -qmax : q;
  q = q > qmax ? qmax : q;
  return static_cast<std::uint32_t>(q + qmax);
}

TWINBED_HD inline float dequant_value(std::uint32_t code, int qmax, float scale) {
  return mul_rn(static_cast<float>(static_cast<int>(code) - qmax), scale);
}

// Block scale and its inverse from the block's max |x| (both IEEE-rounded divisions).
TWINBED_HD inline float scale_of(float amax, int qmax) { return amax / static_cast<float>(qmax); }
TWINBED_HD inline float inv_scale_of(float amax, int qmax) {
  return amax > 0.0f ? static_cast<float>(qmax) / amax : 0.0f;
}

// |x| as an ordered key: the IEEE bits with the sign cleared (monotone in |x| for non-NaN).
TWINBED_HD inline std::uint32_t magnitude_key(float x) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::uint32_t>(__float_as_uint(x)) & 0x7fffffffU;
#else
  std::uint32_t u;
  __builtin_memcpy(&u, &x, sizeof u);
  return u & 0x7fffffffU;
#endif
}

}  // namespace twinbed::kernels::detail
