// Layout checks follow the constraints Megatron-LM enforces (Narayanan et al. SC'21; Megatron-LM's
// arguments.py and schedules.py), so a layout accepted here is one Megatron would run.
#include "twinbed/core/layout.hpp"

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "enum_names.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"

namespace twinbed {

namespace {

constexpr std::pair<PipelineSchedule, const char*> kSchedules[] = {
    {PipelineSchedule::GPipe, "gpipe"},
    {PipelineSchedule::OneFOneB, "1f1b"},
    {PipelineSchedule::Interleaved1F1B, "interleaved-1f1b"},
};

using json_read::join;

std::string str(std::int64_t v) { return std::to_string(v); }

// "accepted values: 1, 2, 4, 8": the divisors of n accepted by `ok`, for error messages.
template <class Pred>
std::string divisors(std::int64_t n, Pred ok) {
  std::vector<std::string> out;
  for (std::int64_t v = 1; v <= n && out.size() < 32; ++v) {
    if (n % v == 0 && ok(v)) out.push_back(str(v));
  }
  return out.empty() ? "none" : join(out);
}

}  // namespace

std::string schedule_name(PipelineSchedule s) { return enum_names::name_of(kSchedules, s, "schedule_name: not a PipelineSchedule"); }
std::vector<std::string> schedule_names() { return enum_names::names(kSchedules); }
PipelineSchedule parse_schedule(const std::string& name) { return enum_names::parse(kSchedules, name, "pipeline schedule"); }

namespace {
constexpr std::pair<GradDtype, const char*> kGradDtypes[] = {{GradDtype::Model, "model"}, {GradDtype::FP32, "fp32"}};
constexpr std::pair<BackwardPrefetch, const char*> kBackwardPrefetches[] = {{BackwardPrefetch::Pre, "pre"},
                                                                           {BackwardPrefetch::Post, "post"}};
}  // namespace

std::string grad_dtype_name(GradDtype g) { return enum_names::name_of(kGradDtypes, g, "grad_dtype_name: not a GradDtype"); }
std::vector<std::string> grad_dtype_names() { return enum_names::names(kGradDtypes); }
GradDtype parse_grad_dtype(const std::string& name) { return enum_names::parse(kGradDtypes, name, "gradient dtype"); }
constexpr std::pair<CpComm, const char*> kCpComms[] = {{CpComm::AllGather, "allgather"}, {CpComm::P2P, "p2p"}};

std::string cp_comm_name(CpComm c) { return enum_names::name_of(kCpComms, c, "cp_comm_name: not a CpComm"); }
std::vector<std::string> cp_comm_names() { return enum_names::names(kCpComms); }
CpComm parse_cp_comm(const std::string& name) { return enum_names::parse(kCpComms, name, "cp_comm"); }

std::string backward_prefetch_name(BackwardPrefetch b) {
  return enum_names::name_of(kBackwardPrefetches, b, "backward_prefetch_name: not a BackwardPrefetch");
}
std::vector<std::string> backward_prefetch_names() { return enum_names::names(kBackwardPrefetches); }
BackwardPrefetch parse_backward_prefetch(const std::string& name) {
  return enum_names::parse(kBackwardPrefetches, name, "backward prefetch");
}

Layout::LayerRange Layout::chunk_layers(const TransformerModel& m, int virtual_stage) const {
  const std::int64_t per_chunk = pipeline_slots(m) / (static_cast<std::int64_t>(pp) * virtual_stages);
  const std::int64_t skip = embedding_in_split ? 1 : 0;  // the embedding's slot comes first
  const std::int64_t first = std::max<std::int64_t>(0, virtual_stage * per_chunk - skip);
  const std::int64_t end = std::min(m.layers, (virtual_stage + 1) * per_chunk - skip);
  return {first, std::max<std::int64_t>(0, end - first)};
}

std::int64_t Layout::stage_layers(const TransformerModel& m, int stage) const {
  std::int64_t n = 0;
  for (int c = 0; c < virtual_stages; ++c) n += chunk_layers(m, c * pp + stage).count;
  return n;
}

bool Layout::recomputes_layer(const TransformerModel& m, std::int64_t layer) const {
  for (int vs = 0; vs < pp * virtual_stages; ++vs) {
    const LayerRange r = chunk_layers(m, vs);
    if (layer >= r.first && layer < r.first + r.count) return recomputes(layer - r.first);
  }
  return false;  // not a layer of the model
}

std::int64_t Layout::recomputed_layers(const TransformerModel& m) const {
  if (recompute == Recompute::None) return 0;
  if (recompute_layers == 0) return m.layers;
  std::int64_t n = 0;
  for (int vs = 0; vs < pp * virtual_stages; ++vs) {
    n += std::min<std::int64_t>(chunk_layers(m, vs).count, recompute_layers);
  }
  return n;
}

double training_flops(const TransformerModel& model, const Layout& layout) {
  const double none = training_flops(model, layout.global_batch, Recompute::None);
  if (layout.recompute == Recompute::None) return none;
  // training_flops is linear in the layers' count: the recomputation's share is the recomputed layers'.
  const double all = training_flops(model, layout.global_batch, layout.recompute);
  return none + (all - none) * static_cast<double>(layout.recomputed_layers(model)) / static_cast<double>(model.layers);
}

RankParameters rank_parameters(const TransformerModel& model, const Layout& layout, int stage) {
  return rank_parameters(model, layout.tp, layout.pp, layout.ep, stage, layout.stage_layers(model, stage));
}

Bytes gradient_bytes_per_element(const Layout& layout, DType dtype) {
  return layout.grad_dtype == GradDtype::FP32 ? 4 : gradient_bytes_per_element(dtype);
}

namespace {

// The work a plan of this layout would be, estimated before building it: a micro-batch's activations
// must fit the byte counts they are kept in, and the plan's stored ops (one program per stage: per
// micro-batch and chunk its layers' ops and collectives, plus the gradient buckets) must fit in memory.
void check_plan_size(const Layout& l, const TransformerModel& m) {
  const double b = l.micro_batch, s = static_cast<double>(m.seq_len), h = static_cast<double>(m.hidden);
  const double a = static_cast<double>(m.heads), f = static_cast<double>(m.ffn());
  const double w = static_cast<double>(m.qkv_width());
  // Korthikanti et al.'s per-layer activations, s·b·h·(34 + 5·a·s/h) bytes at 16 bits, with the FFN
  // widened to f and the attention to its QKV width: an upper bound of what any op of the layer
  // allocates or moves.
  const double activations = s * b * (34 * std::max({h, f, w}) + 5 * a * s);
  if (activations > kMaxMicroBatchBytes) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "a micro-batch of %d sequences of %.0f tokens would hold about %.3g bytes of activations per layer; "
                  "at most %.0e are accepted", l.micro_batch, s, activations, kMaxMicroBatchBytes);
    throw ConfigError("/layout/micro_batch", buf);
  }
  const OpContext ctx = l.op_context();
  const double per_layer = static_cast<double>(layer_forward_ops(m, ctx).size() + layer_backward_ops(m, ctx).size() +
                                               layer_recompute_ops(m, ctx, l.recompute).size()) + 16 +  // + collectives, allocs
                           (l.tp_comm_overlap ? 10.0 * 2 * l.tp : 0);  // at most 10 GEMMs split, each with its tp - 1 or tp collectives
  const double micro_batches = l.micro_batches();
  double layers = 0, grads = 0;  // the largest stage's layers and 16-bit gradient bytes
  for (int stage = 0; stage < l.pp; ++stage) {
    layers = std::max(layers, static_cast<double>(l.stage_layers(m, stage)));
    grads = std::max(grads, static_cast<double>(rank_parameters(m, l, stage).total()) * 2);
  }
  const double buckets = l.zero_stage == 3 ? 0 : 2 * grads / static_cast<double>(l.bucket_bytes);
  const double ops = static_cast<double>(l.pp) * (micro_batches * (layers * per_layer + 16) + buckets);
  if (ops > kMaxPlanOps) {
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  "the plan would hold about %.3g ops (%d stages × %.0f micro-batches × %.0f layers × %.0f ops, plus %.3g "
                  "gradient buckets per stage); plans of up to %.0e ops (about 1.5 GB) are built: fewer micro-batches or "
                  "layers per stage, or larger buckets",
                  ops, l.pp, micro_batches, layers, per_layer, buckets, kMaxPlanOps);
    throw ConfigError(buckets > micro_batches * layers * per_layer ? "/layout/bucket_MiB" : "/layout/global_batch", buf);
  }
}

}  // namespace

std::vector<std::string> validate(const Layout& l, const TransformerModel& m, int cluster_ranks, int ranks_per_host) {
  if (cluster_ranks < 1) throw InvalidArgument("validate(Layout): cluster_ranks must be >= 1");
  if (ranks_per_host < 1) throw InvalidArgument("validate(Layout): ranks_per_host must be >= 1");
  validate(m, "/model");

  const auto at_least_one = [](int v, const char* field) {
    if (v < 1) throw ConfigError(std::string("/layout/") + field, "must be >= 1, got " + str(v));
  };
  at_least_one(l.dp, "dp");
  at_least_one(l.tp, "tp");
  at_least_one(l.pp, "pp");
  at_least_one(l.ep, "ep");
  at_least_one(l.cp, "cp");
  at_least_one(l.micro_batch, "micro_batch");
  at_least_one(l.global_batch, "global_batch");
  at_least_one(l.virtual_stages, "virtual_stages");
  if (l.zero_stage < 0 || l.zero_stage > 3) {
    throw ConfigError("/layout/zero_stage", "must be one of 0, 1, 2, 3, got " + str(l.zero_stage));
  }
  if (l.bucket_bytes < 1) throw ConfigError("/layout/bucket_MiB", "must be > 0 bytes, got " + str(l.bucket_bytes));
  if (l.overlap_param_gather && l.zero_stage != 1 && l.zero_stage != 2) {
    throw ConfigError("/layout/overlap_param_gather",
                      "overlaps the all-gather of the parameters that ZeRO stages 1 and 2 update in shards; with "
                      "zero_stage " + str(l.zero_stage) + " there is none (" +
                          (l.zero_stage == 3 ? "ZeRO-3 gathers each layer before its forward and backward already"
                                             : "every rank updates its whole copy") +
                          "): set zero_stage to 1 or 2, or overlap_param_gather to false");
  }

  if (l.backward_prefetch == BackwardPrefetch::Post && l.zero_stage != 3) {
    throw ConfigError("/layout/backward_prefetch",
                      "\"post\" times ZeRO-3's gather of each layer's parameters in backward; with zero_stage " +
                          str(l.zero_stage) + " nothing is gathered there: set zero_stage to 3, or backward_prefetch "
                          "to \"pre\"");
  }
  if (l.zero_shard_ranks < 0) throw ConfigError("/layout/zero_shard_ranks", "must be >= 1, got " + str(l.zero_shard_ranks));
  if (l.zero_shard_ranks > 0 && l.zero_shard_ranks != l.grad_ranks()) {
    const std::string ranks = l.cp > 1 ? "dp·cp = " + str(l.grad_ranks()) : "dp = " + str(l.grad_ranks());
    if (l.grad_ranks() % l.zero_shard_ranks != 0) {
      throw ConfigError("/layout/zero_shard_ranks", "must divide the " + ranks + " data-parallel ranks into equal "
                                                    "shard groups, got " + str(l.zero_shard_ranks));
    }
    if (l.zero_stage != 3) {
      throw ConfigError("/layout/zero_shard_ranks",
                        "hybrid sharding (ZeRO-3 within groups of " + str(l.zero_shard_ranks) + " ranks, replicated "
                        "across them) needs zero_stage 3, got " + str(l.zero_stage) +
                            ": set zero_stage to 3, or zero_shard_ranks to \"all\"");
    }
    if (l.ep > 1) {
      throw ConfigError("/layout/zero_shard_ranks", "hybrid sharding of expert parameters is not modelled: set ep to 1, "
                                                    "or zero_shard_ranks to \"all\"");
    }
  }
  if (l.distribute_saved_activations && l.recompute != Recompute::Full) {
    throw ConfigError("/layout/distribute_saved_activations",
                      "splits the layer input that full recomputation checkpoints; with recompute \"" +
                          recompute_name(l.recompute) + "\" there is none: set recompute to \"full\", or "
                          "distribute_saved_activations to false");
  }
  if (l.recompute_layers > 0 && l.recompute != Recompute::Full) {
    throw ConfigError("/layout/recompute_layers",
                      "recomputes the first layers of each model chunk in full (Megatron-LM's --recompute-method "
                      "block); with recompute \"" + recompute_name(l.recompute) + "\" set recompute to \"full\", or "
                      "recompute_layers to \"all\"");
  }
  if (l.distribute_saved_activations && l.sequence_parallel && l.tp > 1) {
    throw ConfigError("/layout/distribute_saved_activations",
                      "with sequence_parallel the checkpointed input is sequence-sharded over the tensor group "
                      "already: set one of sequence_parallel and distribute_saved_activations to false");
  }

  if (l.cp > 1 && l.cp_comm == CpComm::P2P && !is_flash(m.attention)) {
    throw ConfigError("/layout/cp_comm",
                      "\"p2p\" runs a flash kernel per ring step (Transformer Engine's AttnFuncWithCPAndKVP2P); the "
                      "model's attention is \"" + attention_name(m.attention) +
                          "\": set model attention to flash, flash1, flash2, flash3 or cudnn, or cp_comm to \"allgather\"");
  }
  if (l.tp_comm_overlap && !(l.sequence_parallel && l.tp > 1)) {
    throw ConfigError("/layout/tp_comm_overlap",
                      "overlaps the sequence-parallel all-gathers and reduce-scatters with the GEMMs beside them "
                      "(Transformer Engine's userbuffers); with " +
                          std::string(l.tp > 1 ? "sequence_parallel false" : "tp = 1") +
                          " there are none: set sequence_parallel to true with tp >= 2, or tp_comm_overlap to false");
  }

  // Products in 64 bits: each degree can be large on its own.
  const std::int64_t dp = l.dp, tp = l.tp, pp = l.pp, cp = l.cp, v = l.virtual_stages;
  const std::int64_t world = dp * tp * cp * pp;
  if (world != cluster_ranks) {
    std::string hint;
    if (cluster_ranks % (tp * cp * pp) == 0) hint = "; dp = " + str(cluster_ranks / (tp * cp * pp)) + " fits";
    const std::string product = cp > 1 ? "dp·tp·cp·pp = " + str(dp) + "·" + str(tp) + "·" + str(cp) + "·" + str(pp)
                                       : "dp·tp·pp = " + str(dp) + "·" + str(tp) + "·" + str(pp);
    throw ConfigError("/layout/dp", product + " = " + str(world) + " must equal the cluster's " + str(cluster_ranks) +
                                        " ranks" + hint);
  }

  // Tensor parallelism splits heads and key/value heads (QKV column-parallel) and FFN columns (FC1)
  // evenly.
  const std::int64_t tp_limit = std::gcd(std::gcd(m.heads, m.kv()), m.ffn());
  if (m.heads % tp != 0 || m.kv() % tp != 0 || m.ffn() % tp != 0) {
    throw ConfigError("/layout/tp", "tp = " + str(tp) + " must divide heads (" + str(m.heads) + "), kv_heads (" + str(m.kv()) +
                                        ") and ffn_hidden (" + str(m.ffn()) + "); accepted values: " +
                                        divisors(tp_limit, [&](std::int64_t d) { return cluster_ranks % d == 0; }));
  }
  // Context parallelism: each rank two of the sequence's 2·cp chunks (the causal work balanced).
  if (cp > 1 && m.seq_len % (2 * cp) != 0) {
    throw ConfigError("/layout/cp", "cp = " + str(cp) + " splits each sequence into 2·cp = " + str(2 * cp) +
                                        " chunks, but seq_len = " + str(m.seq_len) +
                                        " is not divisible by it; accepted values: " +
                                        divisors(m.seq_len / 2, [&](std::int64_t d) { return cluster_ranks % d == 0; }));
  }
  if (l.sequence_parallel && (m.seq_len / cp) % tp != 0) {
    const std::string tokens = cp > 1 ? "seq_len/cp = " + str(m.seq_len / cp) : "seq_len = " + str(m.seq_len);
    throw ConfigError("/layout/sequence_parallel", "sequence parallelism splits the sequence over tp = " + str(tp) +
                                                       " ranks, but " + tokens + " is not divisible by it");
  }

  // Pipeline: whole layers per stage, and per chunk when interleaved; the embedding and loss take a
  // layer's slot each when the split counts them.
  const std::int64_t slots = l.pipeline_slots(m);
  const std::string what = slots == m.layers ? "layers (" + str(m.layers) + ")"
                                             : "the pipeline's slots (layers + embedding/loss = " + str(slots) + ")";
  if (slots % pp != 0) {
    throw ConfigError("/layout/pp", "pp = " + str(pp) + " must divide " + what +
                                        "; accepted values: " + divisors(slots, [](std::int64_t) { return true; }));
  }
  const bool interleaved = l.schedule == PipelineSchedule::Interleaved1F1B;
  if (interleaved && pp < 2) {
    throw ConfigError("/layout/schedule", "interleaved-1f1b needs pp >= 2; with pp = 1 use \"1f1b\"");
  }
  if (interleaved && v < 2) {
    throw ConfigError("/layout/virtual_stages",
                      "interleaved-1f1b needs virtual_stages >= 2; accepted values: " +
                          divisors(slots / pp, [](std::int64_t d) { return d >= 2; }));
  }
  if (!interleaved && v != 1) {
    throw ConfigError("/layout/virtual_stages", "virtual_stages = " + str(v) + " needs \"schedule\": \"interleaved-1f1b\"; "
                                                "with \"" + schedule_name(l.schedule) + "\" the accepted value is 1");
  }
  if (slots % (pp * v) != 0) {
    throw ConfigError("/layout/virtual_stages",
                      "pp·virtual_stages = " + str(pp * v) + " must divide " + what +
                          "; accepted values: " + divisors(slots / pp, [](std::int64_t d) { return d >= 2; }));
  }

  // Batches: every replica runs a whole number of micro-batches per iteration.
  const std::int64_t per_step = dp * l.micro_batch;
  if (l.global_batch % per_step != 0) {
    throw ConfigError("/layout/global_batch", "global_batch = " + str(l.global_batch) +
                                                  " must be a multiple of dp·micro_batch = " + str(per_step));
  }
  const std::int64_t micro_batches = l.global_batch / per_step;
  if (interleaved && micro_batches % pp != 0) {
    // Megatron's interleaved schedule runs micro-batches in groups of pp.
    throw ConfigError("/layout/global_batch",
                      "interleaved-1f1b needs the micro-batches per pipeline (global_batch / (dp·micro_batch) = " +
                          str(micro_batches) + ") to be a multiple of pp = " + str(pp) +
                          "; accepted global_batch: multiples of " + str(per_step * pp));
  }

  // Experts: ep ranks of the dp·cp ranks that hold a stage's dense parameters share the experts evenly
  // (Megatron-Core's MoE parallel folding; plan_builder.cpp, add_communicators).
  if (l.ep > 1 && !m.moe()) {
    throw ConfigError("/layout/ep", "ep = " + str(l.ep) + " needs an MoE model (experts > 1); accepted value: 1");
  }
  const std::int64_t grad_ranks = l.grad_ranks();
  if (grad_ranks % l.ep != 0 || m.experts % l.ep != 0) {
    throw ConfigError("/layout/ep", "ep = " + str(l.ep) + " must divide " + (cp > 1 ? "dp·cp (" : "dp (") +
                                        str(grad_ranks) + ") and experts (" + str(m.experts) + "); accepted values: " +
                                        divisors(std::gcd(grad_ranks, m.experts), [](std::int64_t) { return true; }));
  }

  check_plan_size(l, m);

  std::vector<std::string> warnings;
  if (tp > ranks_per_host) {
    warnings.push_back("/layout/tp: tp = " + str(tp) + " exceeds the " + str(ranks_per_host) +
                       " ranks per host, so tensor-parallel all-reduces cross the inter-host network");
  }
  if (pp > 1 && micro_batches < pp) {
    warnings.push_back("/layout/global_batch: " + str(micro_batches) + " micro-batches per pipeline for " + str(pp) +
                       " stages: most of each step is pipeline bubble (m >= pp keeps every stage busy at some point)");
  }
  if (l.sequence_parallel && tp == 1) {
    warnings.push_back("/layout/sequence_parallel: has no effect with tp = 1");
  }
  if ((l.embedding_in_split || l.loss_in_split) && pp == 1) {
    warnings.push_back(std::string("/layout/") + (l.embedding_in_split ? "embedding_in_split" : "loss_in_split") +
                       ": has no effect with pp = 1");
  }
  if (l.distribute_saved_activations && tp == 1) {
    warnings.push_back("/layout/distribute_saved_activations: has no effect with tp = 1");
  }
  if (l.overlap_param_gather && dp * cp == 1) {
    warnings.push_back("/layout/overlap_param_gather: has no effect with dp·cp = 1 (no parameters to gather)");
  }
  if (l.zero_stage > 0 && dp * cp == 1) {
    warnings.push_back("/layout/zero_stage: ZeRO stage " + str(l.zero_stage) + " with dp·cp = 1 shards nothing");
  }
  return warnings;
}

ModelStateBytes rank_model_state_bytes(const TransformerModel& model, const Layout& layout, int stage) {
  const RankParameters p = rank_parameters(model, layout, stage);
  const ModelStateBytes dense = model_state_bytes(p.dense, model.dtype, layout.zero_stage, layout.zero_shards());
  const ModelStateBytes expert = model_state_bytes(p.expert, model.dtype, layout.zero_stage, layout.grad_ranks() / layout.ep);
  // model_state_bytes counts gradients in the model's dtype; rescale them to the layout's.
  const Bytes grads = (dense.grads + expert.grads) / gradient_bytes_per_element(model.dtype) *
                      gradient_bytes_per_element(layout, model.dtype);
  return {dense.params + expert.params, grads, dense.optimizer + expert.optimizer};
}

Bytes rank_activation_bytes_per_layer(const TransformerModel& model, const Layout& layout) {
  const Bytes kept = activation_bytes_per_layer(model, layout.micro_batch, layout.tp, layout.sequence_parallel,
                                                layout.recompute, layout.cp);
  // Full recomputation's checkpoint in equal 1-D chunks, one per tensor-parallel rank (validate() allows
  // the key without sequence parallelism only). Other recompute modes keep no checkpoint to split: what
  // a layer would store without recomputation (the recompute workspace's measure) stays whole.
  const bool split = layout.distribute_saved_activations && layout.recompute == Recompute::Full;
  return split ? (kept + layout.tp - 1) / layout.tp : kept;
}

Bytes rank_loss_activation_bytes(const TransformerModel& model, const Layout& layout) {
  return loss_activation_bytes(model, layout.micro_batch, layout.tp, layout.cp);
}

// ---- JSON ----------------------------------------------------------------------------------------

namespace {

using nlohmann::json;
using json_read::check_keys;
using json_read::fail;
using json_read::got;
using json_read::read_bool;
using json_read::read_int;
using json_read::read_named;
using json_read::read_number;
using json_read::require_object;

constexpr std::int64_t kMaxDegree = std::int64_t{1} << 20;
constexpr std::int64_t kMaxBatch = std::int64_t{1} << 30;

// An int-sized field (ranks, degrees): json_read::read_int with bounds that fit an int.
int read_int32(const json& v, const std::string& path, std::int64_t min, std::int64_t max) {
  return static_cast<int>(read_int(v, path, min, max));
}

}  // namespace

Layout layout_from_json(const json& j, const std::string& path) {
  const std::vector<std::string> accepted = {
      "dp",       "tp",           "pp",        "ep",        "cp",         "sequence_parallel",  "zero_stage", "micro_batch",
      "global_batch", "schedule", "virtual_stages", "recompute", "overlap_grad_reduce", "overlap_param_gather",
      "overlap_p2p_comm", "tp_comm_overlap", "bucket_MiB", "grad_dtype",
      "embedding_in_split", "loss_in_split", "distribute_saved_activations", "backward_prefetch", "zero_shard_ranks",
      "recompute_layers", "cp_comm"};
  require_object(j, path);
  check_keys(j, path, accepted);
  Layout l;
  const auto integer = [&](const char* key, int& field, std::int64_t min, std::int64_t max) {
    if (j.contains(key)) field = read_int32(j[key], path + "/" + key, min, max);
  };
  integer("dp", l.dp, 1, kMaxDegree);
  integer("tp", l.tp, 1, kMaxDegree);
  integer("pp", l.pp, 1, kMaxDegree);
  integer("ep", l.ep, 1, kMaxDegree);
  integer("cp", l.cp, 1, kMaxDegree);
  integer("zero_stage", l.zero_stage, 0, 3);
  integer("micro_batch", l.micro_batch, 1, kMaxBatch);
  if (!j.contains("global_batch")) fail(path + "/global_batch", "required key is missing (sequences per iteration)");
  integer("global_batch", l.global_batch, 1, kMaxBatch);
  integer("virtual_stages", l.virtual_stages, 1, kMaxDegree);
  if (j.contains("sequence_parallel")) l.sequence_parallel = read_bool(j["sequence_parallel"], path + "/sequence_parallel");
  if (j.contains("overlap_grad_reduce")) {
    l.overlap_grad_reduce = read_bool(j["overlap_grad_reduce"], path + "/overlap_grad_reduce");
  }
  if (j.contains("overlap_param_gather")) {
    l.overlap_param_gather = read_bool(j["overlap_param_gather"], path + "/overlap_param_gather");
  }
  if (j.contains("overlap_p2p_comm")) l.overlap_p2p_comm = read_bool(j["overlap_p2p_comm"], path + "/overlap_p2p_comm");
  if (j.contains("tp_comm_overlap")) l.tp_comm_overlap = read_bool(j["tp_comm_overlap"], path + "/tp_comm_overlap");
  if (j.contains("embedding_in_split")) l.embedding_in_split = read_bool(j["embedding_in_split"], path + "/embedding_in_split");
  if (j.contains("loss_in_split")) l.loss_in_split = read_bool(j["loss_in_split"], path + "/loss_in_split");
  if (j.contains("distribute_saved_activations")) {
    l.distribute_saved_activations = read_bool(j["distribute_saved_activations"], path + "/distribute_saved_activations");
  }
  if (j.contains("schedule")) l.schedule = read_named(j["schedule"], path + "/schedule", parse_schedule);
  if (j.contains("recompute")) l.recompute = read_named(j["recompute"], path + "/recompute", parse_recompute);
  if (j.contains("grad_dtype")) l.grad_dtype = read_named(j["grad_dtype"], path + "/grad_dtype", parse_grad_dtype);
  if (j.contains("cp_comm")) l.cp_comm = read_named(j["cp_comm"], path + "/cp_comm", parse_cp_comm);
  if (j.contains("backward_prefetch")) {
    l.backward_prefetch = read_named(j["backward_prefetch"], path + "/backward_prefetch", parse_backward_prefetch);
  }
  // An integer >= 1, or "all" (0 in the Layout).
  const auto count_or_all = [&](const char* key, int& field) {
    if (!j.contains(key)) return;
    const json& v = j[key];
    if (v.is_string() && v.get<std::string>() == "all") return;
    if (!v.is_number_integer()) fail(path + "/" + key, "expected an integer >= 1 or \"all\", got " + got(v));
    field = read_int32(v, path + "/" + key, 1, kMaxDegree);
  };
  count_or_all("zero_shard_ranks", l.zero_shard_ranks);
  count_or_all("recompute_layers", l.recompute_layers);
  if (j.contains("bucket_MiB")) {
    const json& v = j["bucket_MiB"];
    const std::string p = path + "/bucket_MiB";
    // At least 1 KiB: smaller buckets only multiply collectives (PyTorch DDP's default is 25 MiB).
    const std::string range = "a number in [1/1024, 1048576) (MiB, 1 MiB = 1048576 bytes)";
    const double mib = read_number(v, p, range);
    if (!(mib >= 1.0 / 1024) || mib >= 1048576) fail(p, "expected " + range + ", got " + got(v));
    l.bucket_bytes = std::max<Bytes>(1, std::llround(mib * static_cast<double>(MiB)));
  }
  return l;
}

json layout_to_json(const Layout& l) {
  return json{{"dp", l.dp},
              {"tp", l.tp},
              {"pp", l.pp},
              {"ep", l.ep},
              {"cp", l.cp},
              {"cp_comm", cp_comm_name(l.cp_comm)},
              {"sequence_parallel", l.sequence_parallel},
              {"zero_stage", l.zero_stage},
              {"micro_batch", l.micro_batch},
              {"global_batch", l.global_batch},
              {"schedule", schedule_name(l.schedule)},
              {"virtual_stages", l.virtual_stages},
              {"recompute", recompute_name(l.recompute)},
              {"overlap_grad_reduce", l.overlap_grad_reduce},
              {"overlap_param_gather", l.overlap_param_gather},
              {"overlap_p2p_comm", l.overlap_p2p_comm},
              {"tp_comm_overlap", l.tp_comm_overlap},
              {"bucket_MiB", static_cast<double>(l.bucket_bytes) / static_cast<double>(MiB)},
              {"grad_dtype", grad_dtype_name(l.grad_dtype)},
              {"embedding_in_split", l.embedding_in_split},
              {"loss_in_split", l.loss_in_split},
              {"distribute_saved_activations", l.distribute_saved_activations},
              {"backward_prefetch", backward_prefetch_name(l.backward_prefetch)},
              {"zero_shard_ranks", l.zero_shard_ranks > 0 ? json(l.zero_shard_ranks) : json("all")},
              {"recompute_layers", l.recompute_layers > 0 ? json(l.recompute_layers) : json("all")}};
}

}  // namespace twinbed
