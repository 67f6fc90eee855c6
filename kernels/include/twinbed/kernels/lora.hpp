// LoRA (Hu et al., 2021) on one linear layer: the frozen weight W (out × in) plus a trainable
// low-rank update B·A with A: rank × in and B: out × rank, scaled by s = alpha / rank.
//   forward   y  = x·Wᵀ + s·(x·Aᵀ)·Bᵀ            x: batch × in, y: batch × out, h = x·Aᵀ saved
//   backward  dB = s·dyᵀ·h,  dh = s·dy·B,  dA = dhᵀ·x,  dx = dy·W + dh·A     (W gets no gradient)
//   merge     W ← W + s·B·A      unmerge  W ← W − s·B·A   (inference without the extra GEMMs)
// All row-major fp32, sizes checked against the shape. Fusion: the low-rank term accumulates into y
// (and dh·A into dx) in place, so no batch × out temporary is formed; the rank-r GEMMs cost
// 2·batch·rank·(in + out) FLOPs forward against the base GEMM's 2·batch·in·out.
// CPU: Eigen, single-threaded, re-entrant. CUDA: cuBLAS on the Context's stream.
#pragma once

#include <cstddef>
#include <span>

#include "twinbed/kernels/common.hpp"
#if TWINBED_KERNELS_HAVE_CUDA
#include "twinbed/kernels/cuda_context.hpp"
#endif

namespace twinbed::kernels {

struct LoraShape {
  std::size_t batch = 0, in = 0, out = 0, rank = 0;
  float alpha = 1.0f;
  float scale() const { return alpha / static_cast<float>(rank); }
};

namespace cpu {
void lora_forward(const LoraShape& s, std::span<const float> x, std::span<const float> w, std::span<const float> a,
                  std::span<const float> b, std::span<float> h, std::span<float> y);
// dx may be empty (the layer is the first one): then it is not computed.
void lora_backward(const LoraShape& s, std::span<const float> x, std::span<const float> w, std::span<const float> a,
                   std::span<const float> b, std::span<const float> h, std::span<const float> dy, std::span<float> da,
                   std::span<float> db, std::span<float> dx);
void lora_merge(const LoraShape& s, std::span<float> w, std::span<const float> a, std::span<const float> b);
void lora_unmerge(const LoraShape& s, std::span<float> w, std::span<const float> a, std::span<const float> b);
}  // namespace cpu

#if TWINBED_KERNELS_HAVE_CUDA
namespace cuda {
void lora_forward(const LoraShape& s, std::span<const float> x, std::span<const float> w, std::span<const float> a,
                  std::span<const float> b, std::span<float> h, std::span<float> y, Context& ctx);
void lora_backward(const LoraShape& s, std::span<const float> x, std::span<const float> w, std::span<const float> a,
                   std::span<const float> b, std::span<const float> h, std::span<const float> dy, std::span<float> da,
                   std::span<float> db, std::span<float> dx, Context& ctx);
void lora_merge(const LoraShape& s, std::span<float> w, std::span<const float> a, std::span<const float> b,
                Context& ctx);
void lora_unmerge(const LoraShape& s, std::span<float> w, std::span<const float> a, std::span<const float> b,
                  Context& ctx);
}  // namespace cuda
#endif

}  // namespace twinbed::kernels
