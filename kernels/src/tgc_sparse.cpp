// TGC sparsification and error feedback, CPU reference. Threshold selection and the fused
// error-feedback step are one streaming pass of branch-free compaction (select.cpp); exact top-k is
// that pass behind a sampled lower bound plus a radix select over the candidates (select.cpp).
#include <algorithm>
#include <bit>
#include <functional>
#include <stdexcept>
#include <string>

#include "quant_math.hpp"
#include "select.hpp"
#include "simd.hpp"
#include "twinbed/kernels/tgc.hpp"
#include "validate.hpp"

namespace twinbed::kernels {
namespace {

TWINBED_CLONES void accumulate_impl(const float* __restrict g, float* __restrict e, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) e[i] += g[i];
}

}  // namespace

namespace cpu {

std::size_t topk(std::span<const float> x, std::size_t k, std::span<std::uint32_t> indices, std::span<float> values) {
  detail::check_topk_args("topk", x.size(), k, indices.size(), values.size());
  detail::select_topk(x, k, indices.data(), values.data());
  return k;
}

float estimate_topk_threshold(std::span<const float> x, std::size_t k, std::size_t samples, std::uint64_t seed) {
  const std::size_t n = x.size();
  if (k == 0 || k > n)
    detail::fail("estimate_topk_threshold", "k must be in [1, n = " + std::to_string(n) + "], got " + std::to_string(k));
  if (samples == 0) detail::fail("estimate_topk_threshold", "samples must be at least 1");
  const std::size_t s = std::min(samples, n);
  std::vector<std::uint32_t> keys = detail::sample_keys(x, s, seed);
  // The k-th largest of n maps to rank ceil(k·s/n) of the sample (exact when s == n).
  std::size_t rank = (k * s + n - 1) / n;
  rank = std::clamp<std::size_t>(rank, 1, s);
  std::nth_element(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(rank - 1), keys.end(), std::greater<>());
  return std::bit_cast<float>(keys[rank - 1]);
}

std::size_t sparsify_threshold(std::span<const float> x, float threshold, std::span<std::uint32_t> indices,
                               std::span<float> values) {
  detail::check_index_range("sparsify_threshold", x.size());
  detail::check_threshold("sparsify_threshold", threshold);
  detail::require_size("sparsify_threshold", "indices", indices.size(), "values", values.size());
  return detail::compact_ge(x.data(), x.size(), detail::magnitude_key(threshold), indices.data(), values.data(),
                            indices.size());
}

void scatter_add(std::span<const std::uint32_t> indices, std::span<const float> values, std::span<float> out) {
  detail::require_size("scatter_add", "indices", indices.size(), "values", values.size());
  for (std::size_t j = 0; j < indices.size(); ++j) {
    if (indices[j] >= out.size())
      throw std::out_of_range("scatter_add: index " + std::to_string(indices[j]) + " at position " +
                              std::to_string(j) + " is outside the output of " + std::to_string(out.size()) +
                              " elements");
    out[indices[j]] += values[j];
  }
}

void ef_accumulate(std::span<const float> g, std::span<float> e) {
  detail::require_size("ef_accumulate", "g", g.size(), "e", e.size());
  accumulate_impl(g.data(), e.data(), g.size());
}

void ef_clear_sent(std::span<const std::uint32_t> indices, std::span<float> e) {
  for (std::size_t j = 0; j < indices.size(); ++j) {
    if (indices[j] >= e.size())
      throw std::out_of_range("ef_clear_sent: index " + std::to_string(indices[j]) + " is outside e of " +
                              std::to_string(e.size()) + " elements");
    e[indices[j]] = 0.0f;
  }
}

std::size_t ef_sparsify_threshold(std::span<const float> g, std::span<float> e, float threshold,
                                  std::span<std::uint32_t> indices, std::span<float> values) {
  detail::require_size("ef_sparsify_threshold", "g", g.size(), "e", e.size());
  detail::check_index_range("ef_sparsify_threshold", g.size());
  detail::check_threshold("ef_sparsify_threshold", threshold);
  detail::require_size("ef_sparsify_threshold", "indices", indices.size(), "values", values.size());
  return detail::ef_compact_ge(g.data(), e.data(), g.size(), detail::magnitude_key(threshold), indices.data(),
                               values.data(), indices.size());
}

}  // namespace cpu
}  // namespace twinbed::kernels
