// LoRA, CUDA twin: the same GEMM sequence as the CPU through cuBLAS on the Context's stream; the
// low-rank terms accumulate into y and dx with beta = 1 (no batch × out temporary).
#include "cuda_util.cuh"
#include "twinbed/kernels/lora.hpp"
#include "validate.hpp"

namespace twinbed::kernels::cuda {
namespace {
using cuda_detail::gemm_rm;

void check_wab(const char* k, const LoraShape& s, std::size_t w, std::size_t a, std::size_t b) {
  detail::check_lora_shape(k, s);
  detail::require_size(k, "w", w, "out·in", s.out * s.in);
  detail::require_size(k, "a", a, "rank·in", s.rank * s.in);
  detail::require_size(k, "b", b, "out·rank", s.out * s.rank);
}
}  // namespace

void lora_forward(const LoraShape& s, std::span<const float> x, std::span<const float> w, std::span<const float> a,
                  std::span<const float> b, std::span<float> h, std::span<float> y, Context& ctx) {
  check_wab("lora_forward", s, w.size(), a.size(), b.size());
  detail::require_size("lora_forward", "x", x.size(), "batch·in", s.batch * s.in);
  detail::require_size("lora_forward", "h", h.size(), "batch·rank", s.batch * s.rank);
  detail::require_size("lora_forward", "y", y.size(), "batch·out", s.batch * s.out);
  gemm_rm(ctx, false, true, s.batch, s.rank, s.in, 1.0f, x.data(), s.in, a.data(), s.in, 0.0f, h.data(), s.rank);
  gemm_rm(ctx, false, true, s.batch, s.out, s.in, 1.0f, x.data(), s.in, w.data(), s.in, 0.0f, y.data(), s.out);
  gemm_rm(ctx, false, true, s.batch, s.out, s.rank, s.scale(), h.data(), s.rank, b.data(), s.rank, 1.0f, y.data(), s.out);
}

void lora_backward(const LoraShape& s, std::span<const float> x, std::span<const float> w, std::span<const float> a,
                   std::span<const float> b, std::span<const float> h, std::span<const float> dy, std::span<float> da,
                   std::span<float> db, std::span<float> dx, Context& ctx) {
  check_wab("lora_backward", s, w.size(), a.size(), b.size());
  detail::require_size("lora_backward", "x", x.size(), "batch·in", s.batch * s.in);
  detail::require_size("lora_backward", "h", h.size(), "batch·rank", s.batch * s.rank);
  detail::require_size("lora_backward", "dy", dy.size(), "batch·out", s.batch * s.out);
  detail::require_size("lora_backward", "da", da.size(), "rank·in", s.rank * s.in);
  detail::require_size("lora_backward", "db", db.size(), "out·rank", s.out * s.rank);
  if (!dx.empty()) detail::require_size("lora_backward", "dx", dx.size(), "batch·in", s.batch * s.in);
  DeviceBuffer<float> dh(s.batch * s.rank);
  gemm_rm(ctx, true, false, s.out, s.rank, s.batch, s.scale(), dy.data(), s.out, h.data(), s.rank, 0.0f, db.data(), s.rank);
  gemm_rm(ctx, false, false, s.batch, s.rank, s.out, s.scale(), dy.data(), s.out, b.data(), s.rank, 0.0f, dh.data(), s.rank);
  gemm_rm(ctx, true, false, s.rank, s.in, s.batch, 1.0f, dh.data(), s.rank, x.data(), s.in, 0.0f, da.data(), s.in);
  if (!dx.empty()) {
    gemm_rm(ctx, false, false, s.batch, s.in, s.out, 1.0f, dy.data(), s.out, w.data(), s.in, 0.0f, dx.data(), s.in);
    gemm_rm(ctx, false, false, s.batch, s.in, s.rank, 1.0f, dh.data(), s.rank, a.data(), s.in, 1.0f, dx.data(), s.in);
  }
  ctx.synchronize();  // dh is freed on return
}

void lora_merge(const LoraShape& s, std::span<float> w, std::span<const float> a, std::span<const float> b, Context& ctx) {
  check_wab("lora_merge", s, w.size(), a.size(), b.size());
  gemm_rm(ctx, false, false, s.out, s.in, s.rank, s.scale(), b.data(), s.rank, a.data(), s.in, 1.0f, w.data(), s.in);
}

void lora_unmerge(const LoraShape& s, std::span<float> w, std::span<const float> a, std::span<const float> b,
                  Context& ctx) {
  check_wab("lora_unmerge", s, w.size(), a.size(), b.size());
  gemm_rm(ctx, false, false, s.out, s.in, s.rank, -s.scale(), b.data(), s.rank, a.data(), s.in, 1.0f, w.data(), s.in);
}

}  // namespace twinbed::kernels::cuda
