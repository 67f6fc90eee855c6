// Exact selection of the k largest magnitudes, shared by tgc topk and the DSA masks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace twinbed::kernels::detail {

// Indices (ascending) of the k entries of x with the largest magnitude_key; equal keys: lower index
// first. Requires k <= x.size() < 2^32. See tgc.hpp (cpu::topk) for the method and cost.
std::vector<std::uint32_t> select_topk(std::span<const float> x, std::size_t k);

// The stratified sample of magnitude keys behind estimate_topk_threshold and the top-k filter:
// sample j is element floor(j·n/s) + (rng(seed, j) mod stratum length).
std::vector<std::uint32_t> sample_keys(std::span<const float> x, std::size_t samples, std::uint64_t seed);

}  // namespace twinbed::kernels::detail
