// Counter-based random numbers shared by the CPU and CUDA twins, so both draw exactly the same
// number for element i under the same seed (stochastic rounding, sampling) whatever the order or
// the thread that handles i.
//
// Generator: the 32-bit "lowbias32" integer mixer (C. Wellons, https://github.com/skeeto/hash-prospector,
// README "Two round functions": shifts 16, 15, 16 and both multipliers; a bijection on 32-bit words
// with low avalanche bias) applied to (low 32 bits of i) XOR key, where key folds the 64-bit
// seed and the high 32 bits of i through the same mixer. Not cryptographic; good enough for rounding
// noise and sampling. On the CPU the mix and the conversion to [0, 1) (two multiplies, four shifts) are
// about half of the stochastic quantiser's vector instructions: what keeps it slower than nearest.
#pragma once

#include <cstdint>

#include "twinbed/kernels/common.hpp"

namespace twinbed::kernels::rng {

TWINBED_HD inline std::uint32_t mix32(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// The per-(seed, high index word) key; constant over 2^32 consecutive indices.
TWINBED_HD inline std::uint32_t key(std::uint64_t seed, std::uint64_t index) {
  const auto hi = static_cast<std::uint32_t>(index >> 32);
  // 0x9e3779b9 = 2^32/φ, the golden-ratio increment (Knuth, TAOCP vol. 3, 6.4): hi = 0 must not
  // reach the mixer's fixed point mix32(0) = 0.
  return mix32(static_cast<std::uint32_t>(seed) ^ mix32(static_cast<std::uint32_t>(seed >> 32) ^ mix32(hi + 0x9e3779b9U)));
}

TWINBED_HD inline std::uint32_t bits(std::uint32_t key_, std::uint64_t index) {
  return mix32(static_cast<std::uint32_t>(index) ^ key_);
}

// Uniform float in [0, 1): the top 24 bits of the mix times 2^-24 (exact in binary32).
TWINBED_HD inline float uniform(std::uint32_t key_, std::uint64_t index) {
  // Converted as a signed int (the value is < 2^24, so exactly): a single vector instruction on x86.
  return static_cast<float>(static_cast<std::int32_t>(bits(key_, index) >> 8)) * (1.0f / 16777216.0f);
}

}  // namespace twinbed::kernels::rng
