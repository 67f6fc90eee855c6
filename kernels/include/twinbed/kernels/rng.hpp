// Counter-based random numbers shared by the CPU and CUDA twins, so both draw exactly the same
// number for element i under the same seed (stochastic rounding, sampling) whatever the order or
// the thread that handles i.
//
// Generator: the 32-bit "lowbias32" integer mixer (C. Wellons, hash-prospector; a bijection on 32-bit
// words with low avalanche bias) applied to (low 32 bits of i) XOR key, where key folds the 64-bit
// seed and the high 32 bits of i through the same mixer. One mix per element keeps the stochastic
// quantiser memory-bound. Not cryptographic; good enough for rounding noise and sampling.
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
  return mix32(static_cast<std::uint32_t>(seed) ^ mix32(static_cast<std::uint32_t>(seed >> 32) ^ mix32(hi + 0x9e3779b9U)));
}

TWINBED_HD inline std::uint32_t bits(std::uint32_t key_, std::uint64_t index) {
  return mix32(static_cast<std::uint32_t>(index) ^ key_);
}

// Uniform float in [0, 1): the top 24 bits of the mix times 2^-24 (exact in binary32).
TWINBED_HD inline float uniform(std::uint32_t key_, std::uint64_t index) {
  return static_cast<float>(bits(key_, index) >> 8) * (1.0f / 16777216.0f);
}

}  // namespace twinbed::kernels::rng
