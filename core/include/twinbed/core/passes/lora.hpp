// LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") as a Plan pass.
//
//   {"pass": "lora", "rank": 8, "alpha": 16, "targets": ["qkv", "proj"]}
//
// rank r >= 0 (0 is the neutral setting: the plan is left unchanged — no adapter, nothing frozen);
// alpha > 0 (the output scale α/r: no cost of its own, kept for the real backends); targets: the layer
// matrices that get an adapter, of qkv, proj, fc1, fc2 (a mixture-of-experts model has no fc1/fc2;
// default ["qkv"], the fused query/key/value projection that holds the paper's W_q and W_v).
//
// What it changes in every program (r > 0):
//  - Every base parameter tensor is frozen (ParamTensor::trainable = false): embeddings, norms and all
//    layer matrices, as in the paper (only the adapters train).
//  - Frozen parameters lose their weight-gradient ops (every BackwardWeight compute op but the
//    optimizer step: the *_wgrad GEMMs and the embedding's gradient scatter), their share of the
//    data-parallel gradient reduction (every final-gradient bucket is dropped, and under ZeRO-3 the
//    per-layer gradient reduce-scatter of a layer without adapters), their gradients and their
//    optimizer state (model_state_of: frozen tensors keep parameters only). The LayerNorm backward ops
//    stay: one fused kernel computes the input gradient whether γ and β train or not.
//  - Each adapted matrix W (d×k; on a rank of a tensor-parallel group the shard Megatron gives it) gains
//    two trainable tensors: A (r×k) and B (d×r), r·(d+k) parameters in all. For a column-parallel W
//    (qkv, fc1) A is replicated over tp and B sharded with W's rows; for a row-parallel W (proj, fc2)
//    A is sharded with W's columns and B replicated. With m tokens, the GEMMs (kernel Lora), per
//    micro-batch:
//      forward, after W's:      x·Aᵀ (m, r, k), then ·Bᵀ (m, d, r) added into the output
//      backward, after W's data gradient:  dB = dYᵀ·(x·Aᵀ) (d, r, m); d(x·Aᵀ) = dY·B (m, r, d);
//                               dA = d(x·Aᵀ)ᵀ·x (r, k, m); dX += d(x·Aᵀ)·A (m, k, r)
//      and the forward pair again where W's forward is recomputed.
//    Without full recomputation, x·Aᵀ (m·r elements) is kept per adapted matrix and micro-batch with
//    the layer's activations. Under tensor parallelism the replicated factor's gradient is a partial
//    sum on each rank: one tp all-reduce of all of them per iteration, after the backward.
//  - The adapters' gradients are reduced in new data-parallel buckets (gradient_buckets, the builder's
//    rule), ready when the last micro-batch's adapter weight-gradient GEMMs of their layer have run;
//    ZeRO 1-2 all-gather the updated adapter parameters after the step (with overlap_param_gather, at
//    the start, each adapter's first forward GEMM waiting), not the frozen base's; under ZeRO-3 a layer's
//    per-micro-batch reduce-scatter carries its adapters' gradients only.
//  - Model-state allocations and the optimizer step follow the new trainable set.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/model.hpp"
#include "twinbed/core/plan.hpp"

namespace twinbed {

struct LoraParams {
  int rank = 8;
  double alpha = 16;
  std::vector<ParamKind> targets{ParamKind::Qkv};
  bool operator==(const LoraParams&) const = default;
};

// Strict parsing of an entry (keys: pass, rank, alpha, targets); ConfigError naming path + "/key".
LoraParams lora_params_from_json(const nlohmann::json& entry, const std::string& path);
nlohmann::json lora_params_to_json(const LoraParams& p);

// Rewrites every program as above. Throws ConfigError("/targets/<i>") for a target the model has no
// such matrix for.
void apply_lora(Plan& plan, const LoraParams& p);

// Trainable parameters of the whole model under LoRA: Σ over layers and targets of r·(d+k) with W's
// full (unsharded) shape. rank 0: the model's parameter count (nothing frozen).
std::int64_t lora_trainable_parameters(const TransformerModel& model, const LoraParams& p);

}  // namespace twinbed
