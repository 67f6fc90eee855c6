// DSA, CUDA twin: element-wise kernels for the score and the masked updates (same formulas as the
// CPU, in the same order); the refreshes reuse the device top-k, so masks equal the CPU's.
#include <cmath>
#include <vector>

#include "cuda_util.cuh"
#include "quant_math.hpp"
#include "twinbed/kernels/dsa.hpp"
#include "validate.hpp"

namespace twinbed::kernels {
namespace {

using cuda_detail::grid_for;
using cuda_detail::kThreads;

#define TWINBED_GRID_STRIDE(i, n)                                                                  \
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < (n);  \
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)

__global__ void importance_kernel(const float* __restrict__ g, const float* __restrict__ m, float w,
                                  float* __restrict__ s, std::size_t n) {
  const float wm = 1.0f - w;
  TWINBED_GRID_STRIDE(i, n) s[i] = __fadd_rn(__fmul_rn(w, fabsf(g[i])), __fmul_rn(wm, fabsf(m[i])));
}

__global__ void set_ones_kernel(const std::uint32_t* __restrict__ idx, std::size_t k, std::uint8_t* __restrict__ mask) {
  TWINBED_GRID_STRIDE(j, k) mask[idx[j]] = 1;
}

// One thread per block: sums row by row, column by column, exactly as the CPU loop does.
__global__ void block_mean_kernel(const float* __restrict__ s, std::size_t rows, std::size_t cols, std::size_t b,
                                  std::size_t bc, std::size_t nblocks, float* __restrict__ means) {
  TWINBED_GRID_STRIDE(q, nblocks) {
    const std::size_t bi = q / bc, bj = q % bc;
    const std::size_t r1 = min(rows, (bi + 1) * b), c1 = min(cols, (bj + 1) * b);
    float sum = 0.0f;
    for (std::size_t r = bi * b; r < r1; ++r)
      for (std::size_t c = bj * b; c < c1; ++c) sum = __fadd_rn(sum, s[r * cols + c]);
    means[q] = sum / static_cast<float>((r1 - bi * b) * (c1 - bj * b));
  }
}

__global__ void expand_kernel(const std::uint8_t* __restrict__ bm, std::size_t rows, std::size_t cols, std::size_t b,
                              std::size_t bc, std::uint8_t* __restrict__ mask) {
  TWINBED_GRID_STRIDE(i, rows * cols) mask[i] = bm[(i / cols / b) * bc + (i % cols) / b];
}

__global__ void nm_kernel(const float* __restrict__ s, std::size_t groups, std::size_t n, std::size_t m,
                          std::uint8_t* __restrict__ mask) {
  TWINBED_GRID_STRIDE(g, groups) {
    const float* sg = s + g * m;
    for (std::size_t i = 0; i < m; ++i) {
      const std::uint32_t ki = detail::magnitude_key(sg[i]);
      std::size_t beaten_by = 0;
      for (std::size_t j = 0; j < m; ++j) {
        const std::uint32_t kj = detail::magnitude_key(sg[j]);
        beaten_by += (kj > ki || (kj == ki && j < i)) ? 1 : 0;
      }
      mask[g * m + i] = beaten_by < n ? 1 : 0;
    }
  }
}

__global__ void sgd_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                           const std::uint8_t* __restrict__ mask, std::size_t n, float lr, float mu, float wd) {
  TWINBED_GRID_STRIDE(i, n) {
    if (mask[i] == 0) continue;  // frozen: not even read back
    const float mi = __fadd_rn(__fmul_rn(mu, m[i]), __fadd_rn(g[i], __fmul_rn(wd, p[i])));
    m[i] = mi;
    p[i] = __fsub_rn(p[i], __fmul_rn(lr, mi));
  }
}

__global__ void adam_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                            float* __restrict__ v, const std::uint8_t* __restrict__ mask, std::size_t n, float lr,
                            float b1, float b2, float eps, float wd, float inv_c1, float inv_c2) {
  TWINBED_GRID_STRIDE(i, n) {
    if (mask[i] == 0) continue;
    const float gi = g[i];
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] - lr * (mi * inv_c1) / (sqrtf(vi * inv_c2) + eps) - lr * wd * p[i];
  }
}

}  // namespace

namespace cuda {

void importance(std::span<const float> grad, std::span<const float> momentum, float grad_weight, std::span<float> score,
                Context& ctx) {
  detail::require_size("importance", "grad", grad.size(), "momentum", momentum.size());
  detail::require_size("importance", "score", score.size(), "grad", grad.size());
  if (!(grad_weight >= 0.0f && grad_weight <= 1.0f))
    detail::fail("importance", "grad_weight must be in [0, 1], got " + std::to_string(grad_weight));
  if (grad.empty()) return;
  importance_kernel<<<grid_for(grad.size()), kThreads, 0, ctx.stream()>>>(grad.data(), momentum.data(), grad_weight,
                                                                         score.data(), grad.size());
  TWINBED_CUDA_CHECK_LAUNCH();
}

std::size_t mask_unstructured(std::span<const float> score, double density, std::span<std::uint8_t> mask,
                              Context& ctx) {
  detail::require_size("mask_unstructured", "mask", mask.size(), "score", score.size());
  detail::check_index_range("mask_unstructured", score.size());
  const std::size_t k = dsa_active_count(score.size(), density);
  if (!mask.empty()) TWINBED_CUDA_CHECK(cudaMemsetAsync(mask.data(), 0, mask.size(), ctx.stream()));
  if (k == 0) return 0;
  DeviceBuffer<std::uint32_t> idx(k);
  cuda_detail::select_topk(score.data(), score.size(), k, idx.data(), ctx);
  set_ones_kernel<<<grid_for(k), kThreads, 0, ctx.stream()>>>(idx.data(), k, mask.data());
  TWINBED_CUDA_CHECK_LAUNCH();
  ctx.synchronize();
  return k;
}

std::size_t mask_block(std::span<const float> score, std::size_t rows, std::size_t cols, std::size_t block,
                       double density, std::span<std::uint8_t> block_mask, std::span<std::uint8_t> mask, Context& ctx) {
  detail::require_size("mask_block", "score", score.size(), "rows·cols", rows * cols);
  detail::require_size("mask_block", "mask", mask.size(), "rows·cols", rows * cols);
  if (block == 0) detail::fail("mask_block", "block must be positive");
  const std::size_t br = (rows + block - 1) / block, bc = (cols + block - 1) / block, nb = br * bc;
  detail::require_size("mask_block", "block_mask", block_mask.size(), "ceil(rows/b)·ceil(cols/b)", nb);
  detail::check_index_range("mask_block", nb);
  const std::size_t kb = dsa_active_count(nb, density);
  if (nb == 0) return 0;
  DeviceBuffer<float> means(nb);
  block_mean_kernel<<<grid_for(nb), kThreads, 0, ctx.stream()>>>(score.data(), rows, cols, block, bc, nb, means.data());
  TWINBED_CUDA_CHECK_LAUNCH();
  TWINBED_CUDA_CHECK(cudaMemsetAsync(block_mask.data(), 0, nb, ctx.stream()));
  if (kb > 0) {
    DeviceBuffer<std::uint32_t> idx(kb);
    cuda_detail::select_topk(means.data(), nb, kb, idx.data(), ctx);
    set_ones_kernel<<<grid_for(kb), kThreads, 0, ctx.stream()>>>(idx.data(), kb, block_mask.data());
    TWINBED_CUDA_CHECK_LAUNCH();
  }
  expand_kernel<<<grid_for(rows * cols), kThreads, 0, ctx.stream()>>>(block_mask.data(), rows, cols, block, bc,
                                                                      mask.data());
  TWINBED_CUDA_CHECK_LAUNCH();
  // The active count from the (small) block mask on the host.
  std::vector<std::uint8_t> host(nb);
  TWINBED_CUDA_CHECK(cudaMemcpyAsync(host.data(), block_mask.data(), nb, cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.synchronize();
  std::size_t active = 0;
  for (std::size_t q = 0; q < nb; ++q)
    if (host[q]) active += (std::min(rows, (q / bc + 1) * block) - (q / bc) * block) *
                           (std::min(cols, (q % bc + 1) * block) - (q % bc) * block);
  return active;
}

std::size_t mask_nm(std::span<const float> score, std::size_t rows, std::size_t cols, std::size_t n, std::size_t m,
                    std::span<std::uint8_t> mask, Context& ctx) {
  detail::require_size("mask_nm", "score", score.size(), "rows·cols", rows * cols);
  detail::require_size("mask_nm", "mask", mask.size(), "rows·cols", rows * cols);
  if (m == 0 || n == 0 || n > m) detail::fail("mask_nm", "need 0 < n <= m, got " + std::to_string(n) + ":" + std::to_string(m));
  if (cols % m != 0)
    detail::fail("mask_nm", "cols = " + std::to_string(cols) + " is not a multiple of m = " + std::to_string(m));
  const std::size_t groups = rows * cols / m;
  if (groups > 0) {
    nm_kernel<<<grid_for(groups), kThreads, 0, ctx.stream()>>>(score.data(), groups, n, m, mask.data());
    TWINBED_CUDA_CHECK_LAUNCH();
  }
  return groups * n;
}

void masked_sgd(std::span<float> params, std::span<const float> grads, std::span<float> momentum,
                std::span<const std::uint8_t> mask, const SgdSpec& spec, Context& ctx) {
  detail::require_size("masked_sgd", "grads", grads.size(), "params", params.size());
  detail::require_size("masked_sgd", "momentum", momentum.size(), "params", params.size());
  detail::require_size("masked_sgd", "mask", mask.size(), "params", params.size());
  if (params.empty()) return;
  sgd_kernel<<<grid_for(params.size()), kThreads, 0, ctx.stream()>>>(params.data(), grads.data(), momentum.data(),
                                                                     mask.data(), params.size(), spec.lr,
                                                                     spec.momentum, spec.weight_decay);
  TWINBED_CUDA_CHECK_LAUNCH();
}

void masked_adam(std::span<float> params, std::span<const float> grads, std::span<float> m, std::span<float> v,
                 std::span<const std::uint8_t> mask, const AdamSpec& spec, int step, Context& ctx) {
  detail::require_size("masked_adam", "grads", grads.size(), "params", params.size());
  detail::require_size("masked_adam", "m", m.size(), "params", params.size());
  detail::require_size("masked_adam", "v", v.size(), "params", params.size());
  detail::require_size("masked_adam", "mask", mask.size(), "params", params.size());
  if (step < 1) detail::fail("masked_adam", "step must be >= 1, got " + std::to_string(step));
  if (params.empty()) return;
  const auto inv_c1 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(spec.beta1), step)));
  const auto inv_c2 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(spec.beta2), step)));
  adam_kernel<<<grid_for(params.size()), kThreads, 0, ctx.stream()>>>(params.data(), grads.data(), m.data(), v.data(),
                                                                      mask.data(), params.size(), spec.lr, spec.beta1,
                                                                      spec.beta2, spec.eps, spec.weight_decay, inv_c1,
                                                                      inv_c2);
  TWINBED_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace twinbed::kernels
