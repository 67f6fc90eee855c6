// DSA, CPU reference. The masked updates are branch-free blends (compute the update for every
// element, keep it only where the mask is set, as a bitwise select) so that they vectorise; the
// refreshes reuse the exact top-k selection of select.cpp.
#include "twinbed/kernels/dsa.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <string>

#include "quant_math.hpp"
#include "select.hpp"
#include "simd.hpp"
#include "validate.hpp"

namespace twinbed::kernels {

std::size_t dsa_active_count(std::size_t count, double density) {
  if (!(density >= 0.0 && density <= 1.0))
    detail::fail("dsa_active_count", "density must be in [0, 1], got " + std::to_string(density));
  return static_cast<std::size_t>(std::llround(density * static_cast<double>(count)));
}

namespace {

// sel ? a : b on the bit patterns, sel all-ones or zero: a blend GCC vectorises (a ternary on floats
// beside a byte mask it keeps as a branch, and the loop scalar).
TWINBED_INLINE float blend(std::uint32_t sel, float a, float b) {
  return std::bit_cast<float>((std::bit_cast<std::uint32_t>(a) & sel) | (std::bit_cast<std::uint32_t>(b) & ~sel));
}

TWINBED_CLONES void importance_impl(const float* __restrict g, const float* __restrict m, float w,
                                    float* __restrict s, std::size_t n) {
  const float wm = 1.0f - w;
  for (std::size_t i = 0; i < n; ++i) s[i] = w * std::fabs(g[i]) + wm * std::fabs(m[i]);
}

TWINBED_CLONES void sgd_impl(float* __restrict p, const float* __restrict g, float* __restrict m,
                             const std::uint8_t* __restrict mask, std::size_t n, float lr, float mu, float wd) {
  for (std::size_t i = 0; i < n; ++i) {
    const float p0 = p[i];
    const float m0 = m[i];
    const float mi = mu * m0 + (g[i] + wd * p0);
    const float pi = p0 - lr * mi;
    const std::uint32_t on = 0U - static_cast<std::uint32_t>(mask[i] != 0);
    m[i] = blend(on, mi, m0);
    p[i] = blend(on, pi, p0);
  }
}

TWINBED_CLONES void adam_impl(float* __restrict p, const float* __restrict g, float* __restrict m,
                              float* __restrict v, const std::uint8_t* __restrict mask, std::size_t n, float lr,
                              float b1, float b2, float eps, float wd, float inv_c1, float inv_c2) {
  for (std::size_t i = 0; i < n; ++i) {
    const float p0 = p[i];
    const float m0 = m[i];
    const float v0 = v[i];
    const float gi = g[i];
    const float mi = b1 * m0 + (1.0f - b1) * gi;
    const float vi = b2 * v0 + (1.0f - b2) * gi * gi;
    const float pi = p0 - lr * (mi * inv_c1) / (std::sqrt(vi * inv_c2) + eps) - lr * wd * p0;
    const std::uint32_t on = 0U - static_cast<std::uint32_t>(mask[i] != 0);
    m[i] = blend(on, mi, m0);
    v[i] = blend(on, vi, v0);
    p[i] = blend(on, pi, p0);
  }
}

void check_matrix(const char* kernel, std::size_t size, std::size_t rows, std::size_t cols) {
  detail::require_size(kernel, "score", size, "rows·cols", rows * cols);
}

}  // namespace

namespace cpu {

void importance(std::span<const float> grad, std::span<const float> momentum, float grad_weight,
                std::span<float> score) {
  detail::require_size("importance", "grad", grad.size(), "momentum", momentum.size());
  detail::require_size("importance", "score", score.size(), "grad", grad.size());
  if (!(grad_weight >= 0.0f && grad_weight <= 1.0f))
    detail::fail("importance", "grad_weight must be in [0, 1], got " + std::to_string(grad_weight));
  importance_impl(grad.data(), momentum.data(), grad_weight, score.data(), grad.size());
}

std::size_t mask_unstructured(std::span<const float> score, double density, std::span<std::uint8_t> mask) {
  detail::require_size("mask_unstructured", "mask", mask.size(), "score", score.size());
  detail::check_index_range("mask_unstructured", score.size());
  const std::size_t k = dsa_active_count(score.size(), density);
  detail::select_topk_mask(score, k, mask.data());
  return k;
}

std::size_t mask_block(std::span<const float> score, std::size_t rows, std::size_t cols, std::size_t block,
                       double density, std::span<std::uint8_t> block_mask, std::span<std::uint8_t> mask) {
  check_matrix("mask_block", score.size(), rows, cols);
  detail::require_size("mask_block", "mask", mask.size(), "rows·cols", rows * cols);
  if (block == 0) detail::fail("mask_block", "block must be positive");
  const std::size_t br = (rows + block - 1) / block;
  const std::size_t bc = (cols + block - 1) / block;
  detail::require_size("mask_block", "block_mask", block_mask.size(), "ceil(rows/b)·ceil(cols/b)", br * bc);
  detail::check_index_range("mask_block", br * bc);
  // Step 1: mean score per block (sums row by row, so the matrix is read once, in order).
  std::vector<float> sums(br * bc, 0.0f);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) sums[(r / block) * bc + c / block] += score[r * cols + c];
  for (std::size_t i = 0; i < br; ++i)
    for (std::size_t j = 0; j < bc; ++j) {
      const std::size_t h = std::min(block, rows - i * block);
      const std::size_t w = std::min(block, cols - j * block);
      sums[i * bc + j] /= static_cast<float>(h * w);
    }
  // Step 2: the best blocks.
  std::fill(block_mask.begin(), block_mask.end(), std::uint8_t{0});
  for (std::uint32_t b : detail::select_topk(sums, dsa_active_count(br * bc, density))) block_mask[b] = 1;
  // Step 3: expand to elements.
  std::size_t active = 0;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) {
      const std::uint8_t on = block_mask[(r / block) * bc + c / block];
      mask[r * cols + c] = on;
      active += on;
    }
  return active;
}

std::size_t mask_nm(std::span<const float> score, std::size_t rows, std::size_t cols, std::size_t n, std::size_t m,
                    std::span<std::uint8_t> mask) {
  check_matrix("mask_nm", score.size(), rows, cols);
  detail::require_size("mask_nm", "mask", mask.size(), "rows·cols", rows * cols);
  if (m == 0 || n == 0 || n > m) detail::fail("mask_nm", "need 0 < n <= m, got " + std::to_string(n) + ":" + std::to_string(m));
  if (cols % m != 0)
    detail::fail("mask_nm", "cols = " + std::to_string(cols) + " is not a multiple of m = " + std::to_string(m));
  // In each group an entry is kept when fewer than n entries of the group beat it (larger key, or
  // equal key at a lower column): O(m²) per group, which is what a 2:4 or 4:8 pattern needs.
  for (std::size_t g = 0; g < rows * cols; g += m) {
    for (std::size_t i = 0; i < m; ++i) {
      const std::uint32_t ki = detail::magnitude_key(score[g + i]);
      std::size_t beaten_by = 0;
      for (std::size_t j = 0; j < m; ++j) {
        const std::uint32_t kj = detail::magnitude_key(score[g + j]);
        beaten_by += (kj > ki || (kj == ki && j < i)) ? 1 : 0;
      }
      mask[g + i] = beaten_by < n ? 1 : 0;
    }
  }
  return rows * cols / m * n;
}

void masked_sgd(std::span<float> params, std::span<const float> grads, std::span<float> momentum,
                std::span<const std::uint8_t> mask, const SgdSpec& spec) {
  detail::require_size("masked_sgd", "grads", grads.size(), "params", params.size());
  detail::require_size("masked_sgd", "momentum", momentum.size(), "params", params.size());
  detail::require_size("masked_sgd", "mask", mask.size(), "params", params.size());
  sgd_impl(params.data(), grads.data(), momentum.data(), mask.data(), params.size(), spec.lr, spec.momentum,
           spec.weight_decay);
}

void masked_adam(std::span<float> params, std::span<const float> grads, std::span<float> m, std::span<float> v,
                 std::span<const std::uint8_t> mask, const AdamSpec& spec, int step) {
  detail::require_size("masked_adam", "grads", grads.size(), "params", params.size());
  detail::require_size("masked_adam", "m", m.size(), "params", params.size());
  detail::require_size("masked_adam", "v", v.size(), "params", params.size());
  detail::require_size("masked_adam", "mask", mask.size(), "params", params.size());
  if (step < 1) detail::fail("masked_adam", "step must be >= 1, got " + std::to_string(step));
  const auto inv_c1 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(spec.beta1), step)));
  const auto inv_c2 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(spec.beta2), step)));
  adam_impl(params.data(), grads.data(), m.data(), v.data(), mask.data(), params.size(), spec.lr, spec.beta1,
            spec.beta2, spec.eps, spec.weight_decay, inv_c1, inv_c2);
}

}  // namespace cpu
}  // namespace twinbed::kernels
