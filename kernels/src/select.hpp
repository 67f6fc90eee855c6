// Exact selection of the k largest magnitudes, shared by tgc topk and the DSA masks, and the
// compaction primitive behind it and behind threshold sparsification.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace twinbed::kernels::detail {

// The k entries of x with the largest magnitude_key, ascending index; equal keys: lower index first.
// Writes idx[0..k) and, when val is not null, val[j] = x[idx[j]]. Requires k <= x.size() < 2^32.
// See tgc.hpp (cpu::topk) for the method and cost.
void select_topk(std::span<const float> x, std::size_t k, std::uint32_t* idx, float* val);
std::vector<std::uint32_t> select_topk(std::span<const float> x, std::size_t k);
// The same selection as a 0/1 byte mask over x (mask has x.size() entries), written in one pass.
void select_topk_mask(std::span<const float> x, std::size_t k, std::uint8_t* mask);

// The stratified sample of magnitude keys behind estimate_topk_threshold and the top-k filter:
// sample j is element floor(j·n/s) + (rng(seed, j) mod stratum length).
std::vector<std::uint32_t> sample_keys(std::span<const float> x, std::size_t samples, std::uint64_t seed);

// Stream compaction by magnitude: for every i in [0, n) with magnitude_key(x[i]) >= tkey, in
// increasing i, the first `cap` hits are written as idx = i and val = x[i] (idx and val may be null
// when cap is 0; val may be null alone, then only indices are written); returns the total number of
// hits (above cap when the output was truncated). The AVX2 path (chosen at run time) is branch-free:
// 8 lanes compared, packed through a 256-entry permutation table and stored whole, the output cursor
// advanced by the popcount. The baseline path walks the hit bits of an SSE2 scan.
std::size_t compact_ge(const float* x, std::size_t n, std::uint32_t tkey, std::uint32_t* idx, float* val,
                       std::size_t cap);

// The fused error-feedback form: acc = e + g elementwise; hits of acc are compacted as above, the
// written ones are stored back to e as +0 and everything else (including hits beyond cap) as acc.
// One pass: reads g and e, writes e and the hits.
std::size_t ef_compact_ge(const float* g, float* e, std::size_t n, std::uint32_t tkey, std::uint32_t* idx,
                          float* val, std::size_t cap);

}  // namespace twinbed::kernels::detail
