#include "select.hpp"

#include <algorithm>
#include <functional>

#include "quant_math.hpp"
#include "simd.hpp"
#include "twinbed/kernels/rng.hpp"
#include "validate.hpp"

namespace twinbed::kernels::detail {

std::vector<std::uint32_t> sample_keys(std::span<const float> x, std::size_t samples, std::uint64_t seed) {
  const std::size_t n = x.size();
  std::vector<std::uint32_t> keys(samples);
  const std::uint32_t key = rng::key(seed, 0);
  for (std::size_t j = 0; j < samples; ++j) {
    // Stratum j is [j·n/s, (j+1)·n/s): one draw inside each keeps the sample spread over the whole
    // tensor (gradients are spatially structured) while the addresses still increase monotonically.
    const std::size_t lo = j * n / samples;
    const std::size_t hi = (j + 1) * n / samples;
    const std::size_t pick = lo + rng::bits(key, j) % (hi - lo);
    keys[j] = magnitude_key(x[pick]);
  }
  return keys;
}

namespace {

// One streaming pass: indices of all entries with key >= tkey.
TWINBED_CLONES void collect_ge(const float* x, std::size_t n, std::uint32_t tkey, std::vector<std::uint32_t>& out) {
  for_each_key_ge(x, n, tkey, [&](std::size_t i) { out.push_back(static_cast<std::uint32_t>(i)); });
}

}  // namespace

std::vector<std::uint32_t> select_topk(std::span<const float> x, std::size_t k) {
  const std::size_t n = x.size();
  std::vector<std::uint32_t> result;
  if (k == 0) return result;
  if (k == n) {
    result.resize(n);
    for (std::size_t i = 0; i < n; ++i) result[i] = static_cast<std::uint32_t>(i);
    return result;
  }
  // Step 1: a lower bound on the k-th largest key from a stratified sample (rank with a 3-sigma margin).
  std::uint32_t bound = 0;
  const std::size_t s = topk_sample_count(n);
  const std::size_t rank = topk_sample_rank(n, k, s);
  if (s < n && rank <= s) {
    std::vector<std::uint32_t> keys = sample_keys(x, s, 0x746f706bULL);
    std::nth_element(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(rank - 1), keys.end(),
                     std::greater<>());
    bound = keys[rank - 1];
  }
  // Step 2: one streaming pass collects the candidates at or above the bound, in index order.
  std::vector<std::uint32_t> cand;
  cand.reserve(std::min(n, 2 * k + 64));
  collect_ge(x.data(), n, bound, cand);
  if (cand.size() < k) {  // the sample overshot (rare): every element is a candidate
    cand.clear();
    collect_ge(x.data(), n, 0, cand);
  }
  // Step 3: the exact k-th largest key among the candidates.
  std::vector<std::uint32_t> keys(cand.size());
  for (std::size_t j = 0; j < cand.size(); ++j) keys[j] = magnitude_key(x[cand[j]]);
  std::vector<std::uint32_t> sorted = keys;
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(k - 1), sorted.end(),
                   std::greater<>());
  const std::uint32_t kth = sorted[k - 1];
  std::size_t above = 0;
  for (std::uint32_t key : keys) above += key > kth ? 1 : 0;
  // Step 4: keep everything above the k-th key and the lowest-index ties, in index order.
  std::size_t ties = k - above;
  result.reserve(k);
  for (std::size_t j = 0; j < cand.size(); ++j) {
    if (keys[j] > kth) {
      result.push_back(cand[j]);
    } else if (keys[j] == kth && ties > 0) {
      result.push_back(cand[j]);
      --ties;
    }
  }
  return result;
}

}  // namespace twinbed::kernels::detail
