// Mixed precision per layer and op class as a Plan pass; with policy "adaptive", HPAS (seed article
// 004: per-layer precision chosen from gradient statistics, re-decided every N iterations).
//
//   {"pass": "precision", "policy": "static", "dtype": "bf16",
//    "overrides": [{"ops": "gemm", "layers": [0, 3], "dtype": "fp32"}], "loss_scaling": "dynamic"}
//   {"pass": "precision", "policy": "adaptive", "low": "fp16", "high": "fp32", "low_fraction": 0.7,
//    "redecide_every": 100, "loss_scaling": "dynamic"}
//
// Dtypes are parse_dtype's names (fp32, tf32, bf16, fp16, fp8). Every op gets a target dtype from its
// layer (PlanOp::layer; -1 for the embedding, the head and everything outside the layers) and its class
// (OpCost::Kind: "gemm", "attention", "memory_bound"):
//  - policy "static" (the default): `dtype` (absent: the model's) for every op, then `overrides` in
//    order, later ones winning: "ops" one of gemm, attention, memory_bound, all; "layers" [first, last]
//    inclusive global layer indices (absent: every layer and layer -1; with it, layer -1 is never
//    matched); "dtype".
//  - policy "adaptive": a fraction `low_fraction` (required, in [0, 1]) of the transformer layers runs
//    in `low` (default fp16), the rest and layer -1 in `high` (default fp32), every op class alike.
//    Layer l is low iff floor((l+1)·f) > floor(l·f): floor(layers·f) low layers spread evenly. The
//    simulator cannot see gradient statistics, so this split is a stated input, not an outcome; the
//    pass charges the rule's own work instead (below), every `redecide_every` (default 100, >= 1)
//    iterations, amortised per iteration.
//  - "loss_scaling": "dynamic" (default) or "none".
// The neutral setting {"pass": "precision"} (static, the model's dtype, no overrides) leaves a plan in
// the model's dtype unchanged (==).
//
// A layer's "dtype" below is the target of its gemm ops: weights are stored in the dtype their GEMMs
// read, and autocast-style element-wise ops keep their inputs' type, so an override of memory_bound or
// attention ops alone changes those ops' costs and nothing else.
//
// What it changes in every program:
//  - Compute ops of the model (OpCost::kernel None, the optimizer step excepted: it stays FP32) and
//    LoRA adapter GEMMs (kernel Lora) take their target dtype: bytes from the model's own op lists
//    regenerated in that dtype (same name; layout op context and recomputation), or matmul_cost with
//    the same shape for matmuls outside the lists. FLOPs and every other field are kept; bytes another
//    pass changed are scaled by the same ratio. Other technique kernels, and memory-bound ops outside
//    the model's lists, are left as they are. FP8 here is the dtype of the ops the pass puts in it,
//    not Transformer Engine's recipe a model of dtype fp8 runs (model.hpp): the pass adds none of its
//    quantisation passes. A plan of an fp8 model, whose ops are not of one dtype, is a ConfigError.
//  - Parameter tensors take their layer's dtype (embedding and final norm: layer -1's; LoRA factors
//    their base's), and the model-state allocations and the optimizer step follow (model_state_of:
//    2+2+12 B per 16-bit parameter with its FP32 master copy, 4+4+8 B per FP32 one).
//  - Activation allocations of layer l (TensorClass::Activation) scale by activation_bytes_per_layer in
//    the layer's new dtype over its old one (the layout's micro-batch, tp, sequence parallelism and
//    recomputation; a layer left out of it by recompute_layers, without); the recomputation workspace
//    ("l<l>.recompute", Workspace) by the same formula's (no recomputation − recomputation) difference.
//    Rounded to the nearest byte.
//  - Activation collectives (tp, ep, the embedding's tp reduction) and Send/Recv scale with the element
//    size of their layer's activation dtype (activation_dtype; layer -1 for pipeline messages).
//  - Gradient and parameter collectives (TensorClass Grads / Weights) with a parameter set, and
//    communication buffers with one (ZeRO-3), are recomputed from their slices: Σ elements × the
//    gradient (or parameter) bytes per element of each tensor's dtype. A gradient collective whose
//    bytes are not its trainable slices' (compressed by an earlier pass) is a ConfigError: precision
//    must be listed before tgc.
//  - Loss scaling (dynamic, and only when the pass puts some op in fp16 that was not before it): one
//    memory-bound op "precision.loss_scale" (kernel LossScale) right before the optimizer step: the
//    overflow check and unscale of the fp16 gradients the rank holds at the step (trainable fp16
//    parameters, ZeRO-sharded as the optimizer step's): reads and writes each once, 2·elements·2
//    bytes. Programs holding no fp16 trainable parameter get none.
//  - Adaptive: one memory-bound op "precision.statistics" (kernel Precision) right before the
//    optimizer step (after the loss scaling): per-layer gradient variance, one read of every trainable
//    gradient the rank holds at the step, bytes = Σ elements × gradient bytes / redecide_every.
//    The step depends on both; both depend on what the step depended on.
// Nothing else. A program with a planned arena (zrdf) cannot be edited: list precision before zrdf.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/model.hpp"
#include "twinbed/core/plan.hpp"

namespace twinbed {

enum class PrecisionPolicy { Static, Adaptive };
// Which compute ops an override acts on: OpCost::Kind Gemm, Attention, MemoryBound, or all of them.
enum class PrecisionOps { Gemm, Attention, MemoryBound, All };
enum class LossScaling { Dynamic, None };

struct PrecisionOverride {
  PrecisionOps ops = PrecisionOps::All;
  std::optional<std::int64_t> first_layer, last_layer;  // both or neither; neither: every layer and layer -1
  DType dtype = DType::FP32;
  bool operator==(const PrecisionOverride&) const = default;
};

struct PrecisionParams {
  PrecisionPolicy policy = PrecisionPolicy::Static;
  std::optional<DType> dtype;                  // static; absent: the model's dtype
  std::vector<PrecisionOverride> overrides;    // static
  DType low = DType::FP16;                     // adaptive
  DType high = DType::FP32;                    // adaptive
  double low_fraction = 0;                     // adaptive
  std::int64_t redecide_every = 100;           // adaptive
  LossScaling loss_scaling = LossScaling::Dynamic;
  bool operator==(const PrecisionParams&) const = default;
};

// Strict parsing of an entry (keys: pass, policy, loss_scaling; with "static" dtype, overrides; with
// "adaptive" low, high, low_fraction, redecide_every); ConfigError naming path + "/key".
PrecisionParams precision_params_from_json(const nlohmann::json& entry, const std::string& path);
// Every key but a static `dtype` left to the model is written; parsing it back gives equal params.
nlohmann::json precision_params_to_json(const PrecisionParams& p);

// The dtype the pass gives compute ops of class `kind` in `layer` (-1: outside the layers) of `model`.
DType precision_target(const PrecisionParams& p, const TransformerModel& model, std::int64_t layer, OpCost::Kind kind);

// Rewrites every program as above. Throws ConfigError("/overrides/<i>/layers") for a layer range
// beyond the model, ConfigError("") when a gradient collective was already compressed, and
// InvalidArgument for a program with a planned arena.
void apply_precision(Plan& plan, const PrecisionParams& p);

}  // namespace twinbed
