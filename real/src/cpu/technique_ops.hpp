// Internal to real/src/cpu: the technique passes' ops of one rank's program executed for real with the
// project's kernels (kernels/), on buffers that stand for the rank's tensors, with the state the
// techniques keep across iterations. Free of MPI: the CPU backend (cpu_backend.cpp) moves the payloads.
//
// Which ops these are, and how a TGC exchange hangs together, is found by technique_plan.hpp (shared
// with the CUDA backend). What runs, by role — the data are synthetic (a deterministic pseudo-random
// gradient per rank and tensor, fixed over iterations: the backend has no model to differentiate), the
// work is the kernels' own:
//   Compress     TGC (core/passes/tgc.hpp): the rank's gradient of `elements` floats plus its
//                error-feedback residual encoded by real::TgcCodec into its payload; with adaptive
//                width the rule (choose_bits, its default tolerance) runs first, and the payload keeps
//                the width the plan assumed (adaptive_bits), which sized the buffers after it. Top-k payloads are
//                what the next collective all-gathers. A quantised (dense) payload is reduced hop by hop:
//                the collective runs over the payload's decoded values with every transfer quantised
//                (quantised_reduction(): decode, add, encode at each hop, the bytes on the wire the
//                quantised chunks), so the plan's "tgc.requantize" op — the hops' work, which the
//                simulator charges after the transfer — has nothing left to do here.
//   Decompress   top-k: every rank's payload that arrived decoded and summed into the gradient; a
//                quantised reduction: its decoded result written to the gradient.
//                Verification of the first payloads each exchange delivered, kept until the iteration is
//                over (verify_pending(): its scratch is not the iteration's memory): every rank re-encodes every member's
//                payload from its gradient; all-gathered payloads must equal it float by float, and a
//                quantised all-reduce's result (a reduce-scatter's: this rank's block of it) must lie
//                within the hops' quantisation error of the exact sum of the members' contributions
//                (2(R−1) encodings of at most half a step each, R−1 for a reduce-scatter, the
//                step of a block whose amax is at most the members' summed amax over the two payload
//                blocks it can overlap). checks() counts the floats compared and those outside; Error
//                when any is.
//   MaskRefresh  DSA: importance of 1/every of the target parameters (kernels' importance) and their
//                masks selected at the density and granularity (unstructured, b×b blocks, 2:4), a
//                different slice each iteration: the whole mask is refreshed every `every` iterations.
//   MaskedStep   masked Adam (kernels' masked_adam) of the `elements` target parameters under the masks
//                the refreshes wrote; the step's other parameters stream their bytes as before.
//   LossScale    the overflow check and unscale of `elements` gradients (fp32 here: twice fp16's bytes).
//   Precision    max|g| and Σg² (the crest factor the adaptive rule reads) over 1/every of `elements`
//                gradients.
//   GEMMs with Block or TwoFour sparsity (DSA's prune mode and block masks): the kernels' block-sparse
//                (BSR) and 2:4 GEMMs, Y = X·Wᵀ with X m×k and W n×k masked at the op's density.
// Everything else (dense and Unstructured GEMMs, LoRA's adapter GEMMs, memory-bound ops) runs on the
// compute pool (cpu_compute.hpp). Technique kernels run at the plan's sizes whatever compute_scale
// (their sizes are those of the collectives they feed); sparse GEMMs scale m like dense ones.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "cpu_compute.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/kernels/payload.hpp"
#include "twinbed/real/cpu_backend.hpp"

namespace twinbed::real::detail {

// ---- the work of each kernel op, shared with `calibrate` (which times it) ---------------------------
// Gradient-like values (a centred sum of four uniforms, scale 1e-2): the same (seed, i), the same value.
void fill_gradient_like(std::span<float> x, std::uint64_t seed);
// A hop of a quantised reduction: sum = decode(codes, scales) + add; out = encode(sum).
void requantize(std::span<const std::uint8_t> codes, std::span<const float> scales, std::span<const float> add,
                const kernels::QuantSpec& spec, std::span<float> sum, std::span<std::uint8_t> out_codes,
                std::span<float> out_scales);
// DSA's refresh of one slice: importance ½|g| + ½|m| and the masks at `density` by granularity
// (Block: b×b blocks of the slice seen as (len/b)×b; TwoFour: 2 of every 4; else unstructured).
void refresh_masks(OpCost::Sparsity granularity, std::size_t block, double density, std::span<const float> grad,
                   std::span<const float> momentum, std::span<float> score, std::span<std::uint8_t> mask,
                   std::vector<std::uint8_t>& block_mask);
// GradScaler's unscale by its initial scale 2^16 with the overflow check; Error on inf or NaN.
void unscale_checked(std::span<const float> in, std::span<float> out);
// max|g| / rms(g): the adaptive precision rule's statistic; 0 for an all-zero g.
float crest_factor(std::span<const float> g);

class TechniqueOps {
 public:
  // The technique ops of `rank`'s program. Sizes only: allocate() makes the buffers.
  TechniqueOps(const Plan& plan, int rank, double compute_scale);
  ~TechniqueOps();
  TechniqueOps(TechniqueOps&&) noexcept;
  TechniqueOps& operator=(TechniqueOps&&) noexcept;

  // Bytes of the buffers allocate() makes (for the backend's memory budget).
  std::int64_t bytes() const;
  void allocate();

  // Whether compute op i runs here rather than on the pool.
  bool runs(std::uint32_t op) const;
  // Runs compute op i (runs(i) must hold). Returns work left for the pool (the dense part of a masked
  // optimizer step), or nullopt.
  std::optional<ScaledCompute> run(std::uint32_t op);
  // FLOPs op i executes (for its span).
  double flops(std::uint32_t op) const;

  // Collective op i carries a TGC payload: its input before it starts, its output after it ends (the
  // backend copies them in and out of the collective's buffers). Empty spans for other collectives.
  std::span<const float> collective_input(std::uint32_t op) const;
  std::span<float> collective_output(std::uint32_t op);
  // Collective op i reduces quantised payloads hop by hop: the reduction runs over `elements` fp32 values
  // with every transfer quantised at `spec` (schedule_executor.hpp's wire codec); its input and output
  // above are then those fp32 values, not the payload. nullopt for other collectives.
  struct QuantisedReduction {
    std::int64_t elements = 0;
    kernels::QuantSpec spec;
  };
  std::optional<QuantisedReduction> quantised_reduction(std::uint32_t op) const;

  // One iteration done (slices of amortised refreshes advance).
  void next_iteration();
  // Verifies the exchanges whose first payloads arrived since the last call (see Decompress above);
  // Error when a float is wrong.
  void verify_pending();
  const PayloadCheck& checks() const;  // this rank's, so far

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace twinbed::real::detail
