// A GPT-style transformer and what it costs: parameters, FLOPs and bytes per op, activation and
// model-state memory. Formulas follow ../shared/REFERENCE.md (Narayanan et al. SC'21; Korthikanti
// et al. MLSys'23; Rajbhandari et al. SC'20); tests check the counts here against them.
//
// Conventions used throughout:
//   l layers, h hidden, a heads, f FFN hidden, s sequence length, V vocabulary, E experts, k top-k,
//   b micro-batch (sequences), t tensor-parallel degree.
//   FLOPs are doubles (a multiply-add is 2 FLOPs); byte counts are `Bytes`; sizes are int64.
//   Every function is pure: no state, thread-safe, nothing is printed or thrown except InvalidArgument
//   (a caller's contract broken) and ConfigError (from the parse/validate functions).
//
// No JSON is touched by the model code; the parse functions at the end of this header (implemented in
// model.cpp's json section) turn a JSON object into a TransformerModel strictly.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "twinbed/core/units.hpp"

namespace twinbed {

// ---- element types -------------------------------------------------------------------------------

enum class DType { FP32, TF32, BF16, FP16, FP8 };

// 4, 4 (TF32 is stored as FP32), 2, 2, 1.
Bytes bytes_per_element(DType t);
// "fp32", "tf32", "bf16", "fp16", "fp8".
std::string dtype_name(DType t);
// Inverse of dtype_name; throws UnknownName listing the names otherwise.
DType parse_dtype(const std::string& name);
std::vector<std::string> dtype_names();
// The dtype a model of `model_dtype` keeps its activations in and runs everything but its transformer
// layers' linear GEMMs in: its own, except FP8. FP8 training is Transformer Engine's recipe (NVIDIA
// Transformer Engine, transformer_engine/pytorch/module/linear.py and layernorm_linear.py; Megatron-LM's
// TE layer spec): the QKV, projection, FC1 and FC2 GEMMs (and the experts') read FP8 inputs and weights
// and write BF16; LayerNorm, attention, the activation function, the residual adds, the embedding, the
// output layer and the loss run in BF16, and activations, pipeline messages and tensor-parallel
// collectives carry BF16. So activation_dtype(FP8) is BF16.
DType activation_dtype(DType model_dtype);

// How Transformer Engine scales a tensor into FP8 (a model of dtype fp8; the config states it):
//   delayed — each tensor's scale from the amax history of earlier steps (TE's DelayedScaling, the
//             default of TE 1.x and of NeMo's 2024 recipes): the cast is one pass, and a norm whose
//             output an FP8 GEMM reads writes FP8 directly;
//   current — each tensor's scale from its own amax, taken just before the cast (TE's
//             Float8CurrentScaling, Megatron-Bridge's "fp8-cs" recipes): the quantiser first reads the
//             tensor for its amax (Float8CurrentScalingQuantizer::quantize_impl, nvte_compute_amax, then
//             an all-reduce of the amax over the tensor-parallel group where a sequence-parallel shard is
//             cast before its gather: the plan's tp_amax_allreduce ops, plan_builder.cpp), then casts; a
//             norm writes its output in BF16 with its amax and a quantise pass casts it
//             (pytorch/csrc/extensions/normalization.cpp, FUSED_NORM_AMAX_FP8).
enum class Fp8Recipe { Delayed, Current };
// "delayed", "current"; parse throws UnknownName listing them.
std::string fp8_recipe_name(Fp8Recipe r);
Fp8Recipe parse_fp8_recipe(const std::string& name);
std::vector<std::string> fp8_recipe_names();

// Activation recomputation (Korthikanti et al.): none; selective (the attention core — QKᵀ, softmax,
// dropout, ·V — is recomputed, its s²-sized activations are not stored); full (each layer stores only
// its input and is recomputed whole before its backward pass).
enum class Recompute { None, Selective, Full };
// "none", "selective", "full"; parse throws UnknownName listing them.
std::string recompute_name(Recompute r);
Recompute parse_recompute(const std::string& name);
std::vector<std::string> recompute_names();

// How the framework being modelled implements attention (the config states it; the default is what
// Megatron-LM's GPT runs with its fused kernels on, the model of Narayanan et al. and Korthikanti et al.):
//   unfused — plain PyTorch: QKᵀ batched GEMM, then scale, causal mask, softmax and dropout as four
//             memory-bound passes over the s²-sized scores, then ·V; the softmax output, dropout mask
//             and dropout output stay for backward.
//   fused   — Megatron's FusedScaleMaskSoftmax: scale, mask and softmax in one pass, dropout another;
//             the GEMMs and what is stored as unfused.
//   flash   — FlashAttention (Dao et al. 2022; FlashAttention-2, Dao 2023): one kernel per pass that keeps
//             the scores on chip; nothing s²-sized is stored or moved; causal blocks above the diagonal
//             are skipped; the backward recomputes the scores (5 matmuls against the forward's 2). The
//             newest generation the device runs (FlashAttention-2 on Ampere, FlashAttention-3 on Hopper).
//   flash1, flash2, flash3 — the same, by a named generation of the kernel, whose rate differs
//             (sim/compute_model.hpp): FlashAttention (and kernels of its algorithm, such as the Triton
//             one MPT's attn_impl "triton" runs), FlashAttention-2, FlashAttention-3 (Hopper only).
//   cudnn   — the same algorithm in cuDNN's fused attention: Transformer Engine's FusedAttention, which
//             TE picks over FlashAttention on Hopper "for performance reasons" (get_attention_backend in
//             transformer_engine/pytorch/attention.py), so what Megatron-LM and NeMo with TE run there.
enum class AttentionImpl { Unfused, Fused, Flash, Flash1, Flash2, Flash3, Cudnn };
// "unfused", "fused", "flash", "flash1", "flash2", "flash3", "cudnn"; parse throws UnknownName listing them.
std::string attention_name(AttentionImpl a);
// One kernel a pass that keeps the scores on chip: any of flash, flash1-3, cudnn.
bool is_flash(AttentionImpl a);
// Which such kernel, for its rate: a named one, or the device's newest FlashAttention.
enum class FlashKernel { Newest, Flash1, Flash2, Flash3, Cudnn };
inline constexpr std::size_t kFlashKernels = 5;
FlashKernel flash_kernel(AttentionImpl a);
// "FlashAttention", "FlashAttention-2", "cuDNN attention", ...: for messages.
std::string flash_kernel_title(FlashKernel k);

// How the framework computes the loss over this rank's b·s × V/t logits (the config states it; the
// default is Megatron-LM's):
//   megatron — vocab_parallel_cross_entropy over output.float() (megatron/mpu/cross_entropy.py and the
//              GPT model's loss): in FP32, a pass each to cast, take the row maxima, subtract them, exp,
//              sum and divide (the softmax kept for backward); backward multiplies it in place and casts
//              the gradient back.
//   pytorch  — torch.nn.functional.cross_entropy under autocast, whose log_softmax runs in FP32: cast,
//              log_softmax (read, write); backward: nll_loss's zero-filled FP32 gradient, log_softmax's
//              backward (reads it and the output, writes), cast back.
//   fused    — one kernel each way over the logits in their own dtype, as flash-attn's Triton
//              cross-entropy (flash_attn/ops/triton/cross_entropy.py; llm-foundry's default loss_fn
//              "fused_crossentropy"): forward reads them and keeps each row's log-sum-exp; backward reads
//              them again and writes the gradient.
// Casts are skipped when the model is FP32.
enum class LossImpl { Megatron, Pytorch, Fused };
// "megatron", "pytorch", "fused"; parse throws UnknownName listing them.
std::string loss_name(LossImpl l);
LossImpl parse_loss(const std::string& name);
std::vector<std::string> loss_names();

// How the framework rotates the queries and keys (Positions::Rope) after the QKV GEMM, and their
// gradients in backward (the config states it; unset, fused_elementwise picks fused or megatron):
//   fused    — one kernel each for the queries and the keys, reading and writing the tensor
//              (Transformer Engine's FusedRoPEFunc; Megatron-LM's apply_rope_fusion, NeMo's recipes)
//   megatron — Megatron-LM's _apply_rotary_pos_emb_bshd in eager PyTorch
//              (megatron/core/models/common/embeddings/rope_utils.py): t·cos, the rotation's negated half
//              and cat, its ·sin, the sum and the closing cat
//   fms      — IBM's foundation-model-stack, RotaryEmbedding.adjusted_qk in eager PyTorch
//              (fms/modules/positions.py): the tensor to FP32, a broadcast product with each position's
//              2×2 rotation matrices (twice the tensor's elements, FP32), the sum over their columns, the
//              cast back; autograd's backward the same four passes in reverse
// core/src/model.cpp's rope() counts each one's bytes.
enum class RopeImpl { Fused, Megatron, Fms };
// "fused", "megatron", "fms"; parse throws UnknownName listing them.
std::string rope_name(RopeImpl r);
RopeImpl parse_rope(const std::string& name);
std::vector<std::string> rope_names();
AttentionImpl parse_attention(const std::string& name);
std::vector<std::string> attention_names();

// The FFN's activation: gelu — FC1 (h → f), GeLU, FC2 (f → h), GPT's; swiglu — FC1 computes the gate
// and the up projection at once (h → 2f, Megatron-LM's --swiglu), SiLU(gate)·up, FC2 (f → h), Llama's
// and DeepSeek's (Shazeer 2020, arXiv:2002.05202).
enum class FfnActivation { Gelu, Swiglu };
// "gelu", "swiglu"; parse throws UnknownName listing them.
std::string activation_name(FfnActivation a);
FfnActivation parse_activation(const std::string& name);
std::vector<std::string> activation_names();

// Where the model's positions come from: learned — a table of s×h position embeddings added to the
// token embeddings (GPT-2/3's, OPT's, MPT's); rope — rotary position embeddings (Su et al. 2021,
// RoFormer, arXiv:2104.09864), each layer's queries and keys rotated by their position after the QKV
// GEMM and their gradients rotated back in backward, no parameters (Llama's, and NeMo's Llama recipes);
// alibi — ALiBi (Press et al. 2022, arXiv:2108.12409), a fixed per-head bias linear in the query-key
// distance added to the attention scores, no parameters and no gradient (BLOOM's).
enum class Positions { Learned, Rope, Alibi };
// "learned", "rope", "alibi"; parse throws UnknownName listing them.
std::string positions_name(Positions p);
Positions parse_positions(const std::string& name);
std::vector<std::string> positions_names();

// The normalisation before attention, before the FFN and after the last layer: layernorm — LayerNorm
// (Ba et al. 2016, arXiv:1607.06450), γ and β of h each (GPT's, OPT's, BLOOM's, MPT's); rmsnorm —
// RMSNorm (Zhang and Sennrich 2019, arXiv:1910.07467), the root mean square alone and γ (Llama's). As
// one kernel each (Apex's and Transformer Engine's) they cost the same passes but for β; how PyTorch
// runs them unfused is TransformerModel::fused_elementwise's business.
enum class Norm { LayerNorm, RmsNorm };
// "layernorm", "rmsnorm"; parse throws UnknownName listing them.
std::string norm_name(Norm n);
Norm parse_norm(const std::string& name);
std::vector<std::string> norm_names();

// ---- the model -----------------------------------------------------------------------------------

struct TransformerModel {
  std::string name = "gpt";
  std::int64_t layers = 0;
  std::int64_t hidden = 0;
  std::int64_t heads = 0;
  std::int64_t ffn_hidden = 0;  // 0 means 4·hidden; use ffn() to read it
  // Grouped-query attention (Ainslie et al. 2023, arXiv:2305.13245): the query heads share kv_heads
  // key/value heads of the same head dimension; 0 means heads (multi-head attention); use kv() to read it.
  std::int64_t kv_heads = 0;
  // Each head's width (Megatron-LM's kv_channels, Hugging Face's head_dim): 0 means hidden/heads; use
  // head_width() to read it. Most models split h over their heads; some set the width apart, so that the
  // attention is wider or narrower than h (Qwen3-30B-A3B: 32 heads of 128 at h = 2048, its config.json).
  std::int64_t head_dim = 0;
  FfnActivation activation = FfnActivation::Gelu;
  Positions positions = Positions::Learned;
  Norm norm = Norm::LayerNorm;
  // Biases on the QKV, projection, FC1 and FC2 GEMMs: GPT-2/3's, Megatron-LM's GPT, BLOOM's, OPT's.
  // false: none, as Llama and PaLM have.
  bool bias = true;
  // The LM head's weight: the word embedding's (true: GPT-2/3's, Megatron-LM's GPT, BLOOM's, OPT's; on
  // a pipeline, the last stage's copy of it has its gradient all-reduced with the first stage's), or an
  // output matrix of its own (false: Llama's; Megatron-LM's --untie-embeddings-and-output-weights,
  // NeMo's share_embeddings_and_output_weights: false), V·h parameters more and no such all-reduce.
  bool tie_embeddings = true;
  std::int64_t seq_len = 0;
  std::int64_t vocab = 0;
  std::int64_t experts = 1;     // 1 = dense; > 1 = every layer's FFN is a mixture of `experts` FFNs
  std::int64_t top_k = 1;       // experts each token is routed to (MoE only)
  // Weights and activations; optimizer master state is FP32 regardless. FP8: the linear GEMMs only,
  // with 16-bit weights and BF16 activations (activation_dtype).
  DType dtype = DType::BF16;
  // As the framework implements it (they change the op lists, not the model's FLOPs):
  AttentionImpl attention = AttentionImpl::Fused;
  LossImpl loss = LossImpl::Megatron;
  std::optional<RopeImpl> rope;  // unset: rope_impl() follows fused_elementwise
  std::optional<Fp8Recipe> fp8_recipe;  // dtype fp8 only; unset: delayed scaling (fp8_scaling())
  // Megatron's bias-GeLU and bias-dropout-add fusions: true, one memory pass each; false, the bias add,
  // GeLU, dropout and residual add each a pass of their own, and an RMSNorm the chain of FP32 operators
  // PyTorch runs for it in eager mode (a LayerNorm stays one kernel: PyTorch's layer_norm is native).
  bool fused_elementwise = true;
  // The optimizer step: true, one fused pass over the state (28 bytes per parameter, plan.hpp's
  // optimizer_step_cost); false, the separate passes of Megatron-LM's mixed-precision optimizer
  // (gradients to FP32, their norm for clipping, Adam, FP32 weights back to the model's dtype, the
  // gradient buffer zeroed), as Megatron-LM, Megatron-DeepSpeed and DeepSpeed run it.
  bool fused_optimizer = true;
  // A weight gradient across micro-batches: true, accumulated by its GEMM into the gradient buffer
  // (Megatron-LM's gradient_accumulation_fusion, β = 1); false, written fresh and added into the
  // buffer by a pass of its own after every micro-batch but the first, as PyTorch's autograd
  // (AccumulateGrad) and DeepSpeed's pipeline engine (BF16_Optimizer.update_hp_grads) do (plan.hpp).
  bool fused_grad_accumulation = true;
  // Dropout in training: true, on the attention probabilities, after the projection and after FC2 (the
  // hidden dropout) and on the embeddings, each storing a 1-byte mask for backward (Megatron-LM's
  // defaults, attention_dropout = hidden_dropout = 0.1; GPT-2/3's, OPT's); false, a probability of 0
  // everywhere, as Llama's and MPT's configurations set it: PyTorch's dropout at p = 0 returns its
  // input (no kernel, no mask), so those passes and masks drop out; a flash kernel's own dropout changes
  // nothing here (its figures are timed without).
  bool dropout = true;

  std::int64_t ffn() const { return ffn_hidden > 0 ? ffn_hidden : 4 * hidden; }
  RopeImpl rope_impl() const { return rope ? *rope : fused_elementwise ? RopeImpl::Fused : RopeImpl::Megatron; }
  Fp8Recipe fp8_scaling() const { return fp8_recipe.value_or(Fp8Recipe::Delayed); }
  std::int64_t kv() const { return kv_heads > 0 ? kv_heads : heads; }
  std::int64_t head_width() const { return head_dim > 0 ? head_dim : hidden / heads; }
  // The attention's width, a·d: the queries' columns and the context's, the projection's input (h
  // unless head_dim says otherwise).
  std::int64_t attention_width() const { return heads * head_width(); }
  // Output columns of the QKV projection (a·d for the queries, kv heads × d each for keys and values)
  // and of FC1 (f, or 2f with SwiGLU's gate).
  std::int64_t qkv_width() const { return attention_width() + 2 * kv() * head_width(); }
  std::int64_t fc1_width() const { return activation == FfnActivation::Swiglu ? 2 * ffn() : ffn(); }
  bool moe() const { return experts > 1; }
  // Parameters of one norm per hidden element: γ and β (LayerNorm), γ (RMSNorm).
  std::int64_t norm_width() const { return norm == Norm::LayerNorm ? 2 : 1; }
  // Rows of the position-embedding table: seq_len learned positions, none with RoPE or ALiBi.
  std::int64_t position_rows() const { return positions == Positions::Learned ? seq_len : 0; }
  bool operator==(const TransformerModel&) const = default;
};

// A dense GPT with f = 4h (the shape REFERENCE.md's formulas assume).
TransformerModel gpt_model(std::string name, std::int64_t layers, std::int64_t hidden, std::int64_t heads,
                           std::int64_t seq_len, std::int64_t vocab, DType dtype = DType::BF16);

// The largest sizes accepted (validate): far above any model trained, and small enough that counts
// of parameters, FLOPs and bytes fit the integers and doubles they are kept in.
inline constexpr std::int64_t kMaxModelLayers = 1 << 16;
inline constexpr std::int64_t kMaxModelWidth = 1 << 20;      // hidden and heads; ffn_hidden up to 4× that
inline constexpr std::int64_t kMaxModelSequence = 1 << 24;
inline constexpr std::int64_t kMaxModelVocab = 1 << 26;
inline constexpr std::int64_t kMaxModelExperts = 1 << 16;
inline constexpr double kMaxModelParameters = 1e15;

// Throws ConfigError naming `path`/field (e.g. "/model/heads") when a field is out of range: sizes must
// be positive and at most the limits above, hidden divisible by heads unless head_dim is set, the attention
// (heads × head_dim) at most kMaxModelWidth wide, 1 <= top_k <= experts, and the
// model at most kMaxModelParameters parameters (path itself).
void validate(const TransformerModel& m, const std::string& path = "/model");

// Presets, by name: "gpt3-175b" (l=96, h=12288, a=96, s=2048, V=51200; Brown et al. 2020, the shape
// Narayanan et al. train), "gpt3-6.7b" (32, 4096, 32), "gpt3-1.3b" (24, 2048, 16; 128-wide heads as in
// Megatron's GPT configs). Throws UnknownName listing them.
TransformerModel model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

// ---- parameters ----------------------------------------------------------------------------------

// Parameter counts, split the way the memory and parallelism code needs them.
// Per layer (Megatron GPT, pre-LayerNorm, biases everywhere; without TransformerModel::bias the GEMMs'
// bias terms, 4h and f + h, drop out):
//   attention = QKV 3h² + 3h, projection h² + h              = 4h² + 4h
//               (with head_dim: QKV h·q + q, projection w·h + h; w = a·d the attention's width,
//               q = qkv_width())
//   norms     = two LayerNorms, γ and β each                 = 4h  (two RMSNorms, γ: 2h)
//   ffn       = FC1 h·f + f, FC2 f·h + h  (per expert)       = 2hf + f + h
//   router    = h·E gate weights (no bias), MoE only
// Model: word embedding V·h (the LM head shares it; untied, V·h more for its own) + learned position
// embedding s·h, final LayerNorm 2h (RMSNorm h).
// For a dense model with f = 4h, layers·per_layer() + embedding = 12lh² + 13lh + (V+s)h, which is
// REFERENCE.md's P = 12·l·h²·(1 + 13/(12h) + (V+s)/(12·l·h)) exactly; that formula leaves out the final
// LayerNorm, so total() = P + 2h.
struct ParameterCount {
  std::int64_t layers = 0;
  std::int64_t experts = 1;
  std::int64_t attention = 0;   // per layer
  std::int64_t norms = 0;       // per layer
  std::int64_t ffn = 0;         // per layer, per expert
  std::int64_t router = 0;      // per layer (0 when dense)
  std::int64_t embedding = 0;   // (V + s)·h, + V·h untied (the output matrix)
  std::int64_t final_norm = 0;  // 2h (RMSNorm h)

  std::int64_t per_layer() const { return attention + norms + experts * ffn + router; }
  // All expert FFN parameters of the model, layers·E·ffn (0 for a dense model).
  std::int64_t expert_total() const { return experts > 1 ? layers * experts * ffn : 0; }
  std::int64_t total() const { return layers * per_layer() + embedding + final_norm; }
  // Parameters one token's forward pass touches (MoE: top_k of the E experts); = total() when dense.
  std::int64_t active(std::int64_t top_k) const {
    return total() - (experts > 1 ? layers * (experts - top_k) * ffn : 0);
  }
  bool operator==(const ParameterCount&) const = default;
};

ParameterCount parameter_count(const TransformerModel& m);

// Parameters one rank holds under tensor (t), pipeline (p) and expert (ep) parallelism, on pipeline
// stage `stage` (0 ≤ stage < p). Split as Megatron does: QKV and FC1 column-parallel (weights and biases
// / t), projection and FC2 row-parallel (weights / t, biases replicated), LayerNorms and the router
// replicated; the word embedding is vocabulary-parallel (⌈V/t⌉ rows), the position embedding replicated.
// Stage 0 holds the embeddings, stage p−1 the final LayerNorm and — when p > 1 — its own copy of the
// word embedding for the tied LM head (Megatron keeps one and all-reduces its gradient between the two
// stages), or the untied output matrix (⌈V/t⌉ rows too, on stage p−1 whatever p). Experts: E/ep per
// rank, each split over t like a dense FFN. `expert` holds those, `dense` the rest; they are sharded
// over different data-parallel groups (dp·cp and dp·cp/ep).
// The stage holds `stage_layers` transformer layers; the five-argument form splits them evenly and
// requires layers % p == 0. Requires experts % ep == 0 (throws InvalidArgument otherwise).
struct RankParameters {
  std::int64_t dense = 0;
  std::int64_t expert = 0;
  std::int64_t total() const { return dense + expert; }
  bool operator==(const RankParameters&) const = default;
};
RankParameters rank_parameters(const TransformerModel& m, int tp, int pp, int ep, int stage, std::int64_t stage_layers);
RankParameters rank_parameters(const TransformerModel& m, int tp, int pp, int ep, int stage);

// One layer's parameters on one rank of a tp-way tensor-parallel group, tensor by tensor, split as
// rank_parameters splits them (it sums these): QKV and FC1 with their biases / t; projection and FC2
// weights / t with their whole biases; the two LayerNorms; FC1 and FC2 per expert; the router (MoE).
struct LayerTensorElements {
  std::int64_t qkv = 0, proj = 0, norms = 0, fc1 = 0, fc2 = 0, router = 0;
};
LayerTensorElements layer_tensor_elements(const TransformerModel& m, int tp);

// ---- model state (ZeRO) --------------------------------------------------------------------------

// Bytes of parameters, gradients and optimizer state one rank holds for Adam (Rajbhandari et al.):
// 16-bit dtypes (BF16, FP16, and FP8, whose weights are kept in 16 bits as Transformer Engine does):
// 2Ψ parameters + 2Ψ gradients + 12Ψ FP32 master copy, momentum and variance. FP32/TF32: 4Ψ + 4Ψ + 8Ψ
// (no master copy). ZeRO stage 1 shards the optimizer state over the n_d data-parallel ranks, stage 2
// also the gradients, stage 3 also the parameters; a shard is ⌈Ψ/n_d⌉ elements (the flat buffer is
// padded). Throws InvalidArgument for psi < 0, stage outside 0..3 or n_d < 1.
struct ModelStateBytes {
  Bytes params = 0;
  Bytes grads = 0;
  Bytes optimizer = 0;
  Bytes total() const { return params + grads + optimizer; }
  bool operator==(const ModelStateBytes&) const = default;
};
ModelStateBytes model_state_bytes(std::int64_t psi, DType dtype, int zero_stage, int n_d);
// Bytes of one parameter's gradient and of its weight as model_state_bytes counts them: 2 for the
// 16-bit dtypes (FP8 weights included), 4 for FP32/TF32.
Bytes gradient_bytes_per_element(DType dtype);
Bytes parameter_bytes_per_element(DType dtype);

// ---- activations ---------------------------------------------------------------------------------

// Which of a layer's LayerNorm outputs an fp8 model writes in FP8 for an FP8 GEMM to read (Transformer
// Engine's LayerNormLinear), and so which of its tensor-parallel all-gathers carry FP8 (plan.hpp):
// `attention` ln1's (QKV reads it; the projection's output gradient is gathered in FP8 too), `ffn`
// ln2's (FC1 reads it; FC2's output gradient likewise) in a dense layer only — an MoE's router reads
// ln2's output in BF16 and its experts cast what they read themselves. Both false for other dtypes.
struct Fp8LayerNorms {
  bool attention = false;
  bool ffn = false;
};
Fp8LayerNorms fp8_layer_norms(const TransformerModel& m);

// Bytes of activations one transformer layer keeps for its backward pass, per micro-batch of b
// sequences, on one tensor-parallel rank (Korthikanti et al. §4, 16-bit activations, 1-byte dropout
// masks; without dropout, no masks, and outside flash attention the core keeps its softmax output
// alone, 2·a·s²·b for 5). For f = 4h and a 16-bit dtype this is exactly REFERENCE.md's
//   none, no parallelism:      s·b·h·(34 + 5·a·s/h)
//   none, tensor parallel:     s·b·h·(10 + 24/t + 5·a·s/(h·t))
//   none, tensor + sequence:   (s·b·h/t)·(34 + 5·a·s/h)
//   selective:                 s·b·h·(10 + 24/t) without SP, 34·s·b·h/t with SP
//   full:                      2·s·b·h (the layer input; /t with SP, which keeps it sequence-sharded)
// For other f the FFN terms scale with f (GeLU and FC2 inputs are s·b·f each); for FP32/TF32 the
// element terms double (masks stay one byte). FP8 (Transformer Engine, activation_dtype): the inputs
// of the four linear GEMMs (QKV, projection, FC1, FC2) are kept in FP8, one byte (linear.py saves the
// FP8 input or only its FP8 transpose; layernorm_linear.py the FP8 LayerNorm output), the rest in
// BF16; an MoE's FC1 input, which its router reads too, stays BF16. Sequence parallelism with t = 1 changes nothing.
// Flash attention stores nothing s²-sized at any recomputation: without recomputation its 5·a·s²·b
// term becomes the FP32 log-sum-exp of each score row, 4·a·s·b bytes (/t).
// MoE: the FFN terms count top_k times (balanced routing); router and permutation buffers are ignored.
// Context parallelism over cp ranks divides every term by cp (the s²-sized ones are the rank's s/cp
// query rows against s keys): the rank keeps only its own keys and values, and the backward gathers
// the others' again (the plan's Cp all-gathers). Rounded to the nearest byte. Throws InvalidArgument
// for micro_batch < 1, tp < 1 or cp < 1.
// What the loss keeps for its backward, per micro-batch on the rank of the last stage, over its
// b·(s/cp)·⌈V/t⌉ logits (LossImpl): megatron the FP32 softmax (4 bytes a logit), pytorch the FP32
// log-softmax (4), fused the logits in the activation dtype and each row's FP32 log-sum-exp. Throws
// InvalidArgument for micro_batch < 1, tp < 1 or cp < 1.
Bytes loss_activation_bytes(const TransformerModel& m, std::int64_t micro_batch, int tp, int cp = 1);

Bytes activation_bytes_per_layer(const TransformerModel& m, std::int64_t micro_batch, int tp,
                                 bool sequence_parallel, Recompute recompute, int cp = 1);

// ---- ops -----------------------------------------------------------------------------------------

// One kernel's cost. GEMMs are C[m×n] = A[m×k]·B[k×n] repeated `batch` times (batch > 1 for the
// attention matmuls, one per head, and for grouped expert GEMMs, one per local expert):
// flops = 2·batch·m·n·k, bytes = batch·(m·k + k·n + m·n)·element size (each operand read once, the
// result written once). MemoryBound ops carry the bytes they read and write and a rough count of their
// element-wise arithmetic (not part of model FLOPs: their time is set by bytes).
struct OpCost {
  enum class Kind { Gemm, Attention, MemoryBound };
  // Forward; Recompute (a forward op re-run before backward); BackwardData (gradients of inputs, also
  // every backward op without weights); BackwardWeight (gradients of weights: the ops LoRA and frozen
  // parameters remove).
  enum class Phase { Forward, Recompute, BackwardData, BackwardWeight };

  // A technique's sparsity in a GEMM (DSA's masks): the pattern of the zeros, and the fraction left
  // non-zero. `flops` then count only the non-zero work; how much of it becomes time is the compute
  // model's business (dense hardware gains nothing from Unstructured zeros; Block skips zero blocks;
  // TwoFour — 2:4 in the operand the sparse tensor cores read — runs at their rate).
  enum class Sparsity { Dense, Unstructured, Block, TwoFour };
  // The technique kernel (kernels/) a real backend runs for the op; None for the model's own ops.
  //   Compress    TGC: error feedback + top-k + quantisation of `elements` gradients (bits, keep_fraction)
  //   Decompress  TGC: decode and sum received payloads into `elements` gradients
  //   MaskRefresh DSA: importance scores and the threshold selection over `elements` parameters
  //   MaskedStep  DSA: the optimizer step touching only the active parameters
  //   Lora        a LoRA adapter GEMM (kernels' lora functions)
  //   LossScale   precision: the overflow check and unscale of `elements` fp16 gradients
  //   Precision   precision: the adaptive rule's per-layer statistics over `elements` gradients
  enum class Kernel { None, Compress, Decompress, MaskRefresh, MaskedStep, Lora, LossScale, Precision };

  std::string name;
  Kind kind = Kind::MemoryBound;
  Phase phase = Phase::Forward;
  double flops = 0;
  Bytes bytes = 0;
  std::int64_t m = 0, n = 0, k = 0;  // GEMM and attention shapes; 0 for memory-bound ops
  std::int64_t batch = 1;
  DType dtype = DType::BF16;
  Sparsity sparsity = Sparsity::Dense;  // MaskRefresh: the granularity of the masks it selects
  double density = 1;                // non-zero fraction under `sparsity`; MaskRefresh, MaskedStep: the masks'
  std::int64_t block = 0;            // Block: the block edge; Compress/Decompress: elements per
                                     // quantisation scale; MaskRefresh: the mask's block edge
  Kernel kernel = Kernel::None;
  bool flash = false;                // Attention: one flash-attention kernel (is_flash(AttentionImpl))
  FlashKernel flash_kernel = FlashKernel::Newest;  // flash: which kernel
  std::int64_t elements = 0;         // technique kernels: the elements they process
  int bits = 0;                      // Compress/Decompress: quantisation bits (0: values unquantised)
  double keep_fraction = 1;          // Compress/Decompress: the fraction of entries sent (top-k)
  bool error_feedback = false;       // Compress: what is not sent is kept in a residual and re-sent
  bool adaptive = false;             // Compress: TGC's adaptive rule picks each payload's width (bits:
                                     // the width the plan assumes, TgcParams::adaptive_bits)
  int every = 1;                     // MaskRefresh, Precision: iterations between refreshes; the cost
                                     // is amortised over them (each iteration does 1/every of the work)
  int split = 1;                     // Gemm: one of `split` chunks of a GEMM along m (m, flops and
                                     // bytes the chunk's) whose chunks run back to back on concurrent
                                     // streams, so their tiles fill each other's partial waves: timed at
                                     // the whole GEMM's shape (m·split rows). Transformer Engine's
                                     // userbuffers launch each chunk on the next of their streams
                                     // (Layout::tp_comm_overlap). 1: a GEMM of its own

  bool is_matmul() const { return kind != Kind::MemoryBound; }
  bool operator==(const OpCost&) const = default;
};

// The fp32 floats the CPU backend's compute pool (real/src/cpu/cpu_compute.hpp) reads and writes to run
// `cost`: a matmul reads A and B (batch·(m·k + k·n)) and writes C (batch·m·n); any other op streams
// bytes / 8 floats in and as many out (half its bytes read, half written). Each from the start of its
// region of the pool, which every op shares. Nothing for a technique kernel or a block or 2:4 sparse
// GEMM, which run on buffers of their own (real/src/technique_plan.cpp; a masked step's other
// parameters, which stream on the pool, are left out). The simulator's cache model of CPU ranks reads
// it (sim/cache_residency.hpp).
struct PoolFootprint {
  std::int64_t input_floats = 0, output_floats = 0;
  bool operator==(const PoolFootprint&) const = default;
};
PoolFootprint cpu_pool_footprint(const OpCost& cost);

// Where the ops run: b sequences per micro-batch, on one rank of a tensor-parallel group of t (heads
// and FFN split as in Megatron: column-parallel QKV and FC1, row-parallel projection and FC2), with
// sequence parallelism splitting the LayerNorm and dropout-add ops (which otherwise every tensor rank
// repeats whole) by t, and ep expert-parallel ranks sharing the experts. Context parallelism splits
// each sequence over cp ranks: every op sees s/cp of its tokens, and attention runs the rank's s/cp
// queries against all s keys and values (gathered over the context group, as Llama 3 does: Llama Team
// 2024, §3.3.2), its causal half load-balanced so each rank does 1/cp of it (the sequence in 2·cp
// chunks, rank i holding chunks i and 2·cp−1−i). The collectives between ops (TP all-reduce or SP
// all-gather / reduce-scatter, MoE all-to-all, CP's key/value all-gathers) are the plan's business.
struct OpContext {
  std::int64_t micro_batch = 1;
  int tp = 1;
  bool sequence_parallel = false;
  int ep = 1;
  int cp = 1;
  // The cp group passes K and V round a ring (layout.hpp, CpComm::P2P): a flash attention's cp steps
  // as two ops, the first step's and the other cp - 1 steps', and the merging of their partial results.
  bool cp_ring = false;
  bool operator==(const OpContext&) const = default;
};

// One transformer layer, in execution order. Forward (dense, the defaults: fused attention, fused
// element-wise ops):
//   ln1, qkv, qkv_bias (with biases: Megatron's column-parallel linear adds it after the matmul),
//   attn_scores (QKᵀ), softmax (fused scale-mask-softmax), attn_dropout, attn_context (·V),
//   attn_context_permute (to the projection's layout), proj, attn_residual (fused bias-dropout-residual
//   add), ln2, fc1, gelu (fused bias-GeLU), fc2, mlp_residual; each name ends in "_fwd".
// The attention core (attn_scores .. attn_context_permute) by TransformerModel::attention: unfused adds
// attn_scale and attn_mask before softmax; flash replaces the core by one flash_attn op (Kind
// Attention, flash = true, m = n = s, k = d (the head width, h/a without head_dim), batch = b·a/t;
// flops the causal half of the two matmuls, 2·b·(a/t)·s²·d; backward flash_attn_bwd, 2.5 × that: the
// scores recomputed). With OpContext::cp_ring, flash_attn is a ring's first step, then flash_attn_ring
// (the other cp − 1 steps) and attn_out_correction (backward: flash_attn_ring_bwd,
// attn_grad_accumulate_bwd).
// Unfused element-wise ops (fused_elementwise = false): fc1_bias before gelu (expert_fc1_bias under
// MoE), and attn_bias, attn_out_dropout before attn_residual (now the add alone); mlp likewise; SwiGLU
// as silu then swiglu (backward swiglu, silu, swiglu_cat); an RMSNorm's ops (ln1, ln2, final_ln and
// their backward) carry PyTorch's eager chain (model.cpp).
// RoPE (positions = rope): rope_q and rope_k after qkv_bias, memory-bound, and again on their
// gradients in backward before qkv (model.cpp has their passes); embedding_dropout reads no position
// embedding. ALiBi (positions = alibi): outside flash attention, attn_alibi before attn_scores, the bias
// written into the scores' buffer that the QKᵀ GEMM then adds to (a flash kernel adds it in its tiles);
// no backward pass; no position embedding either.
// Without dropout (dropout = false): no attn_dropout, no attn_out_dropout or mlp_out_dropout, the
// residual adds write no mask and have no backward pass (the sum's gradient is each addend's), and the
// embedding's pass is the learned positions' add alone (embedding_positions; nothing with RoPE or ALiBi).
// MoE replaces fc1..fc2 by router (GEMM to E logits), router_topk, expert_permute, expert_fc1 (grouped),
// gelu, expert_fc2 (grouped), expert_unpermute; with balanced routing each rank's experts process the
// b·s·k tokens its group routes to them: every local expert gets b·s·k·ep/E tokens (m rounded to the
// nearest integer when that is not whole; flops use the exact value).
// Backward is the reverse; every forward GEMM yields a `_dgrad` and a `_wgrad` GEMM with its FLOPs,
// every attention matmul two gradient matmuls with its FLOPs each, so backward = 2 × forward in FLOPs.
// Besides, as PyTorch's autograd runs a Megatron-LM layer: each LayerNorm's backward is two passes
// (ln_gamma_beta_bwd, then ln_bwd; an RMSNorm's ln_gamma_bwd, then ln_bwd), and the gradients of its
// input from the norm and from the skip connection are summed by a pass of their own
// (ln_grad_sum_bwd); with biases, each GEMM's bias
// gradient is a column sum of its output gradient (qkv_bias, proj_bias, fc1_bias, fc2_bias; "_bwd");
// outside flash attention, the Q, K and V gradients are concatenated into QKV's (qkv_grad_cat_bwd).
// FP8 (Transformer Engine's recipe, activation_dtype): the QKV, projection, FC1 and FC2 GEMMs (expert
// FC1 and FC2 under MoE) are FP8 with BF16 outputs; every other op is the BF16 one. Transformer Engine
// quantises what those GEMMs read, as memory-bound passes (TE 2024, module/linear.py, layernorm_linear.py,
// base.py grad_output_preprocess): ln1 and ln2 write their output in FP8 (layernorm_fwd_fp8; ln2 not
// under MoE, whose router reads it in BF16); the
// projection's and FC2's inputs are cast, "<gemm>_cast_fwd" (cast_to_fp8 with sequence parallelism,
// else fp8_cast_transpose_fused, which also writes the transpose backward wants; the experts' likewise);
// backward transposes each FP8 input the forward did not ("<gemm>_input_transpose_bwd", tex.fp8_transpose)
// and quantises every output gradient, "<gemm>_grad_cast_bwd" (fp8_cast_transpose_fused; for the
// row-parallel projection and FC2 under sequence parallelism, cast_to_fp8 of the local shard, an
// all-gather in FP8, then fp8_transpose). With current scaling (Fp8Recipe::Current) each cast op also
// reads its input once more for the amax (the local shard's, for the gathered gradients), and a norm
// writing FP8 writes BF16, read and cast by a quantise pass, in the same op. Not modelled: the weights'
// cast (once a step with is_first_microbatch, as Megatron-LM passes it) and the amax and scale updates.
// Throws InvalidArgument when the context is impossible for the model (heads % tp, ffn % tp,
// experts % ep, seq_len % tp under sequence parallelism, micro_batch < 1).
std::vector<OpCost> layer_forward_ops(const TransformerModel& m, const OpContext& c);
std::vector<OpCost> layer_backward_ops(const TransformerModel& m, const OpContext& c);
// The forward ops re-run before a layer's backward: none; selective — the attention core (attn_scores,
// [attn_scale, attn_mask,] softmax, attn_dropout, attn_context; or flash_attn); full — all of
// layer_forward_ops. Phase Recompute, names ending in "_recompute" instead of "_fwd".
std::vector<OpCost> layer_recompute_ops(const TransformerModel& m, const OpContext& c, Recompute r);

// First pipeline stage: vocabulary-parallel word-embedding lookup, position embedding add + dropout.
std::vector<OpCost> embedding_forward_ops(const TransformerModel& m, const OpContext& c);
std::vector<OpCost> embedding_backward_ops(const TransformerModel& m, const OpContext& c);
// Last pipeline stage: final LayerNorm, LM head GEMM (vocabulary column-parallel, n = ⌈V/t⌉) and the
// vocabulary-parallel cross-entropy; backward in reverse.
std::vector<OpCost> head_forward_ops(const TransformerModel& m, const OpContext& c);
std::vector<OpCost> head_backward_ops(const TransformerModel& m, const OpContext& c);

// All the op lists above for one context and recomputation, indexed by OpList: every op of the model a
// plan's stages run (op names are unique across the lists).
enum class OpList : std::uint8_t { LayerForward, LayerBackward, LayerRecompute, EmbeddingForward, EmbeddingBackward, HeadForward, HeadBackward };
inline constexpr std::size_t kOpLists = 7;
std::array<std::vector<OpCost>, kOpLists> model_op_lists(const TransformerModel& m, const OpContext& c, Recompute r);

// One matmul's cost by the convention above: C[m×n] = A[m×k]·B[k×n], `batch` times.
OpCost matmul_cost(std::string name, OpCost::Kind kind, OpCost::Phase phase, std::int64_t m, std::int64_t n,
                   std::int64_t k, std::int64_t batch, DType dtype);

// Sum of the GEMM and attention FLOPs of `ops` (element-wise ops excluded, as "model FLOPs" do).
double matmul_flops(const std::vector<OpCost>& ops);

// FLOPs of one training iteration over a global batch of B sequences, summed from the op lists above
// (t = 1): layers × (forward + backward + recompute) + embedding + head. For a dense model with f = 4h:
//   Recompute::None  72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h))   — the "model FLOPs" of MFU
//   Recompute::Full  96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h))
//   Recompute::Selective adds the attention core once more: 72·B·s·l·h² + 16·B·s²·l·h + 6·B·s·V·h.
// The algorithm's FLOPs, whatever the implementation: counted as the fused attention computes them
// (a flash kernel skips the masked half and recomputes in backward; neither counts here).
double training_flops(const TransformerModel& m, std::int64_t global_batch, Recompute r);

// ---- JSON (the edge) -----------------------------------------------------------------------------

// {"preset"?, "name", "layers", "hidden", "heads", "kv_heads"? (default heads), "head_dim"? (default
//  hidden/heads), "ffn_hidden"?,
//  "activation"? ("gelu" | "swiglu", default "gelu"), "positions"? (positions_names(), default "learned"),
//  "norm"? ("layernorm" | "rmsnorm", default "layernorm"), "bias"? (default true), "tie_embeddings"?
//  (default true), "seq_len", "vocab", "experts"?,
//  "top_k"?, "dtype"?, "attention"? (attention_names(), default "fused"), "loss"? (loss_names(), default
//  "megatron"),
//  "fused_elementwise"? (default true), "fused_optimizer"? (default true), "fused_grad_accumulation"?
//  (default true), "dropout"? (default true), "rope"? (rope_names(); positions "rope" only), "fp8_recipe"?
//  (fp8_recipe_names(); dtype "fp8" only)}. With "preset", the preset's fields are the defaults and
// any other key overrides them; without, layers/hidden/heads/seq_len/vocab are required. Strict: an
// unknown key, a wrong type or an out-of-range value is a ConfigError naming the full path (`path` +
// "/hidden"). The result has ffn_hidden and kv_heads resolved (never 0) and has passed validate().
TransformerModel model_from_json(const nlohmann::json& j, const std::string& path = "/model");
// The fully resolved form (every key written), which model_from_json reads back to an equal model.
nlohmann::json model_to_json(const TransformerModel& m);

}  // namespace twinbed
