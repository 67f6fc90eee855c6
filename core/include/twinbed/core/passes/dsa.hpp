// DSA — dynamic sparse activation (seed 004, claim DSA-FLOPS) as a Plan pass: every `refresh_every`
// iterations each target matrix scores its parameters from gradient magnitude and momentum and keeps
// the top `density` of them (kernels/dsa.hpp); the rest are frozen until the next refresh.
//
//   {"pass": "dsa", "density": 0.3, "granularity": "block", "block_size": 32, "refresh_every": 100,
//    "mode": "freeze", "targets": ["qkv", "proj", "fc1", "fc2"]}
//
// density in (0, 1] (required; 1 is the neutral setting: the plan is left unchanged); granularity
// "unstructured" (default), "block" (block_size × block_size blocks, default 32) or "nm" (n of every m
// consecutive weights, "n"/"m" default 2:4, density then n/m); refresh_every >= 1 (default 100);
// mode "freeze" (default: the seed's text — frozen parameters are not updated) or "prune" (the seed's
// pseudo-code — frozen weights are also zeroed, so the GEMMs that read them are sparse too); targets:
// layer matrices among qkv, proj, fc1, fc2, expert_fc1, expert_fc2 (default: those the model has).
//
// What it changes, per program, for each target tensor (density d < 1):
//  - Its weight-gradient GEMMs compute only the active entries of dW: FLOPs × d. Time follows the
//    granularity (OpCost::sparsity; sim/compute_model.hpp): unstructured — none saved (dense hardware
//    computes dW whole and the mask drops entries); block — zero blocks skipped; n:m — none saved: the
//    mask is on the GEMM's output, and sparse tensor cores accelerate a sparse *input* operand only.
//  - mode "prune": its forward (and recomputed forward) GEMMs read a weight that is d non-zero: FLOPs × d;
//    unstructured saves no time, block skips blocks, 2:4 runs on the sparse tensor cores (device.hpp's
//    sparse_speedup); its data-gradient GEMMs (dY·W) too, except that a 2:4 mask of W is not 2:4 along
//    the dimension that GEMM reduces over, so n:m saves FLOPs there but no time.
//  - The optimizer step becomes a masked step (kernel MaskedStep): the optimizer state of frozen
//    entries is neither read nor written: optimizer_step_cost's bytes per updated parameter with
//    the targets counted × d, plus the 1-byte mask of every target parameter it reads.
//  - A mask refresh (kernel MaskRefresh) before the optimizer step: importance = |g| and momentum read
//    (gradient bytes + 4), the score written and read by the selection (4 + 2·4), the mask written (1):
//    gradient bytes (of the tensor's own dtype) + 17 bytes per target parameter of the rank's optimizer shard, divided by
//    refresh_every (its cost amortised over the iterations between refreshes). Its fp32 score buffer
//    is allocated around it (Workspace; the peak memory of a refresh iteration).
//  - The masks: 1 byte per target parameter of the rank, for the whole run (TechniqueState).
//  - Gradient reduction, activations and everything else are unchanged: frozen entries still have
//    gradients computed by the data-gradient chain and reduced densely (combine with tgc to compress).
// FLOPs cut and time cut are different figures: compare Plan::executed_flops and the simulated step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/plan.hpp"

namespace twinbed {

struct DsaParams {
  enum class Granularity { Unstructured, Block, NM };
  enum class Mode { Freeze, Prune };
  double density = 1;
  Granularity granularity = Granularity::Unstructured;
  int block_size = 32;
  int n = 2, m = 4;
  int refresh_every = 100;
  Mode mode = Mode::Freeze;
  std::vector<ParamKind> targets;  // empty: every layer matrix the model has
  bool operator==(const DsaParams&) const = default;
};

DsaParams dsa_params_from_json(const nlohmann::json& entry, const std::string& path);
nlohmann::json dsa_params_to_json(const DsaParams& p);
void apply_dsa(Plan& plan, const DsaParams& p);

}  // namespace twinbed
