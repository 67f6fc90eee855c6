// Transformer costs. Formulas and the breakdowns behind them: ../shared/REFERENCE.md, from
// Narayanan et al., "Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM"
// (SC'21, appendix: parameters and FLOPs), Korthikanti et al., "Reducing Activation Recomputation in
// Large Transformer Models" (MLSys'23, §4: activation memory), Rajbhandari et al., "ZeRO" (SC'20, §3
// and §5: model states).
#include "twinbed/core/model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "enum_names.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"

namespace twinbed {

using json_read::join;

namespace {

double d(std::int64_t v) { return static_cast<double>(v); }

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// An RMSNorm run as PyTorch's eager operators (TransformerModel::fused_elementwise false; model.hpp),
// but under Transformer Engine's FP8 recipe, whose modules run their own norm kernels (LayerNormLinear,
// RMSNorm).
bool eager_rms_norm(const TransformerModel& m) {
  return m.norm == Norm::RmsNorm && !m.fused_elementwise && m.dtype != DType::FP8;
}

}  // namespace

// ---- names ---------------------------------------------------------------------------------------

namespace {
struct DTypeInfo {
  DType type;
  const char* name;
  Bytes bytes;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::FP32, "fp32", 4}, {DType::TF32, "tf32", 4}, {DType::BF16, "bf16", 2},
    {DType::FP16, "fp16", 2}, {DType::FP8, "fp8", 1},
};
constexpr std::pair<Recompute, const char*> kRecompute[] = {
    {Recompute::None, "none"}, {Recompute::Selective, "selective"}, {Recompute::Full, "full"}};
constexpr std::pair<AttentionImpl, const char*> kAttention[] = {
    {AttentionImpl::Unfused, "unfused"}, {AttentionImpl::Fused, "fused"},   {AttentionImpl::Flash, "flash"},
    {AttentionImpl::Flash1, "flash1"},   {AttentionImpl::Flash2, "flash2"}, {AttentionImpl::Flash3, "flash3"},
    {AttentionImpl::Cudnn, "cudnn"}};
constexpr std::pair<FfnActivation, const char*> kActivations[] = {{FfnActivation::Gelu, "gelu"},
                                                                  {FfnActivation::Swiglu, "swiglu"}};
constexpr std::pair<Positions, const char*> kPositions[] = {
    {Positions::Learned, "learned"}, {Positions::Rope, "rope"}, {Positions::Alibi, "alibi"}};
constexpr std::pair<Norm, const char*> kNorms[] = {{Norm::LayerNorm, "layernorm"}, {Norm::RmsNorm, "rmsnorm"}};
}  // namespace

std::string norm_name(Norm n) { return enum_names::name_of(kNorms, n, "norm_name: not a Norm"); }
std::vector<std::string> norm_names() { return enum_names::names(kNorms); }
Norm parse_norm(const std::string& name) { return enum_names::parse(kNorms, name, "norm"); }

std::string activation_name(FfnActivation a) { return enum_names::name_of(kActivations, a, "activation_name: not an FfnActivation"); }
std::vector<std::string> activation_names() { return enum_names::names(kActivations); }
FfnActivation parse_activation(const std::string& name) { return enum_names::parse(kActivations, name, "FFN activation"); }

std::string positions_name(Positions p) { return enum_names::name_of(kPositions, p, "positions_name: not a Positions"); }
std::vector<std::string> positions_names() { return enum_names::names(kPositions); }
Positions parse_positions(const std::string& name) { return enum_names::parse(kPositions, name, "positions"); }

std::string attention_name(AttentionImpl a) { return enum_names::name_of(kAttention, a, "attention_name: not an AttentionImpl"); }
std::vector<std::string> attention_names() { return enum_names::names(kAttention); }
AttentionImpl parse_attention(const std::string& name) { return enum_names::parse(kAttention, name, "attention implementation"); }
constexpr std::pair<LossImpl, const char*> kLoss[] = {
    {LossImpl::Megatron, "megatron"}, {LossImpl::Pytorch, "pytorch"}, {LossImpl::Fused, "fused"}};
std::string loss_name(LossImpl l) { return enum_names::name_of(kLoss, l, "loss_name: not a LossImpl"); }
std::vector<std::string> loss_names() { return enum_names::names(kLoss); }
LossImpl parse_loss(const std::string& name) { return enum_names::parse(kLoss, name, "loss implementation"); }

constexpr std::pair<RopeImpl, const char*> kRope[] = {
    {RopeImpl::Fused, "fused"}, {RopeImpl::Megatron, "megatron"}, {RopeImpl::Fms, "fms"}};
std::string rope_name(RopeImpl r) { return enum_names::name_of(kRope, r, "rope_name: not a RopeImpl"); }
RopeImpl parse_rope(const std::string& name) { return enum_names::parse(kRope, name, "rope implementation"); }
std::vector<std::string> rope_names() { return enum_names::names(kRope); }

constexpr std::pair<Fp8Recipe, const char*> kFp8Recipes[] = {{Fp8Recipe::Delayed, "delayed"},
                                                             {Fp8Recipe::Current, "current"}};
std::string fp8_recipe_name(Fp8Recipe r) {
  return enum_names::name_of(kFp8Recipes, r, "fp8_recipe_name: not an Fp8Recipe");
}
Fp8Recipe parse_fp8_recipe(const std::string& name) { return enum_names::parse(kFp8Recipes, name, "FP8 recipe"); }
std::vector<std::string> fp8_recipe_names() { return enum_names::names(kFp8Recipes); }

bool is_flash(AttentionImpl a) { return a != AttentionImpl::Unfused && a != AttentionImpl::Fused; }
FlashKernel flash_kernel(AttentionImpl a) {
  switch (a) {
    case AttentionImpl::Flash1: return FlashKernel::Flash1;
    case AttentionImpl::Flash2: return FlashKernel::Flash2;
    case AttentionImpl::Flash3: return FlashKernel::Flash3;
    case AttentionImpl::Cudnn: return FlashKernel::Cudnn;
    default: return FlashKernel::Newest;
  }
}
std::string flash_kernel_title(FlashKernel k) {
  switch (k) {
    case FlashKernel::Flash1: return "FlashAttention";
    case FlashKernel::Flash2: return "FlashAttention-2";
    case FlashKernel::Flash3: return "FlashAttention-3";
    case FlashKernel::Cudnn: return "cuDNN attention";
    case FlashKernel::Newest: break;
  }
  return "the newest FlashAttention";
}

Bytes bytes_per_element(DType t) {
  for (const auto& i : kDTypes) {
    if (i.type == t) return i.bytes;
  }
  throw InvalidArgument("bytes_per_element: not a DType");
}

DType activation_dtype(DType model_dtype) { return model_dtype == DType::FP8 ? DType::BF16 : model_dtype; }

Fp8LayerNorms fp8_layer_norms(const TransformerModel& m) {
  const bool fp8 = m.dtype == DType::FP8;
  return {.attention = fp8, .ffn = fp8 && !m.moe()};
}

std::string dtype_name(DType t) {
  for (const auto& i : kDTypes) {
    if (i.type == t) return i.name;
  }
  throw InvalidArgument("dtype_name: not a DType");
}

std::vector<std::string> dtype_names() {
  std::vector<std::string> out;
  for (const auto& i : kDTypes) out.emplace_back(i.name);
  return out;
}

DType parse_dtype(const std::string& name) {
  for (const auto& i : kDTypes) {
    if (name == i.name) return i.type;
  }
  throw UnknownName("dtype", name, dtype_names());
}

std::string recompute_name(Recompute r) { return enum_names::name_of(kRecompute, r, "recompute_name: not a Recompute"); }
std::vector<std::string> recompute_names() { return enum_names::names(kRecompute); }
Recompute parse_recompute(const std::string& name) { return enum_names::parse(kRecompute, name, "recompute mode"); }

// ---- the model -----------------------------------------------------------------------------------

TransformerModel gpt_model(std::string name, std::int64_t layers, std::int64_t hidden, std::int64_t heads,
                           std::int64_t seq_len, std::int64_t vocab, DType dtype) {
  TransformerModel m;
  m.name = std::move(name);
  m.layers = layers;
  m.hidden = hidden;
  m.heads = heads;
  m.ffn_hidden = 4 * hidden;
  m.kv_heads = heads;
  m.seq_len = seq_len;
  m.vocab = vocab;
  m.dtype = dtype;
  return m;
}

void validate(const TransformerModel& m, const std::string& path) {
  const auto positive = [&](std::int64_t v, const char* field) {
    if (v < 1) throw ConfigError(path + "/" + field, "must be a positive integer, got " + std::to_string(v));
  };
  positive(m.layers, "layers");
  positive(m.hidden, "hidden");
  positive(m.heads, "heads");
  positive(m.seq_len, "seq_len");
  positive(m.vocab, "vocab");
  positive(m.experts, "experts");
  if (m.ffn_hidden < 0) {
    throw ConfigError(path + "/ffn_hidden", "must be positive (or 0 for 4·hidden), got " + std::to_string(m.ffn_hidden));
  }
  if (m.head_dim < 0) {
    throw ConfigError(path + "/head_dim",
                      "must be positive (or 0 for hidden/heads), got " + std::to_string(m.head_dim));
  }
  if (m.head_dim == 0 && m.hidden % m.heads != 0) {
    throw ConfigError(path + "/heads", "hidden (" + std::to_string(m.hidden) + ") must be divisible by heads (" +
                                           std::to_string(m.heads) + "), or head_dim set");
  }
  if (m.kv_heads < 0 || m.heads % m.kv() != 0) {
    throw ConfigError(path + "/kv_heads", "must divide heads (" + std::to_string(m.heads) + ": each key/value head serves " +
                                              "a group of query heads), got " + std::to_string(m.kv_heads));
  }
  if (m.top_k < 1 || m.top_k > m.experts) {
    throw ConfigError(path + "/top_k", "must be in 1.." + std::to_string(m.experts) + " (the expert count), got " +
                                           std::to_string(m.top_k));
  }
  if (m.fp8_recipe && m.dtype != DType::FP8) {
    throw ConfigError(path + "/fp8_recipe", "scales the FP8 GEMMs' inputs of \"dtype\": \"fp8\"; this model's dtype "
                                            "is \"" + dtype_name(m.dtype) +
                                                "\" (drop \"fp8_recipe\" or set \"dtype\": \"fp8\")");
  }
  if (m.rope && m.positions != Positions::Rope) {
    throw ConfigError(path + "/rope", "rotates the queries and keys of \"positions\": \"rope\"; this model's are \"" +
                                          positions_name(m.positions) + "\" (drop \"rope\" or set \"positions\": \"rope\")");
  }
  // Sizes a simulation can hold: each far above any model trained (GPT-3 175B: 96 layers, hidden 12288,
  // 96 heads, vocabulary 51200), and together small enough that counts of parameters, FLOPs and bytes fit
  // the integers they are kept in.
  const auto at_most = [&](std::int64_t v, std::int64_t max, const char* field) {
    if (v > max) throw ConfigError(path + "/" + field, "at most " + std::to_string(max) + " is accepted, got " + std::to_string(v));
  };
  at_most(m.layers, kMaxModelLayers, "layers");
  at_most(m.hidden, kMaxModelWidth, "hidden");
  at_most(m.heads, kMaxModelWidth, "heads");
  at_most(m.head_dim, kMaxModelWidth, "head_dim");
  if (m.attention_width() > kMaxModelWidth) {
    throw ConfigError(path + "/head_dim", "heads × head_dim (the attention's width) at most " +
                                              std::to_string(kMaxModelWidth) + " is accepted, got " +
                                              std::to_string(m.attention_width()));
  }
  at_most(m.ffn(), 4 * kMaxModelWidth, "ffn_hidden");
  at_most(m.seq_len, kMaxModelSequence, "seq_len");
  at_most(m.vocab, kMaxModelVocab, "vocab");
  at_most(m.experts, kMaxModelExperts, "experts");
  const double h = static_cast<double>(m.hidden), f = static_cast<double>(m.ffn());
  const double fc1 = static_cast<double>(m.fc1_width());
  const double attention = h * (static_cast<double>(m.qkv_width()) + static_cast<double>(m.attention_width()));
  const double experts = static_cast<double>(m.experts);
  const double params = static_cast<double>(m.layers) * (attention + experts * (h * fc1 + f * h)) +
                        static_cast<double>(m.vocab + m.position_rows()) * h;
  if (params > kMaxModelParameters) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "about %.3g parameters; twinbed models up to %.0e (layers, hidden, ffn_hidden, experts)",
                  params, kMaxModelParameters);
    throw ConfigError(path, buf);
  }
}

namespace {
struct Preset {
  const char* name;
  std::int64_t layers, hidden, heads;
};
// GPT-3 shapes (Brown et al. 2020, table 2.1) at s = 2048, V = 51200 as Narayanan et al. use them.
// The 1.3B model uses 16 heads of 128 (Megatron's configuration) rather than the table's 24.
constexpr Preset kPresets[] = {
    {"gpt3-175b", 96, 12288, 96},
    {"gpt3-6.7b", 32, 4096, 32},
    {"gpt3-1.3b", 24, 2048, 16},
};
}  // namespace

std::vector<std::string> model_preset_names() {
  std::vector<std::string> out;
  for (const auto& p : kPresets) out.emplace_back(p.name);
  return out;
}

TransformerModel model_preset(const std::string& name) {
  for (const auto& p : kPresets) {
    if (name == p.name) return gpt_model(p.name, p.layers, p.hidden, p.heads, 2048, 51200);
  }
  throw UnknownName("model preset", name, model_preset_names());
}

// ---- parameters ----------------------------------------------------------------------------------

ParameterCount parameter_count(const TransformerModel& m) {
  const std::int64_t h = m.hidden, f = m.ffn();
  ParameterCount p;
  p.layers = m.layers;
  p.experts = m.experts;
  const std::int64_t qkv = m.qkv_width(), fc1 = m.fc1_width(), bias = m.bias ? 1 : 0;
  // QKV h·q + q (q = 3h without GQA or head_dim), projection w·h + h (w = a·d, h without head_dim)
  p.attention = h * qkv + m.attention_width() * h + bias * (qkv + h);
  p.norms = 2 * m.norm_width() * h;                  // two norms: γ and β, or γ
  p.ffn = h * fc1 + f * h + bias * (fc1 + h);        // FC1 h·f + f (2f with SwiGLU), FC2 f·h + h
  p.router = m.moe() ? h * m.experts : 0;
  p.embedding = (m.vocab + m.position_rows() + (m.tie_embeddings ? 0 : m.vocab)) * h;
  p.final_norm = m.norm_width() * h;
  return p;
}

namespace {
void check_parallel(const TransformerModel& m, int tp, int ep, const char* who) {
  const std::string w = who;
  if (tp < 1) throw InvalidArgument(w + ": tp must be >= 1");
  if (ep < 1) throw InvalidArgument(w + ": ep must be >= 1");
  if (m.heads % tp != 0) throw InvalidArgument(w + ": heads not divisible by tp");
  if (m.kv() % tp != 0) throw InvalidArgument(w + ": kv_heads not divisible by tp");
  if (m.ffn() % tp != 0) throw InvalidArgument(w + ": ffn_hidden not divisible by tp");
  if (m.experts % ep != 0) throw InvalidArgument(w + ": experts not divisible by ep");
}
}  // namespace

LayerTensorElements layer_tensor_elements(const TransformerModel& m, int tp) {
  check_parallel(m, tp, 1, "layer_tensor_elements");
  const std::int64_t h = m.hidden, f = m.ffn(), t = tp, q = m.qkv_width(), f1 = m.fc1_width();
  const std::int64_t bias = m.bias ? 1 : 0;
  LayerTensorElements e;
  e.qkv = (h * q + bias * q) / t;   // column-parallel: weight and bias split
  e.proj = m.attention_width() * h / t + bias * h;  // row-parallel: the weight split, the bias whole
  e.norms = 2 * m.norm_width() * h;  // two norms, replicated
  e.fc1 = (h * f1 + bias * f1) / t;
  e.fc2 = f * h / t + bias * h;
  e.router = m.moe() ? h * m.experts : 0;  // replicated
  return e;
}

RankParameters rank_parameters(const TransformerModel& m, int tp, int pp, int ep, int stage) {
  if (pp < 1 || m.layers % pp != 0) throw InvalidArgument("rank_parameters: layers not divisible by pp");
  return rank_parameters(m, tp, pp, ep, stage, m.layers / pp);
}

RankParameters rank_parameters(const TransformerModel& m, int tp, int pp, int ep, int stage, std::int64_t layers) {
  check_parallel(m, tp, ep, "rank_parameters");
  if (pp < 1) throw InvalidArgument("rank_parameters: pp must be >= 1");
  if (stage < 0 || stage >= pp) throw InvalidArgument("rank_parameters: stage outside 0..pp-1");
  if (layers < 0 || layers > m.layers) throw InvalidArgument("rank_parameters: stage_layers outside 0..layers");
  const LayerTensorElements e = layer_tensor_elements(m, tp);
  const std::int64_t h = m.hidden, t = tp;
  RankParameters r;
  r.dense = layers * (e.qkv + e.proj + e.norms + e.router);
  if (m.moe()) {
    r.expert = layers * (m.experts / ep) * (e.fc1 + e.fc2);
  } else {
    r.dense += layers * (e.fc1 + e.fc2);
  }
  const std::int64_t word = ceil_div(m.vocab, t) * h;
  if (stage == 0) r.dense += word + m.position_rows() * h;
  if (stage == pp - 1) r.dense += m.norm_width() * h + (pp > 1 || !m.tie_embeddings ? word : 0);
  return r;
}

// ---- model state ---------------------------------------------------------------------------------

Bytes parameter_bytes_per_element(DType dtype) { return bytes_per_element(dtype) == 4 ? 4 : 2; }
Bytes gradient_bytes_per_element(DType dtype) { return parameter_bytes_per_element(dtype); }

ModelStateBytes model_state_bytes(std::int64_t psi, DType dtype, int zero_stage, int n_d) {
  if (psi < 0) throw InvalidArgument("model_state_bytes: negative parameter count");
  if (zero_stage < 0 || zero_stage > 3) throw InvalidArgument("model_state_bytes: zero_stage outside 0..3");
  if (n_d < 1) throw InvalidArgument("model_state_bytes: data-parallel degree must be >= 1");
  // ZeRO §3: K = 12 bytes of optimizer state per parameter for mixed-precision Adam (FP32 master
  // weights, momentum, variance); in pure FP32 the weights are the master copy, so K = 8.
  const bool wide = bytes_per_element(dtype) == 4;
  const Bytes optimizer = wide ? 8 : 12;
  const std::int64_t shard = ceil_div(psi, n_d);
  ModelStateBytes s;
  s.params = parameter_bytes_per_element(dtype) * (zero_stage >= 3 ? shard : psi);
  s.grads = gradient_bytes_per_element(dtype) * (zero_stage >= 2 ? shard : psi);
  s.optimizer = optimizer * (zero_stage >= 1 ? shard : psi);
  return s;
}

// ---- activations ---------------------------------------------------------------------------------

Bytes activation_bytes_per_layer(const TransformerModel& m, std::int64_t micro_batch, int tp,
                                 bool sequence_parallel, Recompute recompute, int cp) {
  if (micro_batch < 1) throw InvalidArgument("activation_bytes_per_layer: micro_batch must be >= 1");
  if (tp < 1) throw InvalidArgument("activation_bytes_per_layer: tp must be >= 1");
  if (cp < 1) throw InvalidArgument("activation_bytes_per_layer: cp must be >= 1");
  // Korthikanti et al. §4.1 count, per layer, what backward needs: elements of the activation dtype
  // (e bytes; the paper's 16-bit e = 2 gives its coefficients) and 1-byte dropout masks.
  const double e = bytes_per_element(m.dtype) == 4 ? 4.0 : 2.0;
  const double lin = m.dtype == DType::FP8 ? 1.0 : e;  // the four linear GEMMs' inputs (model.hpp)
  const Fp8LayerNorms fp8_norms = fp8_layer_norms(m);
  const double qkv_in = fp8_norms.attention ? 1.0 : e, fc1_in = fp8_norms.ffn ? 1.0 : e;
  const double t = tp;
  const double s = d(m.seq_len) / cp;  // this rank's share of the sequence
  const double sbh = s * d(micro_batch) * d(m.hidden);
  // MoE: with balanced routing each token's FFN activations exist top_k times.
  const double sbf = s * d(micro_batch) * d(m.ffn()) * d(m.moe() ? m.top_k : 1);
  const double sb = s * d(micro_batch);
  const double att = d(m.heads) * s * d(m.seq_len) * d(micro_batch);

  if (recompute == Recompute::Full) {
    // Only the layer input survives; with SP it lives sequence-sharded.
    return std::llround(e * sbh / (sequence_parallel ? t : 1.0));
  }
  // Not split by tensor parallelism: the two LayerNorm inputs, the QKV and FC1 inputs (elements) and
  // the two hidden-size dropout masks. 4e + 2 = 10 for e = 2. An eager RMSNorm keeps, in place of its
  // input, the FP32 copy of it that pow and the normalising product saved and the normalised x̂ that γ's
  // product saved (eager_rms_bytes below): 4 + e.
  const double norm_saved = eager_rms_norm(m) ? 4 + e : e;
  double replicated = (2 * norm_saved + qkv_in + fc1_in) * sbh + (m.dropout ? 2 * sbh : 0);
  // Split over heads / FFN columns: Q, K, V (q = qkv_width columns: 3h, fewer with grouped-query
  // attention), the projection input (a·d columns: h without head_dim), the activation's input (f
  // columns, 2f with SwiGLU's gate) and FC2's input. e·(4·sbh + 2·sbf) = 24·sbh for e = 2, f = 4h,
  // multi-head attention and GeLU.
  // Unfused SwiGLU keeps its SiLU output too (activation_fwd): sbf more.
  const double silu_saved = m.activation == FfnActivation::Swiglu && !m.fused_elementwise ? sbf : 0;
  double split = e * (sb * d(m.qkv_width()) + sbf * d(m.fc1_width()) / d(m.ffn()) + silu_saved) +
                 lin * (sb * d(m.attention_width()) + sbf);
  // The s²-sized attention core: softmax output, its dropout mask, dropout output (5·a·s²·b; without
  // dropout the softmax output alone, which ·V reads); a flash kernel keeps only the FP32 log-sum-exp of
  // each score row.
  if (recompute == Recompute::None) {
    split += is_flash(m.attention) ? 4 * d(m.heads) * sb : (m.dropout ? 2 * e + 1 : e) * att;
  }
  // Sequence parallelism shards the replicated part over the tensor group as well.
  if (sequence_parallel) replicated /= t;
  return std::llround(replicated + split / t);
}

Bytes loss_activation_bytes(const TransformerModel& m, std::int64_t micro_batch, int tp, int cp) {
  if (micro_batch < 1 || tp < 1 || cp < 1) throw InvalidArgument("loss_activation_bytes: micro_batch, tp and cp must be >= 1");
  const double tokens = d(micro_batch) * d(m.seq_len) / cp;
  const double logits = tokens * d(ceil_div(m.vocab, tp));
  if (m.loss == LossImpl::Fused) return std::llround(logits * d(bytes_per_element(activation_dtype(m.dtype))) + 4 * tokens);
  return std::llround(logits * 4);
}

// ---- ops -----------------------------------------------------------------------------------------

namespace {

using Kind = OpCost::Kind;
using Phase = OpCost::Phase;

// A matmul shape with exact (possibly fractional, for balanced expert routing) dimensions.
struct Shape {
  double m, n, k;
  std::int64_t batch = 1;
};

// C = A·B with A m×k, B k×n. dgrad: dA[m×k] = dC[m×n]·Bᵀ; wgrad: dB[k×n] = Aᵀ[k×m]·dC.
Shape dgrad(const Shape& s) { return {s.m, s.k, s.n, s.batch}; }
Shape wgrad(const Shape& s) { return {s.k, s.n, s.m, s.batch}; }

OpCost matmul(std::string name, Kind kind, Phase phase, const Shape& s, DType dt) {
  OpCost op;
  op.name = std::move(name);
  op.kind = kind;
  op.phase = phase;
  const double b = d(s.batch);
  op.flops = 2 * b * s.m * s.n * s.k;
  // Inputs in dt; the output in dt too, except FP8's, which Transformer Engine writes in BF16.
  const double in = d(bytes_per_element(dt)), out = d(bytes_per_element(activation_dtype(dt)));
  op.bytes = std::llround(b * ((s.m * s.k + s.k * s.n) * in + s.m * s.n * out));
  op.m = std::llround(s.m);
  op.n = std::llround(s.n);
  op.k = std::llround(s.k);
  op.batch = s.batch;
  op.dtype = dt;
  return op;
}

OpCost memory_bound(std::string name, Phase phase, double bytes, double flops, DType dt) {
  OpCost op;
  op.name = std::move(name);
  op.kind = Kind::MemoryBound;
  op.phase = phase;
  op.flops = flops;
  op.bytes = std::llround(bytes);
  op.dtype = dt;
  return op;
}

// Rough element-wise arithmetic per element (forward, backward). These ops are bandwidth-bound by an
// order of magnitude on every device in REFERENCE.md, so only their bytes set their time.
struct Elementwise {
  double fwd, bwd;
};
constexpr Elementwise kLayerNorm{8, 12};      // mean, variance, normalise, scale, shift
constexpr Elementwise kSoftmax{5, 3};         // scale, mask, max, exp, normalise
constexpr Elementwise kDropout{2, 1};
constexpr Elementwise kGelu{10, 14};          // bias + tanh approximation
constexpr Elementwise kSwiglu{5, 10};         // σ(g) (exp, add, reciprocal), g·σ·u; backward recomputes σ
constexpr Elementwise kResidual{3, 2};        // bias, dropout, residual add
constexpr Elementwise kCrossEntropy{5, 2};

// The sizes every op builder needs, for one rank.
struct Dims {
  double tokens;     // b·s, what GEMMs see (SP gathers the sequence before them)
  double tokens_sp;  // b·s/t with sequence parallelism, b·s without: what LayerNorm/dropout-add see
  double h, f_t;     // hidden; FFN columns on this rank, f/t
  double qkv_t;      // QKV output columns on this rank, qkv_width/t
  double fc1_t;      // FC1 output columns on this rank, fc1_width/t (2·f_t with SwiGLU)
  bool swiglu;
  bool bias;         // the GEMMs have biases
  bool dropout;      // TransformerModel::dropout
  double norm_width; // TransformerModel::norm_width: γ and β, or γ
  bool eager_rms;    // an RMSNorm as PyTorch's eager operators (eager_rms_bytes)
  double s, hd;      // sequence (the keys attention sees); head dimension d (h/a without head_dim)
  double att_t;      // the attention's columns on this rank: (a/t)·d
  double kv_t;       // the keys' (or values') columns on this rank: (kv heads/t)·d
  bool ring;         // the cp group passes K and V round a ring (OpContext::cp_ring)
  double sq;         // the rank's queries: s/cp
  std::int64_t heads_batch;  // b·a/t attention matmuls
  double att;        // b·(a/t)·(s/cp)·s attention-score elements on this rank
  double cp;         // context-parallel ranks
  double e;          // activation element bytes
  DType dt;          // the activation dtype (activation_dtype): every op's but the linear GEMMs'
  DType linear_dt;   // the QKV, projection, FC1 and FC2 GEMMs' (the experts'): the model's
  bool fp8;          // linear_dt is FP8: Transformer Engine's quantisation passes (model.hpp)
  bool fp8_current;  // ... with current scaling: an amax pass before each cast (Fp8Recipe)
  // MoE
  std::int64_t local_experts;
  double tokens_per_expert;  // b·s·k·ep/E
  double routed;             // b·s·k tokens through this rank's experts
  double routed_sp;          // b·s·k/t (SP) or b·s·k: the tokens this rank permutes and combines
  double experts;
};

Dims dims(const TransformerModel& m, const OpContext& c, const char* who) {
  check_parallel(m, c.tp, c.ep, who);
  if (c.micro_batch < 1) throw InvalidArgument(std::string(who) + ": micro_batch must be >= 1");
  if (c.cp < 1 || m.seq_len % c.cp != 0) {
    throw InvalidArgument(std::string(who) + ": cp must be >= 1 and divide seq_len");
  }
  if (c.sequence_parallel && (m.seq_len / c.cp) % c.tp != 0) {
    throw InvalidArgument(std::string(who) + ": sequence parallelism needs seq_len/cp divisible by tp");
  }
  Dims x{};
  const double t = c.tp;
  x.cp = c.cp;
  x.tokens = d(c.micro_batch) * d(m.seq_len) / x.cp;
  x.tokens_sp = c.sequence_parallel ? x.tokens / t : x.tokens;
  x.h = d(m.hidden);
  x.f_t = d(m.ffn()) / t;
  x.qkv_t = d(m.qkv_width()) / t;
  x.fc1_t = d(m.fc1_width()) / t;
  x.swiglu = m.activation == FfnActivation::Swiglu;
  x.bias = m.bias;
  x.dropout = m.dropout;
  x.norm_width = d(m.norm_width());
  x.eager_rms = eager_rms_norm(m);
  x.s = d(m.seq_len);
  x.sq = x.s / x.cp;
  x.hd = d(m.head_width());
  x.att_t = d(m.attention_width()) / t;
  x.kv_t = d(m.kv() * m.head_width()) / t;
  x.ring = c.cp_ring && c.cp > 1;
  x.heads_batch = c.micro_batch * (m.heads / c.tp);
  x.att = d(x.heads_batch) * x.sq * x.s;
  x.dt = activation_dtype(m.dtype);
  x.e = d(bytes_per_element(x.dt));
  x.linear_dt = m.dtype;
  x.fp8 = m.dtype == DType::FP8;
  x.fp8_current = x.fp8 && m.fp8_scaling() == Fp8Recipe::Current;
  x.local_experts = m.experts / c.ep;
  x.experts = d(m.experts);
  x.routed = x.tokens * d(m.top_k);
  x.routed_sp = x.tokens_sp * d(m.top_k);
  x.tokens_per_expert = x.routed * d(c.ep) / x.experts;
  return x;
}

// Forward shapes of the layer's matmuls on one rank (Megatron's split: QKV and FC1 column-parallel,
// projection and FC2 row-parallel; attention over the a/t local heads).
struct LayerShapes {
  Shape qkv, scores, context, proj, fc1, fc2, router, expert_fc1, expert_fc2;
};

LayerShapes layer_shapes(const Dims& x) {
  LayerShapes L;
  L.qkv = {x.tokens, x.qkv_t, x.h};
  L.scores = {x.sq, x.s, x.hd, x.heads_batch};   // QKᵀ per head: the rank's queries, every key
  L.context = {x.sq, x.hd, x.s, x.heads_batch};  // P·V per head
  L.proj = {x.tokens, x.h, x.att_t};
  L.fc1 = {x.tokens, x.fc1_t, x.h};
  L.fc2 = {x.tokens, x.h, x.f_t};
  L.router = {x.tokens_sp, x.experts, x.h};
  L.expert_fc1 = {x.tokens_per_expert, x.fc1_t, x.h, x.local_experts};
  L.expert_fc2 = {x.tokens_per_expert, x.h, x.f_t, x.local_experts};
  return L;
}

// An RMSNorm as PyTorch runs it in eager mode, in bytes per element of its input: HF Transformers'
// LlamaRMSNorm and foundation-model-stack's LayerNormParameterized (use_mean False,
// use_high_precision_pow True, as fms/models/llama.py builds ln, ff_ln and dec_norm) both compute
//   xf = x.float(); xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps); y = γ * xf.type_as(x)
// one kernel per operator, each reading and writing HBM (tensors of tokens × h far beyond L2), FP32
// in between: the cast to FP32 (e + 4; no kernel when the model is FP32 already), pow (4 + 4), mean
// (4), the normalising product (4 + 4), the cast back (4 + e) and γ's product (e + e); the per-row
// statistics are h times smaller. Autograd's backward (tools/autograd/derivatives.yaml and
// FunctionsManual.cpp): γ's product gives dγ = (g · x̂) summed over the tokens (2e + e, then e) and
// g · γ (e + e); the two casts' (e + 4, 4 + e); the normalising product g · r (4 + 4) and r's gradient
// (g · xf: 8 + 4, summed over the row: 4); mean's backward expands the row gradient over the row (4);
// pow_backward is grad * (2 * xf.pow(1)), three kernels (pow with exponent 1 copies: 4 + 4; the scalar
// product 4 + 4; the product with grad 8 + 4); and xf's two gradients are summed (8 + 4). Forward
// 20 + 2e (+ 2(e + 4) cast), backward 68 + 6e (+ 2(e + 4)), of which 4e is dγ's: 36, 92 and 8 for BF16,
// against 4 and 10 for the fused kernel (layernorm_fwd, layernorm_bwd).
struct EagerRmsBytes {
  double forward, backward_data, gamma;
};
EagerRmsBytes eager_rms_bytes(double e) {
  const double casts = e < 4 ? 2 * (e + 4) : 0;
  return {.forward = casts + 20 + 2 * e, .backward_data = casts + 68 + 2 * e, .gamma = 4 * e};
}

// A norm's forward: LayerNorm reads its input and γ, β, writes its output; an RMSNorm's kernel the same
// but β; in FP8 where an FP8 GEMM reads it (fp8_out: Transformer Engine's LayerNormLinear,
// layernorm_fwd_fp8). Under current scaling, the output in BF16 with its amax, then a quantise pass that
// reads it and writes FP8 (model.hpp, Fp8Recipe): the two kernels as one op. An eager RMSNorm:
// eager_rms_bytes.
void layernorm_fwd(std::vector<OpCost>& ops, const std::string& name, const Dims& x, bool fp8_out = false) {
  const double n = x.tokens_sp * x.h;
  const double out = !fp8_out ? x.e : x.fp8_current ? x.e + x.e + 1 : 1;
  const double per_element = x.eager_rms ? eager_rms_bytes(x.e).forward : x.e + out;
  ops.push_back(memory_bound(name, Phase::Forward, n * per_element + x.norm_width * x.h * x.e, n * kLayerNorm.fwd, x.dt));
}
// LayerNorm's backward as Megatron-LM's fused kernel runs it (megatron/fused_kernels/
// layer_norm_cuda_kernel.cu, HostLayerNormGradient, the kernel Apex's FusedLayerNorm has; PyTorch's own
// layer_norm backward is two kernels as well): cuComputePartGradGammaBeta reads dy and x for the γ and β
// gradients' partial sums, then cuComputeGradInput reads them again and writes dx (the partial sums,
// 16 rows of h FP32 values, and their final reduction are negligible). `name` is "<norm>_bwd". An
// RMSNorm's kernels (Apex's FusedRMSNorm, Transformer Engine's rmsnorm_bwd) pass over the same tensors
// for γ alone; an eager RMSNorm's passes are eager_rms_bytes'.
void layernorm_bwd(std::vector<OpCost>& ops, const std::string& name, const Dims& x) {
  const double n = x.tokens_sp * x.h;
  const std::string norm = name.substr(0, name.size() - 4);
  const std::string weights = x.norm_width == 1 ? "_gamma_bwd" : "_gamma_beta_bwd";
  const EagerRmsBytes eager = eager_rms_bytes(x.e);
  ops.push_back(memory_bound(norm + weights, Phase::BackwardWeight, n * (x.eager_rms ? eager.gamma : 2 * x.e), 2 * n, x.dt));
  ops.push_back(memory_bound(name, Phase::BackwardData, n * (x.eager_rms ? eager.backward_data : 3 * x.e) + x.h * x.e,
                             n * kLayerNorm.bwd, x.dt));
}
// The gradient of a LayerNorm's input inside a layer: the input also feeds the skip connection, so
// autograd sums the two gradients (torch/csrc/autograd/input_buffer.cpp, InputBuffer::add: a pass that
// reads both and writes the sum).
void grad_sum_bwd(std::vector<OpCost>& ops, const std::string& norm, const Dims& x) {
  const double n = x.tokens_sp * x.h;
  ops.push_back(memory_bound(norm + "_grad_sum_bwd", Phase::BackwardData, 3 * n * x.e, n, x.dt));
}
// A bias added to a GEMM's output of `elements` in `columns` columns as a pass of its own: a read and a
// write. Megatron-LM's column-parallel linear adds its bias after the matmul, "output = output + bias"
// (LinearWithGradAccumulationAndAsyncCommunication.forward, megatron/core/tensor_parallel/layers.py),
// unless the bias is handed on to a fusion (skip_bias_add: the bias-GeLU and bias-dropout-add ones).
void bias_fwd(std::vector<OpCost>& ops, const std::string& name, double elements, double columns, const Dims& x) {
  if (!x.bias) return;
  ops.push_back(memory_bound(name, Phase::Forward, (2 * elements + columns) * x.e, elements, x.dt));
}
// A bias's gradient: the column sum of an output gradient of `elements` in `columns` columns, one pass
// apart from the ops around it however they are fused. Megatron-LM: grad_output.sum(dim=0) in the
// backward of its column-parallel linear (megatron/core/tensor_parallel/layers.py); the bias-GeLU
// fusion's backward returns the unreduced gradient for the bias (megatron/model/fused_bias_gelu.py,
// "return tmp, tmp") and the bias-dropout-add gets attention_bias.expand_as(residual)
// (megatron/model/transformer.py), both summed down to the bias by autograd.
void bias_bwd(std::vector<OpCost>& ops, const std::string& name, double elements, double columns, const Dims& x) {
  if (!x.bias) return;
  ops.push_back(memory_bound(name, Phase::BackwardWeight, (elements + columns) * x.e, elements, x.dt));
}
// The bias-dropout-residual add after a row-parallel GEMM ("attn" or "mlp"). Fused: one pass that reads
// the branch output, the residual and the bias and writes the sum and a 1-byte dropout mask (no mask
// without dropout). Unfused: the bias add (read, write), the dropout (read, write, mask; none without
// dropout) and the residual add (two reads, a write).
void residual_fwd(std::vector<OpCost>& ops, const std::string& prefix, const Dims& x, bool fused) {
  const double n = x.tokens_sp * x.h;
  const double bias = x.bias ? x.h * x.e : 0;
  const double mask = x.dropout ? n : 0;
  if (fused) {
    ops.push_back(memory_bound(prefix + "_residual_fwd", Phase::Forward, 3 * n * x.e + mask + bias, n * kResidual.fwd, x.dt));
    return;
  }
  bias_fwd(ops, prefix + "_bias_fwd", n, x.h, x);
  if (x.dropout) ops.push_back(memory_bound(prefix + "_out_dropout_fwd", Phase::Forward, 2 * n * x.e + n, n * kDropout.fwd, x.dt));
  ops.push_back(memory_bound(prefix + "_residual_fwd", Phase::Forward, 3 * n * x.e, n, x.dt));
}
// Backward: the dropout's (reads the gradient and the mask, writes the branch gradient; the residual
// gradient passes through; without dropout there is no pass: the sum hands its gradient to both
// addends as it is), then the gradient of the bias of `gemm` (the GEMM before it), fused or not.
void residual_bwd(std::vector<OpCost>& ops, const std::string& prefix, const std::string& gemm, const Dims& x) {
  const double n = x.tokens_sp * x.h;
  if (x.dropout) ops.push_back(memory_bound(prefix + "_residual_bwd", Phase::BackwardData, 2 * n * x.e + n, n * kResidual.bwd, x.dt));
  bias_bwd(ops, gemm + "_bias_bwd", n, x.h, x);
}

// The FFN activation with n = tokens × f/t outputs ("fc1" or "expert_fc1" the GEMM before it, whose
// output is n elements, 2n with SwiGLU's gate). Fused bias-activation: one pass; unfused: the bias add
// over FC1's output, then the activation. GeLU reads and writes n (PyTorch's gelu is one kernel either
// way); backward reads the gradient and the input and writes its gradient. SwiGLU fused (Megatron-LM's
// bias_swiglu_impl, megatron/core/fusions/fused_bias_swiglu.py: one scripted kernel each way) reads the
// gate and the up projection (2n) and writes n, and backward reads the gradient and both and writes
// their gradients side by side. Unfused, as Megatron-LM's MLP runs it without bias_activation_fusion
// (megatron/core/transformer/mlp.py, glu: torch.chunk, then activation_func(x[0]) * x[1]): SiLU of the
// gate (n read, n written) and the product with the up projection (2n, n); backward the product's two
// gradients (each reading 2n and writing n), SiLU's (silu_backward: 2n, n) and the chunk's, a cat of the
// two halves into FC1's output gradient (2n, 2n). The SiLU output is then kept for backward as well
// (activation_bytes_per_layer).
void activation_fwd(std::vector<OpCost>& ops, const std::string& gemm, double n, const Dims& x, bool fused) {
  const double in = x.swiglu ? 2 * n : n;
  if (!fused) bias_fwd(ops, gemm + "_bias_fwd", in, x.fc1_t, x);
  if (!x.swiglu) {
    ops.push_back(memory_bound("gelu_fwd", Phase::Forward, 2 * n * x.e, n * kGelu.fwd, x.dt));
  } else if (fused) {
    ops.push_back(memory_bound("swiglu_fwd", Phase::Forward, (in + n) * x.e, n * kSwiglu.fwd, x.dt));
  } else {
    ops.push_back(memory_bound("silu_fwd", Phase::Forward, 2 * n * x.e, n * (kSwiglu.fwd - 1), x.dt));
    ops.push_back(memory_bound("swiglu_fwd", Phase::Forward, 3 * n * x.e, n, x.dt));
  }
}
void activation_bwd(std::vector<OpCost>& ops, const std::string& gemm, double n, const Dims& x, bool fused) {
  const double in = x.swiglu ? 2 * n : n;
  if (!x.swiglu) {
    ops.push_back(memory_bound("gelu_bwd", Phase::BackwardData, 3 * n * x.e, n * kGelu.bwd, x.dt));
  } else if (fused) {
    ops.push_back(memory_bound("swiglu_bwd", Phase::BackwardData, (n + 2 * in) * x.e, n * kSwiglu.bwd, x.dt));
  } else {
    ops.push_back(memory_bound("swiglu_bwd", Phase::BackwardData, 6 * n * x.e, 2 * n, x.dt));
    ops.push_back(memory_bound("silu_bwd", Phase::BackwardData, 3 * n * x.e, n * (kSwiglu.bwd - 2), x.dt));
    ops.push_back(memory_bound("swiglu_cat_bwd", Phase::BackwardData, 2 * in * x.e, 0, x.dt));
  }
  bias_bwd(ops, gemm + "_bias_bwd", in, x.fc1_t, x);
}

// Transformer Engine's FP8 quantisation around a linear GEMM (model.hpp; nothing unless x.fp8), over
// the `elements` the GEMM reads (in) or whose gradient it receives (out), the whole sequence's under
// sequence parallelism. An FP8 element is one byte; a transpose reads and writes one.
// Under current scaling every cast first reads what it casts for its amax (model.hpp, Fp8Recipe): the
// bytes of that pass, counted in the cast's op.
double fp8_amax_read(double elements, const Dims& x) { return x.fp8_current ? elements * x.e : 0; }
// Forward, for an input no LayerNorm wrote in FP8: cast_to_fp8, or fp8_cast_transpose_fused, which also
// writes the transpose the weight gradient reads (Linear does that without sequence parallelism).
void fp8_input_cast_fwd(std::vector<OpCost>& ops, const std::string& gemm, double in, const Dims& x, bool transpose) {
  if (!x.fp8) return;
  const double bytes = in * (x.e + (transpose ? 2 : 1)) + fp8_amax_read(in, x);
  ops.push_back(memory_bound(gemm + "_cast_fwd", Phase::Forward, bytes, in, x.dt));
}
// Backward: the transpose of an FP8 input the forward did not transpose (tex.fp8_transpose), for the
// weight gradient.
void fp8_input_transpose_bwd(std::vector<OpCost>& ops, const std::string& gemm, double in, const Dims& x) {
  if (!x.fp8) return;
  ops.push_back(memory_bound(gemm + "_input_transpose_bwd", Phase::BackwardWeight, 2 * in, 0, x.dt));
}
// Backward: the output gradient in FP8 and its transpose. fp8_cast_transpose_fused over all of it; or,
// for a row-parallel GEMM under sequence parallelism (`gathered`), cast_to_fp8 of this rank's 1/t
// shard, which the tensor group then all-gathers, and fp8_transpose of the gathered whole
// (grad_output_preprocess in module/base.py).
void fp8_grad_cast_bwd(std::vector<OpCost>& ops, const std::string& gemm, double out, const Dims& x, bool gathered,
                       int tp) {
  if (!x.fp8) return;
  const double cast = gathered ? out / tp : out;  // what this rank casts: its shard, or all of it
  const double bytes = (gathered ? cast * (x.e + 1) + 2 * out : out * (x.e + 2)) + fp8_amax_read(cast, x);
  ops.push_back(memory_bound(gemm + "_grad_cast_bwd", Phase::BackwardData, bytes, out, x.dt));
}

// FlashAttention over this rank's b·a/t heads (Dao 2023, FlashAttention-2, Algorithms 1 and 2). The
// causal mask leaves the blocks above the diagonal unvisited: half the two matmuls' work,
// 2·b·(a/t)·s²·d FLOPs. Forward reads Q, K, V and writes O and the FP32 log-sum-exp; backward reads
// Q, K, V, O, dO and the log-sum-exp, writes dQ, dK, dV, and runs five matmuls (S = QKᵀ recomputed,
// dV, dP, dQ, dK) against the forward's two: 2.5 × its FLOPs. With context parallelism the rank's s/cp
// queries meet all s keys: 1/cp of the causal work; K, V (and dK, dV) are the whole sequence's, of the
// kv/t key/value heads (grouped-query attention: fewer than the a/t query heads).
// `steps` > 0: that many of a ring's cp steps (Dims::ring), each 1/cp of the work (below), each reading
// the rank's Q-side tensors and one rank's chunk of K and V and writing a partial result of its own.
OpCost flash_attention(const std::string& name, Phase phase, const Dims& x, AttentionImpl impl, double steps = 0) {
  const double qo = x.tokens * x.att_t * x.e;        // one of Q, O, dO, dQ: b·(s/cp)·a·d/t elements
  const double kv = x.tokens * x.cp * x.kv_t * x.e;  // K or V (dK or dV) of the whole sequence: its kv/t heads
  const double lse = 4 * d(x.heads_batch) * x.sq;
  const bool forward = phase != Phase::BackwardData;
  OpCost op = matmul(name, Kind::Attention, phase, {x.sq, x.s, x.hd, x.heads_batch}, x.dt);
  op.flash = true;
  op.flash_kernel = flash_kernel(impl);
  // The whole kernel: one pass over every K and V; ring steps: one chunk of them each.
  const double passes = steps > 0 ? steps : 1, kv_read = steps > 0 ? kv / x.cp : kv;
  op.flops = passes / (steps > 0 ? x.cp : 1) * (forward ? 1.0 : 2.5) * 2 * d(x.heads_batch) * x.sq * x.s * x.hd;
  op.bytes = std::llround(passes * (forward ? 2 * qo + 2 * kv_read + lse : 4 * qo + 4 * kv_read + lse));
  return op;
}

// Context parallelism as a ring (Dims::ring), as Transformer Engine's AttnFuncWithCPAndKVP2P runs it
// (transformer_engine/pytorch/attention/dot_product_attention/context_parallel.py). Each rank holds two
// chunks of the sequence, i and 2cp−1−i, so that the causal work splits evenly: its cp steps are its own
// K and V under the causal mask and each other rank's unmasked over half its rows or half the keys, each
// 1/cp of the rank's work. The ops: the first step, which runs beside the exchange of the next chunk,
// and the other cp − 1 steps, which wait for it (plan_builder.cpp; the steps in between overlap their
// exchanges too, which the one op leaves out). The backward runs them in reverse order, its own chunk
// last; the same two ops stand for it. Each step's kernel is priced at the causal rate of the whole
// op's length (a bound: the unmasked steps run somewhat faster).
void flash_attention_ring(std::vector<OpCost>& ops, const std::string& pass, Phase phase, const Dims& x,
                          AttentionImpl impl) {
  ops.push_back(flash_attention("flash_attn_" + pass, phase, x, impl, 1));
  ops.push_back(flash_attention("flash_attn_ring_" + pass, phase, x, impl, x.cp - 1));
  const double q = x.tokens * x.att_t, kv = x.tokens * x.kv_t;  // the rank's Q (O, dQ) and one chunk of K (V)
  // A step past the first touches every row of the output when the chunk it saw came before both of the
  // rank's chunks, and the second half otherwise: 3/4 of the rows on average over the ranks.
  const double rows = 0.75 * (x.cp - 1);
  if (phase != Phase::BackwardData) {
    // The partial outputs merged in FP32 (flash_attn_fwd_out_correction_init, _out_correction,
    // _second_half_out_correction): the first step's scaled into an FP32 output (e read, 4 written),
    // each other step's added in (4 + e read, 4 written), the result cast back (4 read, e written).
    ops.push_back(memory_bound("attn_out_correction_" + pass, phase, q * ((x.e + 4) + rows * (8 + x.e) + (4 + x.e)),
                               q * (1 + 2 * rows), x.dt));
  } else {
    // Each step's dQ added into the rank's dQ and its dK, dV into the ones that travel with that chunk
    // (read both, write one: 3e an element; the first step's copy counted as an add).
    ops.push_back(memory_bound("attn_grad_accumulate_" + pass, phase, 3 * x.e * (x.cp * q + 2 * x.cp * kv),
                               x.cp * (q + 2 * kv), x.dt));
  }
}

// The attention core between qkv and proj, forward (its ops are what selective recomputation re-runs).
void attention_core_fwd(std::vector<OpCost>& ops, const TransformerModel& m, const Dims& x,
                        const LayerShapes& L) {
  if (is_flash(m.attention) && x.ring) {
    flash_attention_ring(ops, "fwd", Phase::Forward, x, m.attention);
    return;
  }
  if (is_flash(m.attention)) {
    ops.push_back(flash_attention("flash_attn_fwd", Phase::Forward, x, m.attention));
    return;
  }
  if (m.positions == Positions::Alibi) {
    // ALiBi as BLOOM's Megatron-DeepSpeed runs it (megatron/model/transformer.py, ParallelAttention):
    // the bias, one row per (sequence, head) of shape [b·a/t, 1, s], is the `input` of torch.baddbmm
    // with beta 1, so PyTorch writes it broadcast over the whole scores tensor and the QKᵀ GEMM reads it
    // back to add to (cuBLAS reads C when beta is not 0; without ALiBi beta is 0 and it does not).
    ops.push_back(memory_bound("attn_alibi_fwd", Phase::Forward, 2 * x.att * x.e, x.att, x.dt));
  }
  ops.push_back(matmul("attn_scores_fwd", Kind::Attention, Phase::Forward, L.scores, x.dt));
  if (m.attention == AttentionImpl::Unfused) {
    // Scale (scores / sqrt(d)) and causal mask (masked_fill), each a read and a write of the scores.
    ops.push_back(memory_bound("attn_scale_fwd", Phase::Forward, 2 * x.att * x.e, x.att, x.dt));
    ops.push_back(memory_bound("attn_mask_fwd", Phase::Forward, 2 * x.att * x.e, x.att, x.dt));
  }
  ops.push_back(memory_bound("softmax_fwd", Phase::Forward, 2 * x.att * x.e, x.att * kSoftmax.fwd, x.dt));
  if (x.dropout) ops.push_back(memory_bound("attn_dropout_fwd", Phase::Forward, 2 * x.att * x.e + x.att, x.att * kDropout.fwd, x.dt));
  ops.push_back(matmul("attn_context_fwd", Kind::Attention, Phase::Forward, L.context, x.dt));
  // The batched ·V leaves heads outermost, [b, a/t, s, h/a]; the projection wants [s, b, h/t]: Megatron-LM's
  // CoreAttention copies it over, context_layer.permute(2, 0, 1, 3).contiguous() (megatron/model/
  // transformer.py). Its backward is a view.
  const double context = x.tokens * x.att_t;
  ops.push_back(memory_bound("attn_context_permute_fwd", Phase::Forward, 2 * context * x.e, 0, x.dt));
}

void attention_core_bwd(std::vector<OpCost>& ops, const TransformerModel& m, const Dims& x) {
  if (is_flash(m.attention) && x.ring) {
    flash_attention_ring(ops, "bwd", Phase::BackwardData, x, m.attention);
    return;
  }
  if (is_flash(m.attention)) {
    ops.push_back(flash_attention("flash_attn_bwd", Phase::BackwardData, x, m.attention));
    return;
  }
  const DType dt = x.dt;
  // O = P·V: dP = dO·Vᵀ (s×s, inner d), dV = Pᵀ·dO (s×d, inner s) — each the forward's FLOPs.
  ops.push_back(matmul("attn_context_dgrad_probs", Kind::Attention, Phase::BackwardData,
                       {x.sq, x.s, x.hd, x.heads_batch}, dt));
  ops.push_back(matmul("attn_context_dgrad_v", Kind::Attention, Phase::BackwardData, {x.s, x.hd, x.sq, x.heads_batch},
                       dt));
  if (x.dropout) ops.push_back(memory_bound("attn_dropout_bwd", Phase::BackwardData, 2 * x.att * x.e + x.att, x.att * kDropout.bwd, dt));
  ops.push_back(memory_bound("softmax_bwd", Phase::BackwardData, 3 * x.att * x.e, x.att * kSoftmax.bwd, dt));
  if (m.attention == AttentionImpl::Unfused) {
    ops.push_back(memory_bound("attn_mask_bwd", Phase::BackwardData, 2 * x.att * x.e, x.att, dt));
    ops.push_back(memory_bound("attn_scale_bwd", Phase::BackwardData, 2 * x.att * x.e, x.att, dt));
  }
  // S = Q·Kᵀ: dQ = dS·K, dK = dSᵀ·Q (s×d, inner s).
  ops.push_back(matmul("attn_scores_dgrad_q", Kind::Attention, Phase::BackwardData, {x.sq, x.hd, x.s, x.heads_batch},
                       dt));
  ops.push_back(matmul("attn_scores_dgrad_k", Kind::Attention, Phase::BackwardData, {x.s, x.hd, x.sq, x.heads_batch},
                       dt));
  // Q, K and V are views of the QKV GEMM's output (split_tensor_along_last_dim, torch.split): autograd
  // concatenates their three gradients into one for the GEMM (split_backward: at::cat), a read and a write.
  const double qkv = x.tokens * x.qkv_t;
  ops.push_back(memory_bound("qkv_grad_cat_bwd", Phase::BackwardData, 2 * qkv * x.e, 0, dt));
}

// RoPE (Positions::Rope) on this rank's queries and keys after the QKV GEMM, or on their gradients in
// backward (the inverse rotation): the b·s/cp tokens of the a/t query heads and the kv/t key heads, an op
// each, as the model's RopeImpl runs it. Bytes per element of e bytes:
//   fused    — read and write: 2e, and the FP32 frequencies (s/cp × head dimension) read;
//   megatron — t·cos, the rotation's negated half and cat, its ·sin, the sum and the closing cat: 12
//              element reads and writes a forward; autograd's backward 10 (the two products, the
//              negation, the halves' cat, the sum); the frequencies as fused;
//   fms      — to FP32 (e + 4; no kernel when the model is FP32), the broadcast product writing two FP32
//              values an element (4 + 8), their sum (8 + 4), the cast back (4 + e): 36 bytes in BF16,
//              backward the same (the casts' gradients, the product's gradient over the broadcast shape
//              and its sum back to the tensor's, freqs being a buffer without a gradient); each product
//              reads the position's 2×2 FP32 rotation matrices (8 bytes a head-dimension element a
//              token; their per-step gather from the cached table, as small, is left out).
void rope(std::vector<OpCost>& ops, const TransformerModel& m, const Dims& x, Phase phase) {
  if (m.positions != Positions::Rope) return;
  const bool forward = phase != Phase::BackwardData;
  const double queries = x.tokens * x.att_t, keys = x.tokens * x.kv_t;
  double per_element = 0, frequencies = x.sq * x.hd * 4;
  switch (m.rope_impl()) {
    case RopeImpl::Fused: per_element = 2 * x.e; break;
    case RopeImpl::Megatron: per_element = (forward ? 12 : 10) * x.e; break;
    case RopeImpl::Fms:
      per_element = (x.e < 4 ? 2 * (x.e + 4) : 0) + (4 + 8) + (8 + 4);
      frequencies = x.tokens * x.hd * 8;
      break;
  }
  const std::string suffix = forward ? "_fwd" : "_bwd";
  for (const auto& [tensor, n] : {std::pair{"rope_q", queries}, std::pair{"rope_k", keys}}) {
    ops.push_back(memory_bound(tensor + suffix, phase, per_element * n + frequencies, 4 * n, x.dt));
  }
}

}  // namespace

std::vector<OpCost> layer_forward_ops(const TransformerModel& m, const OpContext& c) {
  const Dims x = dims(m, c, "layer_forward_ops");
  const LayerShapes L = layer_shapes(x);
  const DType dt = x.dt, lin = x.linear_dt;
  const bool fused = m.fused_elementwise;
  // Linear's fp8_cast_transpose_fused unless sequence parallelism is on (TE: only with tp > 1; model.hpp).
  const bool transpose = !(c.sequence_parallel && c.tp > 1);
  std::vector<OpCost> ops;
  const Fp8LayerNorms fp8_norms = fp8_layer_norms(m);
  layernorm_fwd(ops, "ln1_fwd", x, fp8_norms.attention);
  ops.push_back(matmul("qkv_fwd", Kind::Gemm, Phase::Forward, L.qkv, lin));
  bias_fwd(ops, "qkv_bias_fwd", x.tokens * x.qkv_t, x.qkv_t, x);
  rope(ops, m, x, Phase::Forward);
  attention_core_fwd(ops, m, x, L);
  fp8_input_cast_fwd(ops, "proj", L.proj.m * L.proj.k, x, transpose);
  ops.push_back(matmul("proj_fwd", Kind::Gemm, Phase::Forward, L.proj, lin));
  residual_fwd(ops, "attn", x, fused);
  layernorm_fwd(ops, "ln2_fwd", x, fp8_norms.ffn);
  if (!m.moe()) {
    const double n = x.tokens * x.f_t;
    ops.push_back(matmul("fc1_fwd", Kind::Gemm, Phase::Forward, L.fc1, lin));
    activation_fwd(ops, "fc1", n, x, fused);
    fp8_input_cast_fwd(ops, "fc2", n, x, transpose);
    ops.push_back(matmul("fc2_fwd", Kind::Gemm, Phase::Forward, L.fc2, lin));
  } else {
    const double logits = x.tokens_sp * x.experts;
    const double n = x.routed * x.f_t;
    ops.push_back(matmul("router_fwd", Kind::Gemm, Phase::Forward, L.router, dt));
    // Softmax over E logits and top-k selection: reads logits, writes k (weight, int64 index) pairs.
    ops.push_back(memory_bound("router_topk_fwd", Phase::Forward, logits * x.e + x.routed_sp * (x.e + 8),
                               logits * kSoftmax.fwd, dt));
    ops.push_back(memory_bound("expert_permute_fwd", Phase::Forward, 2 * x.routed_sp * x.h * x.e, 0, dt));
    // The experts' inputs are no LayerNorm's output, and no sequence is split among an expert's ranks.
    fp8_input_cast_fwd(ops, "expert_fc1", x.routed * x.h, x, true);
    ops.push_back(matmul("expert_fc1_fwd", Kind::Gemm, Phase::Forward, L.expert_fc1, lin));
    activation_fwd(ops, "expert_fc1", n, x, fused);
    fp8_input_cast_fwd(ops, "expert_fc2", n, x, true);
    ops.push_back(matmul("expert_fc2_fwd", Kind::Gemm, Phase::Forward, L.expert_fc2, lin));
    // Weighted sum of each token's k expert outputs.
    ops.push_back(memory_bound("expert_unpermute_fwd", Phase::Forward, (x.routed_sp + x.tokens_sp) * x.h * x.e,
                               2 * x.routed_sp * x.h, dt));
  }
  residual_fwd(ops, "mlp", x, fused);
  return ops;
}

std::vector<OpCost> layer_backward_ops(const TransformerModel& m, const OpContext& c) {
  const Dims x = dims(m, c, "layer_backward_ops");
  const LayerShapes L = layer_shapes(x);
  const DType dt = x.dt;
  const auto gemm_bwd = [&](std::vector<OpCost>& ops, const std::string& name, const Shape& s, DType t) {
    ops.push_back(matmul(name + "_dgrad", Kind::Gemm, Phase::BackwardData, dgrad(s), t));
    ops.push_back(matmul(name + "_wgrad", Kind::Gemm, Phase::BackwardWeight, wgrad(s), t));
  };
  // A linear GEMM's backward with Transformer Engine's FP8 passes (model.hpp): its output gradient
  // quantised (gathered: row-parallel under sequence parallelism), the transpose of its input where the
  // forward did not write one (`input`: its elements, 0 where it did), then the two GEMMs.
  const auto linear_bwd = [&](std::vector<OpCost>& ops, const std::string& name, const Shape& s, bool gathered,
                              double input) {
    fp8_grad_cast_bwd(ops, name, s.m * s.n * d(s.batch), x, gathered, c.tp);
    if (input > 0) fp8_input_transpose_bwd(ops, name, input, x);
    gemm_bwd(ops, name, s, x.linear_dt);
  };
  const bool sp = c.sequence_parallel && c.tp > 1;  // as Transformer Engine's modules take it
  std::vector<OpCost> ops;
  residual_bwd(ops, "mlp", m.moe() ? "expert_fc2" : "fc2", x);
  if (!m.moe()) {
    const double n = x.tokens * x.f_t;
    linear_bwd(ops, "fc2", L.fc2, sp, sp ? n : 0);
    activation_bwd(ops, "fc1", n, x, m.fused_elementwise);
    linear_bwd(ops, "fc1", L.fc1, false, x.tokens * x.h);  // ln2's FP8 output, transposed here
  } else {
    const double logits = x.tokens_sp * x.experts;
    const double n = x.routed * x.f_t;
    ops.push_back(memory_bound("expert_unpermute_bwd", Phase::BackwardData, (x.routed_sp + x.tokens_sp) * x.h * x.e,
                               2 * x.routed_sp * x.h, dt));
    linear_bwd(ops, "expert_fc2", L.expert_fc2, false, 0);
    activation_bwd(ops, "expert_fc1", n, x, m.fused_elementwise);
    linear_bwd(ops, "expert_fc1", L.expert_fc1, false, 0);
    ops.push_back(memory_bound("expert_permute_bwd", Phase::BackwardData, 2 * x.routed_sp * x.h * x.e, 0, dt));
    ops.push_back(memory_bound("router_topk_bwd", Phase::BackwardData, 2 * logits * x.e + x.routed_sp * x.e,
                               logits * kSoftmax.bwd, dt));
    gemm_bwd(ops, "router", L.router, dt);
  }
  layernorm_bwd(ops, "ln2_bwd", x);
  grad_sum_bwd(ops, "ln2", x);
  residual_bwd(ops, "attn", "proj", x);
  linear_bwd(ops, "proj", L.proj, sp, sp ? L.proj.m * L.proj.k : 0);
  attention_core_bwd(ops, m, x);
  rope(ops, m, x, Phase::BackwardData);
  linear_bwd(ops, "qkv", L.qkv, false, x.tokens * x.h);  // ln1's FP8 output, transposed here
  bias_bwd(ops, "qkv_bias_bwd", x.tokens * x.qkv_t, x.qkv_t, x);
  layernorm_bwd(ops, "ln1_bwd", x);
  grad_sum_bwd(ops, "ln1", x);
  return ops;
}

std::vector<OpCost> layer_recompute_ops(const TransformerModel& m, const OpContext& c, Recompute r) {
  std::vector<OpCost> out;
  if (r == Recompute::None) return out;
  // Selective recomputation (Korthikanti et al. §5) re-runs only the attention core, whose s²-sized
  // activations dominate memory but cost few FLOPs; full re-runs the whole forward pass.
  std::vector<OpCost> ops;
  if (r == Recompute::Selective) {
    const Dims x = dims(m, c, "layer_recompute_ops");
    attention_core_fwd(ops, m, x, layer_shapes(x));
  } else {
    ops = layer_forward_ops(m, c);
  }
  for (OpCost op : ops) {
    op.name = op.name.substr(0, op.name.size() - 4) + "_recompute";  // "_fwd" -> "_recompute"
    op.phase = Phase::Recompute;
    out.push_back(std::move(op));
  }
  return out;
}

std::vector<OpCost> embedding_forward_ops(const TransformerModel& m, const OpContext& c) {
  const Dims x = dims(m, c, "embedding_forward_ops");
  const double n = x.tokens * x.h;
  const double n_sp = x.tokens_sp * x.h;
  std::vector<OpCost> ops;
  // Vocabulary-parallel lookup: every rank reads its int64 token ids, gathers the ~1/t of the rows that
  // fall in its shard and writes the whole (masked) output, which the TP all-reduce then sums.
  ops.push_back(memory_bound("embedding_lookup_fwd", Phase::Forward, x.tokens * 8 + n / c.tp * x.e + n * x.e, 0, x.dt));
  // Learned positions: the position embedding add and dropout (reads both inputs, writes the output and
  // a 1-byte mask); RoPE: the dropout alone (one input). Without dropout: the positions' add alone
  // (reads both, writes the sum), or nothing.
  const bool learned = m.positions == Positions::Learned;
  const double inputs = learned ? 2 : 1;
  if (x.dropout) {
    ops.push_back(memory_bound("embedding_dropout_fwd", Phase::Forward, (inputs + 1) * n_sp * x.e + n_sp,
                               n_sp * kResidual.fwd, x.dt));
  } else if (learned) {
    ops.push_back(memory_bound("embedding_positions_fwd", Phase::Forward, 3 * n_sp * x.e, n_sp, x.dt));
  }
  return ops;
}

std::vector<OpCost> embedding_backward_ops(const TransformerModel& m, const OpContext& c) {
  const Dims x = dims(m, c, "embedding_backward_ops");
  const double n = x.tokens * x.h;
  const double n_sp = x.tokens_sp * x.h;
  std::vector<OpCost> ops;
  // Dropout backward, also accumulating the learned position embedding's gradient (a read and a write
  // of it; none with RoPE). Without dropout: that accumulation alone (the gradient read, the position
  // gradient written), or nothing.
  const bool learned = m.positions == Positions::Learned;
  const double position_grad = learned ? 1 : 0;
  if (x.dropout) {
    ops.push_back(memory_bound("embedding_dropout_bwd", Phase::BackwardData, (2 + position_grad) * n_sp * x.e + n_sp,
                               n_sp * kResidual.bwd, x.dt));
  } else if (learned) {
    ops.push_back(memory_bound("embedding_positions_bwd", Phase::BackwardWeight, 2 * n_sp * x.e, n_sp, x.dt));
  }
  // Scatter-add of the output gradient into this rank's vocabulary rows (read-modify-write).
  ops.push_back(memory_bound("embedding_wgrad", Phase::BackwardWeight, n * x.e + 2 * n / c.tp * x.e, n / c.tp, x.dt));
  return ops;
}

namespace {
// Bytes a loss implementation moves per logit (LossImpl), forward or backward, for logits of e bytes.
double loss_bytes(LossImpl loss, bool forward, double e) {
  const double cast = e < 4 ? e + 4 : 0;  // to FP32 and back: read one dtype, write the other
  switch (loss) {
    case LossImpl::Megatron: return forward ? cast + 4 + 8 + 8 + 4 + 8 : 8 + cast;  // max, sub, exp, sum, div; mul
    case LossImpl::Pytorch: return forward ? cast + 8 : 4 + 12 + cast;  // log_softmax; zeros, its backward
    case LossImpl::Fused: return forward ? e : 2 * e;
  }
  return 2 * e;
}

Shape lm_head_shape(const TransformerModel& m, const OpContext& c, const Dims& x) {
  return {x.tokens, d(ceil_div(m.vocab, c.tp)), x.h};
}
}  // namespace

std::vector<OpCost> head_forward_ops(const TransformerModel& m, const OpContext& c) {
  const Dims x = dims(m, c, "head_forward_ops");
  const Shape s = lm_head_shape(m, c, x);
  const double logits = x.tokens * s.n;
  std::vector<OpCost> ops;
  layernorm_fwd(ops, "final_ln_fwd", x);
  ops.push_back(matmul("lm_head_fwd", Kind::Gemm, Phase::Forward, s, x.dt));
  // The vocabulary-parallel cross-entropy (LossImpl's passes), writing one FP32 loss per token.
  ops.push_back(memory_bound("cross_entropy_fwd", Phase::Forward, logits * loss_bytes(m.loss, true, x.e) + 4 * x.tokens,
                             logits * kCrossEntropy.fwd, x.dt));
  return ops;
}

std::vector<OpCost> head_backward_ops(const TransformerModel& m, const OpContext& c) {
  const Dims x = dims(m, c, "head_backward_ops");
  const Shape s = lm_head_shape(m, c, x);
  const double logits = x.tokens * s.n;
  std::vector<OpCost> ops;
  ops.push_back(memory_bound("cross_entropy_bwd", Phase::BackwardData, logits * loss_bytes(m.loss, false, x.e),
                             logits * kCrossEntropy.bwd, x.dt));
  ops.push_back(matmul("lm_head_dgrad", Kind::Gemm, Phase::BackwardData, dgrad(s), x.dt));
  // The LM head shares the word embedding: this gradient accumulates into the embedding's.
  ops.push_back(matmul("lm_head_wgrad", Kind::Gemm, Phase::BackwardWeight, wgrad(s), x.dt));
  layernorm_bwd(ops, "final_ln_bwd", x);
  return ops;
}

std::array<std::vector<OpCost>, kOpLists> model_op_lists(const TransformerModel& m, const OpContext& c, Recompute r) {
  return {layer_forward_ops(m, c),     layer_backward_ops(m, c), layer_recompute_ops(m, c, r), embedding_forward_ops(m, c),
          embedding_backward_ops(m, c), head_forward_ops(m, c),   head_backward_ops(m, c)};
}

PoolFootprint cpu_pool_footprint(const OpCost& cost) {
  const bool technique = cost.kernel != OpCost::Kernel::None && cost.kernel != OpCost::Kernel::Lora;
  const bool sparse =
      cost.is_matmul() && (cost.sparsity == OpCost::Sparsity::Block || cost.sparsity == OpCost::Sparsity::TwoFour);
  if (technique || sparse) return {};
  if (cost.is_matmul()) return {cost.batch * (cost.m * cost.k + cost.k * cost.n), cost.batch * cost.m * cost.n};
  return {cost.bytes / 8, cost.bytes / 8};
}

OpCost matmul_cost(std::string name, OpCost::Kind kind, OpCost::Phase phase, std::int64_t m, std::int64_t n,
                   std::int64_t k, std::int64_t batch, DType dtype) {
  return matmul(std::move(name), kind, phase, Shape{d(m), d(n), d(k), batch}, dtype);
}

double matmul_flops(const std::vector<OpCost>& ops) {
  double sum = 0;
  for (const OpCost& op : ops) {
    if (op.is_matmul()) sum += op.flops;
  }
  return sum;
}

double training_flops(const TransformerModel& model, std::int64_t global_batch, Recompute r) {
  if (global_batch < 1) throw InvalidArgument("training_flops: global_batch must be >= 1");
  // Per sequence on one unsplit rank; every matmul is linear in the sequence count. The algorithm's
  // FLOPs: counted on the fused attention's ops whatever the implementation.
  TransformerModel m = model;
  m.attention = AttentionImpl::Fused;
  const OpContext c;
  const double layer = matmul_flops(layer_forward_ops(m, c)) + matmul_flops(layer_backward_ops(m, c)) +
                       matmul_flops(layer_recompute_ops(m, c, r));
  const double ends = matmul_flops(embedding_forward_ops(m, c)) + matmul_flops(embedding_backward_ops(m, c)) +
                      matmul_flops(head_forward_ops(m, c)) + matmul_flops(head_backward_ops(m, c));
  return d(global_batch) * (d(m.layers) * layer + ends);
}

// ---- JSON ----------------------------------------------------------------------------------------
// The edge: the rest of this file never sees JSON.

namespace {

using nlohmann::json;
using json_read::fail;
using json_read::check_keys;
using json_read::read_int;
using json_read::read_bool;
using json_read::read_name;
using json_read::read_named;
using json_read::require_object;

constexpr std::int64_t kMaxSize = std::int64_t{1} << 40;  // far above any model, catches stray digits

}  // namespace

TransformerModel model_from_json(const json& j, const std::string& path) {
  const std::vector<std::string> accepted = {"preset", "name",    "layers", "hidden",  "heads", "kv_heads", "head_dim", "ffn_hidden", "activation", "bias",
                                             "seq_len", "vocab", "experts", "top_k", "dtype", "attention", "loss", "rope",
                                             "positions", "norm", "tie_embeddings", "fused_elementwise", "fused_optimizer",
                                             "fused_grad_accumulation", "dropout", "fp8_recipe"};
  require_object(j, path);
  check_keys(j, path, accepted);
  TransformerModel m;
  const bool preset = j.contains("preset");
  if (preset) m = read_named(j["preset"], path + "/preset", model_preset);
  const auto size = [&](const char* key, std::int64_t& field, bool required) {
    if (j.contains(key)) {
      field = read_int(j[key], path + "/" + key, 1, kMaxSize);
    } else if (required && !preset) {
      fail(path + "/" + key, "required key is missing (or give \"preset\": one of " + join(model_preset_names()) + ")");
    }
  };
  if (j.contains("name")) m.name = read_name(j["name"], path + "/name");
  size("layers", m.layers, true);
  size("hidden", m.hidden, true);
  size("heads", m.heads, true);
  size("seq_len", m.seq_len, true);
  size("vocab", m.vocab, true);
  size("experts", m.experts, false);
  size("top_k", m.top_k, false);
  if (j.contains("ffn_hidden")) {
    m.ffn_hidden = read_int(j["ffn_hidden"], path + "/ffn_hidden", 1, kMaxSize);
  } else if (!preset || j.contains("hidden")) {
    m.ffn_hidden = 4 * m.hidden;  // a new hidden size with no ffn_hidden: the GPT default follows it
  }
  if (j.contains("head_dim")) m.head_dim = read_int(j["head_dim"], path + "/head_dim", 1, kMaxSize);
  if (j.contains("kv_heads")) {
    m.kv_heads = read_int(j["kv_heads"], path + "/kv_heads", 1, kMaxSize);
  } else if (!preset || j.contains("heads")) {
    m.kv_heads = m.heads;  // multi-head attention unless said otherwise
  }
  if (j.contains("activation")) m.activation = read_named(j["activation"], path + "/activation", parse_activation);
  if (j.contains("bias")) m.bias = read_bool(j["bias"], path + "/bias");
  if (j.contains("tie_embeddings")) m.tie_embeddings = read_bool(j["tie_embeddings"], path + "/tie_embeddings");
  if (j.contains("positions")) m.positions = read_named(j["positions"], path + "/positions", parse_positions);
  if (j.contains("norm")) m.norm = read_named(j["norm"], path + "/norm", parse_norm);
  if (j.contains("dtype")) m.dtype = read_named(j["dtype"], path + "/dtype", parse_dtype);
  if (j.contains("attention")) m.attention = read_named(j["attention"], path + "/attention", parse_attention);
  if (j.contains("loss")) m.loss = read_named(j["loss"], path + "/loss", parse_loss);
  if (j.contains("rope")) m.rope = read_named(j["rope"], path + "/rope", parse_rope);
  if (j.contains("fp8_recipe")) m.fp8_recipe = read_named(j["fp8_recipe"], path + "/fp8_recipe", parse_fp8_recipe);
  if (j.contains("fused_elementwise")) m.fused_elementwise = read_bool(j["fused_elementwise"], path + "/fused_elementwise");
  if (j.contains("fused_optimizer")) m.fused_optimizer = read_bool(j["fused_optimizer"], path + "/fused_optimizer");
  if (j.contains("fused_grad_accumulation")) {
    m.fused_grad_accumulation = read_bool(j["fused_grad_accumulation"], path + "/fused_grad_accumulation");
  }
  if (j.contains("dropout")) m.dropout = read_bool(j["dropout"], path + "/dropout");
  validate(m, path);
  return m;
}

json model_to_json(const TransformerModel& m) {
  json j{{"name", m.name},
         {"layers", m.layers},
         {"hidden", m.hidden},
         {"heads", m.heads},
         {"kv_heads", m.kv()},
         {"ffn_hidden", m.ffn()},
         {"activation", activation_name(m.activation)},
         {"positions", positions_name(m.positions)},
         {"norm", norm_name(m.norm)},
         {"bias", m.bias},
         {"tie_embeddings", m.tie_embeddings},
         {"seq_len", m.seq_len},
         {"vocab", m.vocab},
         {"experts", m.experts},
         {"top_k", m.top_k},
         {"dtype", dtype_name(m.dtype)},
         {"attention", attention_name(m.attention)},
         {"loss", loss_name(m.loss)},
         {"fused_elementwise", m.fused_elementwise},
         {"fused_optimizer", m.fused_optimizer},
         {"fused_grad_accumulation", m.fused_grad_accumulation},
         {"dropout", m.dropout}};
  if (m.head_dim > 0) j["head_dim"] = m.head_dim;  // unset: hidden/heads, which follows hidden and heads
  if (m.rope) j["rope"] = rope_name(*m.rope);
  if (m.fp8_recipe) j["fp8_recipe"] = fp8_recipe_name(*m.fp8_recipe);
  return j;
}

}  // namespace twinbed
