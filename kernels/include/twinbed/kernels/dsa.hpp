// DSA — dynamic sparse activation (seed 004, claim DSA-FLOPS): score every parameter from its
// gradient magnitude and momentum (the seed's coarse filter), keep the top fraction by that score
// (the fine adjustment: a quantile threshold for a target density), and update only the kept ones.
//
// The seed's pseudo-code ANDs each new mask into the old one, so its mask can only shrink and cannot
// hold a target density; here each refresh recomputes the mask from the scores (frozen parameters
// can come back), which is what "dynamic" needs. Masks are one byte per parameter (0 frozen,
// 1 active) for every granularity; block masks also give the per-block mask that the block-sparse
// GEMM consumes.
//
// Matrices are row-major `rows × cols` fp32. All CPU kernels are single-threaded and re-entrant;
// costs are O(n) plus, for the refreshes, an O(n) selection (see tgc.hpp, cpu::topk).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "twinbed/kernels/common.hpp"
#if TWINBED_KERNELS_HAVE_CUDA
#include "twinbed/kernels/cuda_context.hpp"
#endif

namespace twinbed::kernels {

struct SgdSpec {
  float lr = 0.01f;
  float momentum = 0.9f;      // m ← momentum·m + (g + weight_decay·p);  p ← p − lr·m
  float weight_decay = 0.0f;
};

struct AdamSpec {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // decoupled (AdamW): p ← p − lr·weight_decay·p
};

// Number of active entries a refresh keeps: round(density · count), density in [0, 1].
std::size_t dsa_active_count(std::size_t count, double density);

namespace cpu {

// score = grad_weight·|g| + (1 − grad_weight)·|m|, grad_weight in [0, 1]. All sizes equal.
void importance(std::span<const float> grad, std::span<const float> momentum, float grad_weight,
                std::span<float> score);

// Unstructured: exactly dsa_active_count(n, density) ones, at the largest scores (equal scores:
// lower index wins). Returns the number of ones.
std::size_t mask_unstructured(std::span<const float> score, double density, std::span<std::uint8_t> mask);

// Block b×b over a rows × cols matrix (edge blocks may be partial): a block's score is the mean of
// its entries; the dsa_active_count(#blocks, density) best blocks are kept (ties: lower block index,
// row-major over blocks). block_mask has ceil(rows/b)·ceil(cols/b) bytes, mask rows·cols. Returns
// the number of active elements (= density·n exactly when b divides rows and cols and density·#blocks
// is an integer).
std::size_t mask_block(std::span<const float> score, std::size_t rows, std::size_t cols, std::size_t block,
                       double density, std::span<std::uint8_t> block_mask, std::span<std::uint8_t> mask);

// N:M along each row: in every group of m consecutive columns keep the n largest scores (ties: lower
// column). cols % m == 0, 0 < n <= m. Density is n/m by construction. Returns the active count.
std::size_t mask_nm(std::span<const float> score, std::size_t rows, std::size_t cols, std::size_t n, std::size_t m,
                    std::span<std::uint8_t> mask);

// Masked SGD with momentum: for mask_i = 1 the update above; for mask_i = 0 neither p nor m changes.
void masked_sgd(std::span<float> params, std::span<const float> grads, std::span<float> momentum,
                std::span<const std::uint8_t> mask, const SgdSpec& spec);

// Masked Adam, bias-corrected with step t >= 1 (the caller's step count): for active entries
// m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; p ← p − lr·(m/(1−β1^t)) / (sqrt(v/(1−β2^t)) + eps)
// − lr·weight_decay·p. Frozen entries keep p, m and v.
void masked_adam(std::span<float> params, std::span<const float> grads, std::span<float> m, std::span<float> v,
                 std::span<const std::uint8_t> mask, const AdamSpec& spec, int step);

}  // namespace cpu

#if TWINBED_KERNELS_HAVE_CUDA
namespace cuda {
void importance(std::span<const float> grad, std::span<const float> momentum, float grad_weight,
                std::span<float> score, Context& ctx);
std::size_t mask_unstructured(std::span<const float> score, double density, std::span<std::uint8_t> mask,
                              Context& ctx);
std::size_t mask_block(std::span<const float> score, std::size_t rows, std::size_t cols, std::size_t block,
                       double density, std::span<std::uint8_t> block_mask, std::span<std::uint8_t> mask,
                       Context& ctx);
std::size_t mask_nm(std::span<const float> score, std::size_t rows, std::size_t cols, std::size_t n, std::size_t m,
                    std::span<std::uint8_t> mask, Context& ctx);
void masked_sgd(std::span<float> params, std::span<const float> grads, std::span<float> momentum,
                std::span<const std::uint8_t> mask, const SgdSpec& spec, Context& ctx);
void masked_adam(std::span<float> params, std::span<const float> grads, std::span<float> m, std::span<float> v,
                 std::span<const std::uint8_t> mask, const AdamSpec& spec, int step, Context& ctx);
}  // namespace cuda
#endif

}  // namespace twinbed::kernels
