// build_plan: model + layout + cluster -> Plan (contract in plan.hpp).
//
// One Program per pipeline stage: every tp·dp rank of a stage runs the same ops, and everything in an
// op is relative to the executing rank, so the stage's ranks share it.
#include <algorithm>
#include <array>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

#include "twinbed/core/error.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/plan_edit.hpp"

namespace twinbed {

namespace {

struct Step {
  bool forward = true;
  int micro_batch = 0;
  int chunk = 0;
};

// The order in which pipeline rank `i` of `p` runs its forward and backward passes.
std::vector<Step> stage_order(PipelineSchedule schedule, int p, int i, int M, int v) {
  std::vector<Step> out;
  if (schedule == PipelineSchedule::GPipe) {
    // All forwards, then all backwards (Huang et al.).
    for (int m = 0; m < M; ++m) out.push_back({true, m, 0});
    for (int m = 0; m < M; ++m) out.push_back({false, m, 0});
    return out;
  }
  if (schedule == PipelineSchedule::OneFOneB) {
    // PipeDream-Flush: p-i-1 warm-up forwards, then one forward one backward, then the cool-down.
    int warmup = std::min(p - i - 1, M);
    int f = 0, b = 0;
    for (; f < warmup; ++f) out.push_back({true, f, 0});
    while (f < M) {
      out.push_back({true, f++, 0});
      out.push_back({false, b++, 0});
    }
    while (b < M) out.push_back({false, b++, 0});
    return out;
  }
  // Interleaved 1F1B, as Megatron-LM's forward_backward_pipelining_with_interleaving orders it: the
  // k-th forward of a rank is micro-batch (k / (p·v))·p + k % p of chunk (k % (p·v)) / p; backwards walk
  // the chunks in reverse. Warm-up: (p-i-1)·2 + (v-1)·p forwards (all of them when M == p).
  const int total = M * v;
  auto mb_of = [&](int k) { return (k / (p * v)) * p + k % p; };
  auto chunk_of = [&](int k, bool forward) {
    int c = (k % (p * v)) / p;
    return forward ? c : v - 1 - c;
  };
  int warmup = (M == p) ? total : std::min((p - i - 1) * 2 + (v - 1) * p, total);
  int f = 0, b = 0;
  for (; f < warmup; ++f) out.push_back({true, mb_of(f), chunk_of(f, true)});
  while (f < total) {
    out.push_back({true, mb_of(f), chunk_of(f, true)});
    ++f;
    out.push_back({false, mb_of(b), chunk_of(b, false)});
    ++b;
  }
  for (; b < total; ++b) out.push_back({false, mb_of(b), chunk_of(b, false)});
  return out;
}

// Which parameter tensor a model op (model.hpp's op lists) reads or differentiates: its name without
// the phase suffix ("qkv_wgrad" -> qkv) and without a "_bias" or "_gamma_beta" before it (a bias's or a
// LayerNorm's parameter gradient: "fc1_bias_bwd" -> fc1, "ln1_gamma_beta_bwd" -> ln1). Attention
// matmuls and element-wise ops other than the LayerNorms touch no parameters.
std::optional<ParamKind> param_kind_of_op(const std::string& op_name) {
  std::string base = op_name.substr(0, op_name.rfind('_'));
  for (const std::string part : {"_bias", "_gamma_beta"}) {
    if (base.ends_with(part)) base.resize(base.size() - part.size());
  }
  static const std::pair<const char*, ParamKind> kinds[] = {
      {"qkv", ParamKind::Qkv},           {"proj", ParamKind::Proj},        {"fc1", ParamKind::Fc1},
      {"fc2", ParamKind::Fc2},           {"router", ParamKind::Router},    {"expert_fc1", ParamKind::ExpertFc1},
      {"expert_fc2", ParamKind::ExpertFc2}, {"ln1", ParamKind::Norms},     {"ln2", ParamKind::Norms},
      {"final_ln", ParamKind::FinalNorm}, {"lm_head", ParamKind::Embedding}, {"embedding_lookup", ParamKind::Embedding},
      {"embedding", ParamKind::Embedding}};
  for (const auto& [name, kind] : kinds) {
    if (base == name) return kind;
  }
  return std::nullopt;
}

class Builder {
 public:
  Builder(const TransformerModel& model, const Layout& layout, Plan& plan)
      : m_(model), l_(layout), plan_(plan), tables_(plan), ctx_(layout.op_context()) {
    e_ = bytes_per_element(activation_dtype(m_.dtype));  // activations, messages, TP collectives
    pe_ = parameter_bytes_per_element(m_.dtype);
    ge_ = gradient_bytes_per_element(l_, m_.dtype);  // the gradient buffers' and reductions' (layout.hpp)
    M_ = l_.micro_batches();
    loss_act_.assign(static_cast<std::size_t>(M_), -1);
    v_ = l_.virtual_stages;
    V_ = l_.pp * v_;
    stride_ = l_.world_size() / l_.pp;  // the next stage's rank of the same (dp, cp, tp) index
    lists_ = model_op_lists(m_, ctx_, l_.recompute);
    for (const auto& list : lists_) {
      std::vector<std::int32_t> ids;
      std::vector<std::optional<ParamKind>> kinds;
      for (const OpCost& c : list) {
        ids.push_back(tables_.cost(c));
        kinds.push_back(param_kind_of_op(c.name));
      }
      cost_ids_.push_back(ids);
      param_kinds_.push_back(kinds);
    }
    split_cost_ids_.resize(lists_.size());
    for (std::size_t k = 0; k < lists_.size(); ++k) {
      split_cost_ids_[k].assign(lists_[k].size(), -1);
      for (std::size_t i = 0; i < lists_[k].size(); ++i) {
        const int parts = split_parts(static_cast<int>(k), i);
        if (parts == 0) continue;
        const OpCost& c = lists_[k][i];
        OpCost chunk = matmul_cost(c.name, c.kind, c.phase, (c.m + parts - 1) / parts, c.n, c.k, c.batch, c.dtype);
        chunk.split = parts;
        split_cost_ids_[k][i] = tables_.cost(chunk);
      }
    }
    attn_first_.fill(-1);
    attn_last_.fill(-1);
    for (std::size_t k = 0; k < lists_.size(); ++k) {
      for (std::size_t i = 0; i < lists_[k].size(); ++i) {
        if (lists_[k][i].kind != OpCost::Kind::Attention) continue;
        if (attn_first_[k] < 0) attn_first_[k] = static_cast<std::ptrdiff_t>(i);
        attn_last_[k] = static_cast<std::ptrdiff_t>(i);
      }
    }
    const bool sp = l_.sequence_parallel && l_.tp > 1;
    const Bytes bsh = static_cast<Bytes>(l_.micro_batch) * (m_.seq_len / l_.cp) * m_.hidden * e_;  // this rank's tokens
    // Pipeline messages are a t-th of the activation on each tensor-parallel rank: with SP its sequence
    // shard; without, a slice the receiver all-gathers over the TP group (p2p()).
    p2p_bytes_ = bsh / l_.tp;
    gather_p2p_ = !sp && l_.tp > 1;
    tp_bytes_ = bsh;  // all-reduce: per-rank buffer; SP all-gather / reduce-scatter: the gathered array
    fp8_norms_ = fp8_layer_norms(m_);
    // CP: the whole sequence's keys and values of the rank's kv/t heads, gathered (model.hpp, OpContext).
    cp_bytes_ =
        static_cast<Bytes>(l_.micro_batch) * m_.seq_len * ((m_.qkv_width() - m_.attention_width()) / l_.tp) * e_;
    // MoE: the micro-batch's routed tokens (its sequence chunk's, top_k each), which the tensor group
    // gathers under SP (after_op); each rank all-to-alls its shard of them.
    routed_tp_bytes_ = static_cast<Bytes>(l_.micro_batch) * (m_.seq_len / l_.cp) * m_.top_k * m_.hidden * e_;
    a2a_bytes_ = routed_tp_bytes_ / (sp ? l_.tp : 1);
    act_layer_ = rank_activation_bytes_per_layer(m_, l_);
    act_loss_ = rank_loss_activation_bytes(m_, l_);
    Layout none = l_;
    none.recompute = Recompute::None;
    act_full_ = rank_activation_bytes_per_layer(m_, none);
  }

  // One Program: parameters, model state, the stage's forward and backward passes in its pipeline
  // order, the gradient reduction and the optimizer step.
  void build_stage(int stage) {
    plan_.programs.emplace_back();
    prog_ = &plan_.programs.back();
    plan_.program_names.push_back("stage" + std::to_string(stage));
    stage_ = stage;
    next_tensor_ = 0;
    coll_seq_.assign(kGroupKinds, 0);
    live_.clear();
    ready_dense_.clear();
    ready_expert_.clear();
    pending_dense_ = pending_expert_ = PendingBuckets{};
    reductions_.clear();
    zero3_reductions_.clear();
    last_replica_reduce_ = -1;
    shard_sets_.clear();
    last_async_tp_ = -1;
    last_compute_ = -1;
    chunks_.clear();
    chunk_local_.clear();
    stage_layers_ = 0;
    for (int c = 0; c < v_; ++c) {
      chunks_.push_back(l_.chunk_layers(m_, c * l_.pp + stage));
      chunk_local_.push_back(stage_layers_);
      stage_layers_ += chunks_.back().count;
    }
    act_.assign(static_cast<std::size_t>(M_ * stage_layers_), -1);

    declare_params();
    emit_model_state();
    emit_parameter_gather_ahead();
    for (const Step& st : stage_order(l_.schedule, l_.pp, stage, M_, v_)) {
      const std::int64_t last = st.forward ? emit_forward(st) : emit_backward(st);
      last_compute_ = std::max(last_compute_, last);
    }
    check_gradient_order();
    std::vector<std::uint32_t> reductions = emit_gradient_reduction();
    if (const std::int64_t tied = emit_embedding_reduction(); tied >= 0) reductions.push_back(static_cast<std::uint32_t>(tied));
    emit_optimizer(reductions);
  }

 private:
  // ---- parameters ----

  // The stage's tensors: per layer qkv, proj, norms and the FFN's (fc1, fc2; or router, expert_fc1,
  // expert_fc2), then the embedding and final norm this stage holds, split as rank_parameters splits
  // them. One param set per tensor, one per layer and one for the whole stage.
  void declare_params() {
    const std::int64_t h = m_.hidden, f = m_.ffn(), t = l_.tp, q = m_.qkv_width(), f1 = m_.fc1_width();
    const LayerTensorElements e = layer_tensor_elements(m_, l_.tp);
    auto add = [&](std::int32_t layer, ParamKind kind, std::int64_t elements, std::int64_t rows, std::int64_t cols,
                   bool row_parallel, bool expert) {
      ParamTensor p;
      p.layer = layer;
      p.kind = kind;
      p.elements = elements;
      p.rows = rows;
      p.cols = cols;
      p.row_parallel = row_parallel;
      p.expert = expert;
      p.dtype = m_.dtype;
      prog_->params.push_back(p);
      return static_cast<std::int32_t>(prog_->params.size() - 1);
    };
    layer_sets_.assign(static_cast<std::size_t>(stage_layers_), {});
    std::int64_t in_layers = 0;
    for (std::int64_t j = 0; j < stage_layers_; ++j) {
      const auto layer = static_cast<std::int32_t>(global_layer(j));
      LayerSets& ls = layer_sets_[static_cast<std::size_t>(j)];
      std::vector<std::int32_t> tensors;
      tensors.push_back(add(layer, ParamKind::Qkv, e.qkv, q / t, h, false, false));
      tensors.push_back(add(layer, ParamKind::Proj, e.proj, h, m_.attention_width() / t, true, false));
      tensors.push_back(add(layer, ParamKind::Norms, e.norms, 0, 0, false, false));
      if (m_.moe()) {
        const std::int64_t local = m_.experts / l_.ep;
        tensors.push_back(add(layer, ParamKind::Router, e.router, m_.experts, h, false, false));
        tensors.push_back(add(layer, ParamKind::ExpertFc1, local * e.fc1, f1 / t, h, false, true));
        tensors.push_back(add(layer, ParamKind::ExpertFc2, local * e.fc2, h, f / t, true, true));
      } else {
        tensors.push_back(add(layer, ParamKind::Fc1, e.fc1, f1 / t, h, false, false));
        tensors.push_back(add(layer, ParamKind::Fc2, e.fc2, h, f / t, true, false));
      }
      std::vector<ParamSlice> all;
      for (std::int32_t id : tensors) {
        const ParamTensor& p = prog_->params[static_cast<std::size_t>(id)];
        ls.of_kind[static_cast<std::size_t>(p.kind)] = param_set({{id, p.elements}});
        all.push_back({id, p.elements});
        in_layers += p.elements;
      }
      ls.all = param_set(all);
    }
    // Embedding and final norm: what rank_parameters gives this stage beyond its layers.
    const RankParameters rp = rank_parameters(m_, l_, stage_);
    const std::int64_t final_norm = stage_ == l_.pp - 1 ? m_.norm_width() * h : 0;
    const std::int64_t embedding = rp.total() - in_layers - final_norm;
    extra_elements_ = embedding + final_norm;
    embedding_set_ = final_norm_set_ = -1;
    std::vector<ParamSlice> extra;
    if (embedding > 0) {
      const std::int32_t id = add(-1, ParamKind::Embedding, embedding, (m_.vocab + t - 1) / t, h, false, false);
      embedding_set_ = param_set({{id, embedding}});
      extra.push_back({id, embedding});
    }
    if (final_norm > 0) {
      const std::int32_t id = add(-1, ParamKind::FinalNorm, final_norm, 0, 0, false, false);
      final_norm_set_ = param_set({{id, final_norm}});
      extra.push_back({id, final_norm});
    }
    extra_set_ = extra.empty() ? -1 : param_set(extra);
    std::vector<ParamSlice> everything;
    for (std::size_t i = 0; i < prog_->params.size(); ++i) {
      everything.push_back({static_cast<std::int32_t>(i), prog_->params[i].elements});
    }
    stage_set_ = param_set(everything);
  }

  std::int32_t param_set(std::vector<ParamSlice> slices) {
    prog_->param_sets.push_back(std::move(slices));
    return static_cast<std::int32_t>(prog_->param_sets.size() - 1);
  }

  // The param set an op of list `list` (index into lists_), element `i`, acts on, for local layer j
  // (-1 outside the layers).
  std::int32_t params_of(int list, std::size_t i, std::int64_t j) const {
    const std::optional<ParamKind> kind = param_kinds_[static_cast<std::size_t>(list)][i];
    if (!kind) return -1;
    if (*kind == ParamKind::Embedding) return embedding_set_;
    if (*kind == ParamKind::FinalNorm) return final_norm_set_;
    if (j < 0) return -1;
    return layer_sets_[static_cast<std::size_t>(j)].of_kind[static_cast<std::size_t>(*kind)];
  }

  // The global index of stage-local layer j.
  std::int64_t global_layer(std::int64_t j) const {
    std::size_t c = 0;
    while (j >= chunk_local_[c] + chunks_[c].count) ++c;
    return chunks_[c].first + (j - chunk_local_[c]);
  }
  // Stage-local index of layer j of chunk c: the stage's layers chunk by chunk.
  std::int64_t local_layer(int chunk, std::int64_t j) const { return chunk_local_[static_cast<std::size_t>(chunk)] + j; }

  // ---- model state ----

  // Weights, gradients and optimizer state, live for the whole iteration (ZeRO-sharded); under ZeRO-3
  // the (small) embedding and final-norm parameters are gathered once for the iteration.
  void emit_model_state() {
    const ModelStateBytes state = model_state_of(prog_->params, l_);
    alloc(TensorClass::Weights, state.params, StreamKind::Compute, "weights", -1, -1, stage_set_);
    alloc(TensorClass::Grads, state.grads, StreamKind::Compute, "grads", -1, -1, stage_set_);
    alloc(TensorClass::Optimizer, state.optimizer, StreamKind::Compute, "optimizer_state", -1, -1, stage_set_);
    extra_gathered_ = -1;
    if (zero3() && extra_elements_ > 0) {
      extra_gathered_ = alloc(TensorClass::CommBuffer, extra_elements_ * pe_, StreamKind::Collective, "zero3.gather_extra",
                              -1, -1, extra_set_);
      coll1(CollectiveOp::AllGather, shard_group(), extra_elements_ * pe_, StreamKind::Collective, "zero3.allgather_extra",
            -1, -1, -1, extra_set_);
    }
  }

  bool zero3() const { return l_.zero_stage == 3 && l_.grad_ranks() > 1; }

  // ---- parameter gather ahead (overlap_param_gather) ----

  // ZeRO 1-2 with overlap_param_gather: the all-gather of the parameters the previous step updated runs
  // at the start of this one rather than after its optimizer step, in the gradient reduction's buckets
  // in forward order (the bucket of the stage's first layers first), and each tensor's first forward op
  // waits for the buckets that hold it (wait_for_parameters). Megatron-LM's --overlap-param-gather:
  // a forward pre-hook on each module finish_param_sync()s the bucket group of its parameters, whose
  // all-gather was dispatched when the previous group was waited for (the first at the first module;
  // megatron/core/distributed/distributed_data_parallel.py, _make_forward_pre_hook, and
  // param_and_grad_buffer.py) — on the collective stream one after the other, as here when the host
  // runs ahead of the GPU. The buckets are the ones emit_gradient_reduction forms later from the
  // gradients' ready order, which final_gradient_order() predicts and check_gradient_order() checks.
  void emit_parameter_gather_ahead() {
    gather_ahead_of_.clear();
    predicted_order_.clear();
    if (!gather_ahead()) return;
    predicted_order_ = final_gradient_order();
    std::vector<GradientReady> dense, expert;
    for (std::int32_t t : predicted_order_) {
      const ParamTensor& p = prog_->params[static_cast<std::size_t>(t)];
      (p.expert ? expert : dense).push_back({0, t, p.elements});
    }
    for (std::uint32_t id : emit_parameter_gather(dense, expert, -1, true)) {
      for (const ParamSlice& s : slices(prog_->ops[id].params)) gather_ahead_of_[s.tensor].push_back(id);
    }
  }
  bool gather_ahead() const { return l_.overlap_param_gather && (l_.zero_stage == 1 || l_.zero_stage == 2); }

  // The trainable tensors in the order their final gradients become ready (ready() in emit_backward):
  // per chunk in the order of its last micro-batch's backward, the layers last to first, each layer's
  // tensors as declared; the head's (tied embedding copy, final norm) before the last chunk's layers
  // on a last stage that is not also the first, the embedding's after the first chunk's on stage 0.
  std::vector<std::int32_t> final_gradient_order() const {
    std::vector<std::int32_t> order;
    auto add = [&](std::int32_t set) {
      for (const ParamSlice& s : slices(set)) {
        if (prog_->params[static_cast<std::size_t>(s.tensor)].trainable) order.push_back(s.tensor);
      }
    };
    for (const Step& st : stage_order(l_.schedule, l_.pp, stage_, M_, v_)) {
      if (st.forward || st.micro_batch != M_ - 1) continue;
      const int vs = st.chunk * l_.pp + stage_;
      if (vs == V_ - 1 && stage_ > 0 && extra_set_ >= 0) add(extra_set_);
      for (std::int64_t j = chunks_[static_cast<std::size_t>(st.chunk)].count - 1; j >= 0; --j) {
        add(layer_sets_[static_cast<std::size_t>(local_layer(st.chunk, j))].all);
      }
      if (vs == 0 && extra_set_ >= 0) add(extra_set_);
    }
    return order;
  }

  void check_gradient_order() const {
    if (!gather_ahead()) return;
    // Per communicator (dense, then expert), as ready() files them.
    std::vector<std::int32_t> want, expert, got;
    for (std::int32_t t : predicted_order_) (prog_->params[static_cast<std::size_t>(t)].expert ? expert : want).push_back(t);
    want.insert(want.end(), expert.begin(), expert.end());
    for (const GradientReady& r : ready_dense_) got.push_back(r.tensor);
    for (const GradientReady& r : ready_expert_) got.push_back(r.tensor);
    if (got != want) {
      throw std::logic_error("build_plan: stage " + std::to_string(stage_) +
                             ": the gradients' ready order differs from final_gradient_order()'s, so the parameter "
                             "gathers issued ahead are not the reduction's buckets");
    }
  }

  // The first forward use of a tensor whose gather was issued ahead waits for it (the op just added).
  void wait_for_parameters(std::int32_t set) {
    if (gather_ahead_of_.empty() || set < 0) return;
    std::vector<std::uint32_t> waits;
    for (const ParamSlice& s : slices(set)) {
      auto it = gather_ahead_of_.find(s.tensor);
      if (it == gather_ahead_of_.end()) continue;
      waits.insert(waits.end(), it->second.begin(), it->second.end());
      gather_ahead_of_.erase(it);
    }
    std::sort(waits.begin(), waits.end());
    waits.erase(std::unique(waits.begin(), waits.end()), waits.end());
    for (std::uint32_t w : waits) prog_->add_dep_to_last(w);
  }

  // ---- forward ----

  // One micro-batch's forward pass through one model chunk: receive (or embed), the layers, send (or
  // the head). Returns the last compute op.
  std::int64_t emit_forward(const Step& st) {
    const int p = l_.pp, mb = st.micro_batch, c = st.chunk;
    const int vs = c * p + stage_;  // virtual stage
    const Layout::LayerRange layers = chunks_[static_cast<std::size_t>(c)];
    std::int64_t prev = -1;
    if (vs > 0) {
      const int from = (stage_ > 0) ? -stride_ : (p - 1) * stride_;
      prev = p2p(OpKind::Recv, from, (static_cast<std::int64_t>(mb) * V_ + vs) * 2, "pp.recv_act", mb, -1);
    }
    if (vs == 0) {
      for (std::size_t i = 0; i < lists_[kEmbFwd].size(); ++i) prev = compute(kEmbFwd, i, mb, prev, -1, -1);
      if (l_.tp > 1) {
        const bool sp = l_.sequence_parallel;
        prev = coll1(sp ? CollectiveOp::ReduceScatter : CollectiveOp::AllReduce, GroupKind::Tp, tp_bytes_,
                     StreamKind::Compute, sp ? "embedding.tp_reducescatter" : "embedding.tp_allreduce", mb, prev, -1, -1);
      }
    }
    std::int64_t prefetch_dep = prev;
    for (std::int64_t j = 0; j < layers.count; ++j) {
      const int layer = static_cast<int>(layers.first + j);
      const std::int64_t local = local_layer(c, j);
      const std::string prefix = layer_prefix(layer);
      // A layer left out of recomputation (Layout::recompute_layers) keeps what no recomputation would.
      const Bytes kept = l_.recomputes(j) ? act_layer_ : act_full_;
      act_slot(mb, c, j) =
          alloc(TensorClass::Activation, kept, StreamKind::Compute, prefix + "activations", mb, prev, -1, layer);
      const Gathered g = gather_layer(prefix + "zero3.allgather", mb, prefetch_dep, layer, local);
      std::int64_t first_op = -1;
      for (std::size_t i = 0; i < lists_[kFwd].size(); ++i) {
        gather_kv(kFwd, i, mb, prev, prefix, layer);
        prev = compute_overlapped(kFwd, i, mb, prev, layer, local, prefix).last;
        await_kv(kFwd, i);
        if (i == 0 && g.gather >= 0) prog_->add_dep_to_last(static_cast<std::uint32_t>(g.gather));
        if (i == 0) first_op = prev;
        after_op(lists_[kFwd][i].name, true, mb, prev, prefix, layer);
      }
      prefetch_dep = first_op;  // the next layer's parameters are gathered once this layer has begun
      if (g.buffer >= 0) free(g.buffer, StreamKind::Compute, prefix + "zero3.params", mb, prev);
    }
    if (vs == V_ - 1) {
      for (std::size_t i = 0; i < lists_[kHeadFwd].size(); ++i) prev = compute(kHeadFwd, i, mb, prev, -1, -1);
      loss_act_[static_cast<std::size_t>(mb)] = alloc(TensorClass::Activation, act_loss_, StreamKind::Compute, "loss.activations",
                                                      mb, prev, -1);
    } else {
      const int to = (stage_ < p - 1) ? stride_ : -(p - 1) * stride_;
      p2p(OpKind::Send, to, (static_cast<std::int64_t>(mb) * V_ + vs + 1) * 2, "pp.send_act", mb, prev);
    }
    return prev;
  }

  // ---- backward ----

  // One micro-batch's backward pass through one model chunk, layers in reverse, each with its
  // recomputation first. On the last micro-batch, records which op completes each tensor's gradient.
  std::int64_t emit_backward(const Step& st) {
    const int p = l_.pp, mb = st.micro_batch, c = st.chunk;
    const int vs = c * p + stage_;
    const Layout::LayerRange layers = chunks_[static_cast<std::size_t>(c)];
    const bool final_pass = mb == M_ - 1;  // gradients complete after this micro-batch's backward
    std::int64_t prev = -1;
    if (vs < V_ - 1) {
      const int from = (stage_ < p - 1) ? stride_ : -(p - 1) * stride_;
      prev = p2p(OpKind::Recv, from, (static_cast<std::int64_t>(mb) * V_ + vs) * 2 + 1, "pp.recv_grad", mb, -1);
    } else {
      for (std::size_t i = 0; i < lists_[kHeadBwd].size(); ++i) {
        prev = compute(kHeadBwd, i, mb, prev, -1, -1);
        prev = accumulate_gradient(kHeadBwd, i, "", mb, prev, -1, -1);
        if (i == 0) free(loss_act_[static_cast<std::size_t>(mb)], StreamKind::Compute, "loss.activations", mb, prev);
      }
      // The head's gradients (tied embedding copy, final norm) are ready here; with pp == 1 they are
      // counted with the embedding's below.
      if (stage_ > 0) {
        if (final_pass) {
          ready_extra(static_cast<std::uint32_t>(prev));
          issue_buckets(false);
        }
        reduce_scatter_extra(mb, prev);
      }
    }
    std::int64_t prefetch_dep = prev;
    // ZeRO-3: each layer's gradients are reduce-scattered after its backward, but put on the collective
    // stream only after the next layer's gather (prefetch_dep: once this layer's backward has begun, or
    // with backward_prefetch "post" once it is done; layout.hpp): in the stream's FIFO order the other
    // way round the gather would also wait for the reduce-scatter, which FSDP runs on a stream of its own.
    std::optional<ZeroReduce> pending;
    for (std::int64_t j = layers.count - 1; j >= 0; --j) {
      const int layer = static_cast<int>(layers.first + j);
      const std::int64_t local = local_layer(c, j);
      const std::string prefix = layer_prefix(layer);
      const Gathered g = gather_layer(prefix + "zero3.allgather_bwd", mb, prefetch_dep, layer, local);
      if (pending) reduce_scatter_layer(*pending, mb);
      pending.reset();
      std::int32_t workspace = -1;
      const bool recomputed = !lists_[kRecompute].empty() && l_.recomputes(j);
      if (recomputed) {
        // Recomputation regenerates what the layer did not store, for the duration of its backward.
        workspace = alloc(TensorClass::Workspace, act_full_ - act_layer_, StreamKind::Compute, prefix + "recompute", mb, prev,
                          -1, layer);
      }
      bool first = true;
      std::int64_t first_op = -1;
      auto gate = [&]() {
        if (first && g.gather >= 0) prog_->add_dep_to_last(static_cast<std::uint32_t>(g.gather));
        if (first) first_op = prev;
        first = false;
      };
      if (l_.distribute_saved_activations && l_.tp > 1 && recomputed) {
        // The checkpointed input, kept in t-th chunks (Layout::distribute_saved_activations), is gathered
        // whole before the recomputation reads it.
        prev = coll1(CollectiveOp::AllGather, GroupKind::Tp, tp_bytes_, StreamKind::Compute, prefix + "recompute_input_allgather",
                     mb, prev, layer, -1);
      }
      for (std::size_t i = 0; recomputed && i < lists_[kRecompute].size(); ++i) {
        gather_kv(kRecompute, i, mb, prev, prefix, layer);
        prev = compute_overlapped(kRecompute, i, mb, prev, layer, local, prefix + "recompute.").last;
        await_kv(kRecompute, i);
        gate();
        if (l_.recompute == Recompute::Full) after_op(lists_[kRecompute][i].name, true, mb, prev, prefix + "recompute.", layer);
      }
      ColumnBackward column;
      std::int64_t ring_gathered = -1;  // the last ring-exchange step of a split dgrad, for its wgrad
      for (std::size_t i = 0; i < lists_[kBwd].size(); ++i) {
        const std::string& name = lists_[kBwd][i].name;
        if (is_column_parallel_dgrad(name)) {
          // QKV reads ln1's output; FC1, ln2's.
          column.gather = regather_input(mb, prev, prefix, layer, name == "qkv_dgrad" ? fp8_norms_.attention : fp8_norms_.ffn);
        }
        gather_kv(kBwd, i, mb, prev, prefix, layer);
        gather_output_grad(i, mb, prev, prefix, layer);
        const Overlapped split = compute_overlapped(kBwd, i, mb, prev, layer, local, prefix);
        prev = split.last;
        await_kv(kBwd, i);
        gate();
        // A split input-gradient GEMM's weight gradient, next, reads the whole gathered output gradient.
        if (ring_gathered >= 0 && name.ends_with("_wgrad")) {
          prog_->add_dep_to_last(static_cast<std::uint32_t>(ring_gathered));
          ring_gathered = -1;
        }
        if (split.gathered >= 0) ring_gathered = split.gathered;
        reduce_kv_grads(i, mb, prev, prefix, layer);
        if (column.wgrad_next) {
          // The weight-gradient GEMM reads the re-gathered input (Megatron: handle.wait() on the all-gather
          // before the GEMM); it does not wait for the input-gradient collective.
          if (column.gather >= 0) prog_->add_dep_to_last(static_cast<std::uint32_t>(column.gather));
          column = ColumnBackward{.reduce = column.reduce};
        } else if (column.reduce >= 0) {
          // The op after the weight-gradient GEMM consumes the input gradient: Megatron's handle.wait() on
          // the all-reduce / reduce-scatter before the backward returns.
          prog_->add_dep_to_last(static_cast<std::uint32_t>(column.reduce));
          column.reduce = -1;
        }
        if (is_column_parallel_dgrad(name)) {
          column.reduce = reduce_input_grad(mb, prev, column.gather, prefix, layer);
          column.wgrad_next = true;
        } else {
          after_op(name, false, mb, prev, prefix, layer);
        }
        prev = accumulate_gradient(kBwd, i, prefix, mb, prev, layer, local);
      }
      if (column.reduce >= 0 || column.wgrad_next || ring_gathered >= 0) {
        throw InvalidArgument("build_plan: a column-parallel layer's weight gradient or its consumer is missing from " +
                              prefix + " backward ops");
      }
      prefetch_dep = l_.backward_prefetch == BackwardPrefetch::Post ? prev : first_op;
      if (workspace >= 0) free(workspace, StreamKind::Compute, prefix + "recompute", mb, prev);
      free(act_slot(mb, c, j), StreamKind::Compute, prefix + "activations", mb, prev);
      if (g.buffer >= 0) free(g.buffer, StreamKind::Compute, prefix + "zero3.params", mb, prev);
      if (zero3()) {
        pending = ZeroReduce{layer, local, prev};
      } else if (final_pass) {
        for (const ParamSlice& s : slices(layer_sets_[static_cast<std::size_t>(local)].all)) {
          ready(static_cast<std::uint32_t>(prev), s.tensor);
        }
        issue_buckets(false);
      }
    }
    if (pending) reduce_scatter_layer(*pending, mb);
    if (vs == 0) {
      for (std::size_t i = 0; i < lists_[kEmbBwd].size(); ++i) {
        prev = compute(kEmbBwd, i, mb, prev, -1, -1);
        prev = accumulate_gradient(kEmbBwd, i, "", mb, prev, -1, -1);
      }
      if (final_pass) {
        ready_extra(static_cast<std::uint32_t>(prev));
        issue_buckets(false);
      }
      reduce_scatter_extra(mb, prev);
    } else {
      const int to = (stage_ > 0) ? -stride_ : (p - 1) * stride_;
      p2p(OpKind::Send, to, (static_cast<std::int64_t>(mb) * V_ + vs - 1) * 2 + 1, "pp.send_grad", mb, prev);
    }
    return prev;
  }

  // Tensor `tensor`'s gradient is complete once `op` has run (ZeRO-3 reduces per micro-batch instead).
  void ready(std::uint32_t op, std::int32_t tensor) {
    const ParamTensor& p = prog_->params[static_cast<std::size_t>(tensor)];
    if (zero3() || !p.trainable) return;
    (p.expert ? ready_expert_ : ready_dense_).push_back({op, tensor, p.elements});
    (p.expert ? pending_expert_ : pending_dense_).ready.push_back({op, tensor, p.elements});
  }
  void ready_extra(std::uint32_t op) {
    if (extra_set_ < 0) return;
    for (const ParamSlice& s : slices(extra_set_)) ready(op, s.tensor);
  }

  // ZeRO-3: the layer's parameters gathered into a buffer before its forward or backward.
  struct Gathered {
    std::int32_t buffer = -1;
    std::int64_t gather = -1;
  };
  Gathered gather_layer(const std::string& name, int mb, std::int64_t dep, int layer, std::int64_t local) {
    if (!zero3()) return {};
    const std::string prefix = layer_prefix(layer);
    const std::int32_t set = layer_sets_[static_cast<std::size_t>(local)].all;
    const Bytes bytes = set_elements(slices(set)) * pe_;
    Gathered g;
    g.buffer = alloc(TensorClass::CommBuffer, bytes, StreamKind::Collective, prefix + "zero3.params", mb, dep, set, layer);
    g.gather = coll1(CollectiveOp::AllGather, shard_group(), bytes, StreamKind::Collective, name, mb, dep, layer, set);
    return g;
  }

  const std::vector<ParamSlice>& slices(std::int32_t set) const { return prog_->param_sets[static_cast<std::size_t>(set)]; }

  // ZeRO-3 keeps no full gradients: each micro-batch's layer gradients are reduce-scattered once the
  // layer's backward (`dep`, its last op) is done.
  struct ZeroReduce {
    int layer;
    std::int64_t local;
    std::int64_t dep;
  };
  void reduce_scatter_layer(const ZeroReduce& r, int mb) {
    const std::int32_t set = layer_sets_[static_cast<std::size_t>(r.local)].all;
    reduce_zero3(set, layer_prefix(r.layer) + "zero3.", "", mb, r.dep, r.layer);
  }
  // ZeRO-3: the embedding's and final norm's gradients (and a last stage's head copy), gathered once for
  // the iteration (emit_model_state), are reduced like a layer's, each micro-batch, once the backward
  // that completes them (`dep`) is done: FSDP's root unit, whose post-backward hook runs after the
  // embedding's backward.
  void reduce_scatter_extra(int mb, std::int64_t dep) {
    if (zero3() && extra_set_ >= 0) reduce_zero3(extra_set_, "zero3.", "_extra", mb, dep, -1);
  }
  // ZeRO-3's reduction of param set `set`'s gradients after `dep`: a reduce-scatter over the shard group
  // on the collective stream; with hybrid sharding (Layout::zero_shard_ranks) the rank's shard is then
  // all-reduced over the replicas on a stream of its own (FSDP's _all_reduce_stream; the Plan's P2P
  // stream, each after the previous, as ColumnBackward's collectives), so the gathers and
  // reduce-scatters after it do not queue behind it. The last micro-batch's reductions are what the
  // optimizer step waits for.
  void reduce_zero3(std::int32_t set, const std::string& base, const std::string& suffix, int mb, std::int64_t dep, int layer) {
    const Bytes gb = set_elements(slices(set)) * ge_;
    const std::int32_t buf = alloc(TensorClass::CommBuffer, gb, StreamKind::Collective, base + "grads" + suffix, mb, dep, set, layer);
    std::uint32_t done = coll1(CollectiveOp::ReduceScatter, shard_group(), gb, StreamKind::Collective,
                               base + "reducescatter" + suffix, mb, dep, layer, set);
    free(buf, StreamKind::Collective, base + "grads" + suffix, mb, done);
    if (l_.zero_replicas() > 1) {
      // The rank's shard, as a set of its own (each tensor's share, rounded up), so that its bytes are its
      // parameters' as every gradient collective's are (passes recompute them from the set).
      auto [it, fresh] = shard_sets_.try_emplace(set, -1);
      if (fresh) it->second = param_set(shard_of(slices(set), l_.zero_shards()));
      const std::int32_t shard_set = it->second;
      done = coll1(CollectiveOp::AllReduce, GroupKind::ZeroReplica, set_elements(slices(shard_set)) * ge_, StreamKind::P2P,
                   base + "allreduce_replicas" + suffix, mb, done, layer, shard_set);
      if (last_replica_reduce_ >= 0) prog_->add_dep_to_last(static_cast<std::uint32_t>(last_replica_reduce_));
      last_replica_reduce_ = done;
    }
    if (mb == M_ - 1) zero3_reductions_.push_back(done);
  }
  // ZeRO-3's gathers and reduce-scatters: over the shard group under hybrid sharding, else over Dp.
  GroupKind shard_group() const { return l_.zero_replicas() > 1 ? GroupKind::ZeroShard : GroupKind::Dp; }

  // ---- gradient reduction ----

  // Data-parallel reduction of the final gradients in buckets, in the order they become ready, on the
  // collective stream (ZeRO 0: all-reduce; 1-2: reduce-scatter). Dense gradients over dp·cp, expert ones
  // over dp·cp/ep. Returns the reductions (under ZeRO-3, which reduces each layer as its backward ends:
  // the last micro-batch's reductions, reduce_zero3).
  //
  // With overlap_grad_reduce each bucket is issued in program order right after the op that completes
  // it (issue_buckets, called as gradients become ready), as DDP's autograd hooks issue it, so that on
  // the Collective stream's FIFO it comes before whatever a pass or a later op of the backward puts
  // there. Without overlap, all after the backward.
  // The buckets are those gradient_reduction makes of the whole ready list (greedy packing in ready
  // order, so issuing the full buckets of a prefix first gives the same buckets).
  std::vector<std::uint32_t> emit_gradient_reduction() {
    if (zero3()) return zero3_reductions_;
    if (l_.overlap_grad_reduce) {
      issue_buckets(true);
      return reductions_;
    }
    std::vector<std::uint32_t> out;
    auto emit = [&](const std::vector<GradientReady>& ready, GroupKind g, int group_size, const std::string& base) {
      if (group_size <= 1) return;
      for (BucketCollective& b : gradient_reduction(ready, g, l_, ge_, base, tables_)) {
        b.op.params = param_set(std::move(b.bucket.slices));
        out.push_back(add_collective(b.op, last_compute_));
      }
    };
    emit(ready_dense_, GroupKind::Dp, l_.grad_ranks(), "dp.");
    if (m_.moe()) emit(ready_expert_, GroupKind::ExpertDp, l_.grad_ranks() / l_.ep, "expert_dp.");
    return out;
  }

  // Gradients ready but not yet in an issued bucket, per communicator (ready order = program order).
  struct PendingBuckets {
    std::vector<GradientReady> ready;
    int issued = 0;  // buckets issued so far: the next one's index in its name
  };
  // Overlapped reduction: issues the pending gradients' full buckets (all of them when `all`), each
  // depending on the op that completed it.
  void issue_buckets(bool all) {
    if (zero3() || !l_.overlap_grad_reduce) return;
    auto issue = [&](PendingBuckets& pending, GroupKind g, int group_size, const std::string& base) {
      if (group_size <= 1 || pending.ready.empty()) return;
      const std::int64_t capacity = std::max<std::int64_t>(1, l_.bucket_bytes / ge_);
      std::vector<BucketCollective> buckets = gradient_reduction(pending.ready, g, l_, ge_, base, tables_);
      std::size_t n = buckets.size();
      if (!all && buckets.back().bucket.elements < capacity) --n;  // still filling: wait for more gradients
      std::vector<GradientReady> rest;
      for (std::size_t k = 0; k < buckets.size(); ++k) {
        BucketCollective& b = buckets[k];
        if (k >= n) {
          // Its slices, completed by its ready op at the latest: where the next gradients join it.
          for (const ParamSlice& sl : b.bucket.slices) rest.push_back({b.bucket.ready_op, sl.tensor, sl.elements});
          continue;
        }
        b.op.name = tables_.name(base + "bucket" + std::to_string(pending.issued++));
        b.op.params = param_set(std::move(b.bucket.slices));
        reductions_.push_back(add_collective(b.op, static_cast<std::int64_t>(b.bucket.ready_op)));
      }
      pending.ready = std::move(rest);
    };
    issue(pending_dense_, GroupKind::Dp, l_.grad_ranks(), "dp.");
    if (m_.moe()) issue(pending_expert_, GroupKind::ExpertDp, l_.grad_ranks() / l_.ep, "expert_dp.");
  }

  // The tied word embedding (pp > 1, TransformerModel::tie_embeddings): the first stage's embedding table
  // and the last stage's LM-head copy get gradients from both uses and are kept equal by all-reducing them
  // between the two stages, as Megatron-LM does (_allreduce_word_embedding_grads, after the DP reduction:
  // finalize_model_grads). On the Collective stream after the DP reductions, once the whole backward has
  // run. Returns the op, or -1 on stages that hold no copy.
  std::int64_t emit_embedding_reduction() {
    if (!m_.tie_embeddings || l_.pp <= 1 || (stage_ != 0 && stage_ != l_.pp - 1)) return -1;
    const std::int64_t word = (m_.vocab + l_.tp - 1) / l_.tp * m_.hidden;  // ⌈V/tp⌉·h: the vocabulary-parallel table
    const std::int32_t tensor = embedding_set_ >= 0 ? slices(embedding_set_).front().tensor : -1;
    const std::int32_t set = tensor >= 0 ? param_set({{tensor, word}}) : -1;
    return coll1(CollectiveOp::AllReduce, GroupKind::Embedding, word * ge_, StreamKind::Collective,
                 "embedding.pp_allreduce", -1, last_compute_, -1, set);
  }

  // ---- optimizer ----

  // The optimizer step over this rank's (sharded) optimizer state, after every reduction; with ZeRO 1-2
  // the updated parameter shards are all-gathered after it (in buckets of the same size, parameter bytes),
  // unless overlap_param_gather issued the gathers at the start of the step.
  void emit_optimizer(const std::vector<std::uint32_t>& reductions) {
    std::vector<std::uint32_t> deps = reductions;
    if (last_compute_ >= 0) deps.push_back(static_cast<std::uint32_t>(last_compute_));
    PlanOp op;
    op.kind = OpKind::Compute;
    op.stream = StreamKind::Compute;
    op.span = SpanKind::Optimizer;
    op.name = tables_.name("optimizer_step");
    op.cost = tables_.cost(optimizer_step_cost(prog_->params, l_, m_.fused_optimizer));
    op.params = stage_set_;
    last_compute_ = prog_->add(op, deps);
    if (!gather_ahead()) emit_parameter_gather(ready_dense_, ready_expert_, last_compute_, false);
    if (extra_gathered_ >= 0) free(extra_gathered_, StreamKind::Compute, "zero3.gather_extra", -1, last_compute_);
  }

  // ZeRO 1-2: the updated parameter shards all-gathered over dp·cp (expert ones over dp·cp/ep) in buckets
  // of the gradient buckets' size in parameter bytes, each depending on `dep`; in ready order, or in
  // forward order (`forward_order`: the last bucket first). Returns the gathers.
  std::vector<std::uint32_t> emit_parameter_gather(const std::vector<GradientReady>& dense,
                                                   const std::vector<GradientReady>& expert, std::int64_t dep,
                                                   bool forward_order) {
    std::vector<std::uint32_t> out;
    auto gather = [&](const std::vector<GradientReady>& ready, GroupKind g, int group_size, const std::string& base) {
      if (group_size <= 1) return;
      std::vector<BucketCollective> buckets = parameter_gather(ready, g, l_, ge_, pe_, base, tables_);
      if (forward_order) std::reverse(buckets.begin(), buckets.end());
      for (BucketCollective& b : buckets) {
        b.op.params = param_set(std::move(b.bucket.slices));
        out.push_back(add_collective(b.op, dep));
      }
    };
    gather(dense, GroupKind::Dp, l_.grad_ranks(), "dp.");
    if (m_.moe()) gather(expert, GroupKind::ExpertDp, l_.grad_ranks() / l_.ep, "expert_dp.");
    return out;
  }

  // Without fused gradient accumulation (TransformerModel::fused_grad_accumulation false), the weight
  // gradient op `i` of `list` (its name ends in "_wgrad") of every micro-batch but the first is
  // followed by the pass that adds it into the gradient buffer: the fresh gradient read (the model's
  // dtype) and the buffer read and written (the gradient dtype) over its tensor's elements; on the
  // Compute stream after it, the same parameter set (a pass that freezes the tensor drops it with its
  // GEMM; the precision pass leaves it as built). Returns the op the backward goes on from: it, or
  // `prev` when there is none.
  std::int64_t accumulate_gradient(int list, std::size_t i, const std::string& prefix, int mb, std::int64_t prev, int layer,
                                   std::int64_t local) {
    const OpCost& c = lists_[static_cast<std::size_t>(list)][i];
    static constexpr std::string_view kWgrad = "_wgrad";
    if (m_.fused_grad_accumulation || mb == 0 || zero3() || !c.name.ends_with(kWgrad)) return prev;
    const std::int32_t set = params_of(list, i, local);
    if (set < 0) return prev;
    const std::int64_t elements = set_elements(slices(set));
    OpCost add_into;
    add_into.name = c.name.substr(0, c.name.size() - kWgrad.size()) + "_grad_accumulate";
    add_into.kind = OpCost::Kind::MemoryBound;
    add_into.phase = OpCost::Phase::BackwardWeight;
    add_into.dtype = m_.dtype;
    add_into.bytes = elements * (e_ + 2 * ge_);
    add_into.flops = static_cast<double>(elements);
    PlanOp op;
    op.kind = OpKind::Compute;
    op.stream = StreamKind::Compute;
    op.span = span_of(add_into);
    op.name = tables_.name(prefix + add_into.name);
    op.cost = tables_.cost(add_into);
    op.micro_batch = mb;
    op.layer = layer;
    op.params = set;
    return add(op, prev);
  }

  // ---- op emitters (each returns the new op's index) ----

  // Op i of `list`; `cost` replaces its cost (a split GEMM's chunk).
  std::uint32_t compute(int list, std::size_t i, int mb, std::int64_t dep, int layer, std::int64_t local, std::int32_t cost = -1) {
    const OpCost& c = lists_[static_cast<std::size_t>(list)][i];
    PlanOp op;
    op.kind = OpKind::Compute;
    op.stream = StreamKind::Compute;
    op.span = span_of(c);
    op.name = compute_name(list, i, layer);
    op.cost = cost >= 0 ? cost : cost_ids_[static_cast<std::size_t>(list)][i];
    op.micro_batch = mb;
    op.layer = layer;
    op.params = params_of(list, i, local);
    const std::uint32_t id = add(op, dep);
    wait_for_parameters(op.params);
    return id;
  }
  // The name of op i of `list`: "l<layer>.<op>" in a layer, "<op>" outside one (layer -1); built once
  // per (list, op, layer) rather than once per micro-batch.
  std::uint32_t compute_name(int list, std::size_t i, int layer) {
    const std::uint64_t key = (static_cast<std::uint64_t>(layer + 1) << 40) | (static_cast<std::uint64_t>(list) << 32) | i;
    auto [it, fresh] = compute_names_.try_emplace(key, 0);
    if (fresh) it->second = tables_.name(layer_prefix(layer) + lists_[static_cast<std::size_t>(list)][i].name);
    return it->second;
  }
  std::uint32_t coll1(CollectiveOp what, GroupKind g, Bytes bytes, StreamKind stream, const std::string& name, int mb,
                      std::int64_t dep, int layer, std::int32_t params) {
    PlanOp op = collective_op(what, g, bytes, stream);
    // What it moves: parameters (gathers of a parameter set), their gradients (reductions of one), or
    // activations (tensor- and expert-parallel collectives).
    if (params >= 0) op.tensor_class = what == CollectiveOp::AllGather ? TensorClass::Weights : TensorClass::Grads;
    op.name = tables_.name(name);
    op.micro_batch = mb;
    op.layer = layer;
    op.params = params;
    return add_collective(op, dep);
  }
  // Numbers a collective in its communicator kind's sequence.
  std::uint32_t add_collective(PlanOp op, std::int64_t dep) {
    op.tag = coll_seq_[static_cast<std::size_t>(op.group)]++;
    return add(op, dep);
  }
  // A pipeline message. Unless sends overlap compute (Layout::overlap_p2p_comm), a Send is followed by a
  // SendDone on the compute stream, which nothing after it there passes before the message is through.
  // Without sequence parallelism each tensor-parallel rank sends a t-th of the (replicated) activation or
  // gradient and the receiver all-gathers the slices over the TP group on the compute stream: Megatron-LM's
  // scatter_gather_tensors_in_pipeline (default on; p2p_communication.py, gather_split_1d_tensor after
  // the receive) and DeepSpeed's pipeline engine (is_pipe_partitioned / is_grad_partitioned under model
  // parallelism, PartitionedTensor.full()). Returns the op the message's consumer waits for.
  std::uint32_t p2p(OpKind kind, int peer_offset, std::int64_t tag, const std::string& name, int mb, std::int64_t dep) {
    PlanOp op;
    op.kind = kind;
    op.stream = StreamKind::P2P;
    op.span = SpanKind::SendRecv;
    op.peer_offset = peer_offset;
    op.tag = tag;
    op.bytes = p2p_bytes_;
    op.name = tables_.name(name);
    op.micro_batch = mb;
    const std::uint32_t id = add(op, dep);
    if (kind == OpKind::Send && !l_.overlap_p2p_comm) {
      op.kind = OpKind::SendDone;
      op.stream = StreamKind::Compute;
      op.bytes = 0;
      op.name = tables_.name(name + "_done");
      add(op, id);
    }
    if (kind == OpKind::Recv && gather_p2p_) {
      return coll1(CollectiveOp::AllGather, GroupKind::Tp, tp_bytes_, StreamKind::Compute, name + "_allgather", mb, id, -1, -1);
    }
    return id;
  }
  // Allocs take effect at the head of their stream; returns the tensor id.
  std::int32_t alloc(TensorClass cls, Bytes bytes, StreamKind stream, const std::string& name, int mb, std::int64_t dep,
                     std::int32_t params, int layer = -1) {
    PlanOp op = alloc_op(cls, next_tensor_++, bytes, tables_.name(name), stream);
    op.micro_batch = mb;
    op.params = params;
    op.layer = layer;
    add(op, dep);
    live_.emplace(op.tensor, op);
    return op.tensor;
  }
  std::uint32_t free(std::int32_t tensor, StreamKind stream, const std::string& name, int mb, std::int64_t dep) {
    auto it = live_.find(tensor);
    PlanOp op = it->second;  // same tensor, bytes, class, parameters and layer as its Alloc
    live_.erase(it);
    op.kind = OpKind::Free;
    op.stream = stream;
    op.name = tables_.name(name);
    op.micro_batch = mb;
    return add(op, dep);
  }
  std::uint32_t add(const PlanOp& op, std::int64_t dep) {
    if (dep >= 0) return prog_->add(op, {static_cast<std::uint32_t>(dep)});
    return prog_->add(op);
  }

  // The TP / EP collectives between a layer's ops, keyed by the op after which they run, on the compute
  // stream (the ops after them need their result at once).
  // Forward: without SP, all-reduce after the row-parallel GEMMs (proj, fc2 / expert_unpermute); with
  // SP, all-gather after each LayerNorm and reduce-scatter after the row-parallel GEMMs (a dense
  // layer's). Backward: the conjugates (Megatron's f/g operators) — the all-gather of the output gradient
  // before the row-parallel GEMMs' backward with SP, and without SP the MoE router's input-gradient
  // all-reduce; QKV's and FC1's are ColumnBackward's. MoE: all-to-all after permute and after
  // expert_fc2 (the dispatch and the combine), and their conjugates in the backward.
  //
  // MoE under sequence parallelism, as Megatron-Core's all-to-all dispatcher runs it
  // (megatron/core/transformer/moe/token_dispatcher.py, MoEAlltoAllTokenDispatcher): the router and the
  // permutation work on the rank's shard of the tokens; after the dispatch all-to-all the tensor group
  // all-gathers the routed tokens (dispatch_postprocess, gather_from_sequence_parallel_region), top_k
  // times the shard's hidden states, for the experts' tensor-parallel GEMMs, and reduce-scatters the
  // experts' output before the combine all-to-all; the backward mirrors both. No tensor collective
  // touches ln2's output or the combined tokens.
  void after_op(const std::string& op_name, bool forward_like, int mb, std::int64_t& prev, const std::string& prefix, int layer) {
    const bool sp = l_.sequence_parallel && l_.tp > 1;
    const bool tp = l_.tp > 1;
    const bool moe = m_.moe() && l_.ep > 1;
    const bool moe_sp = m_.moe() && sp;
    auto tpc = [&](CollectiveOp op, const std::string& what, Bytes bytes) {
      prev = coll1(op, GroupKind::Tp, bytes, StreamKind::Compute, prefix + what, mb, prev, layer, -1);
    };
    auto a2a = [&](const std::string& what) {
      if (moe) prev = coll1(CollectiveOp::AllToAll, GroupKind::Ep, a2a_bytes_, StreamKind::Compute, prefix + what, mb, prev, layer, -1);
    };
    // The dispatch (forward, and the combine's backward): all-to-all, then the routed tokens gathered;
    // the combine (and the dispatch's backward): the experts' output scattered, then all-to-all.
    auto dispatch = [&](const std::string& suffix) {
      a2a("ep_alltoall" + suffix);
      if (moe_sp) tpc(CollectiveOp::AllGather, "tp_allgather_routed" + suffix, routed_tp_bytes_);
    };
    auto combine = [&](const std::string& suffix) {
      if (moe_sp) tpc(CollectiveOp::ReduceScatter, "tp_reducescatter_routed" + suffix, routed_tp_bytes_);
      a2a("ep_alltoall" + suffix);
    };
    const std::string ffn_out = m_.moe() ? "expert_unpermute" : "fc2";
    if (forward_like) {
      const std::string base = op_name.substr(0, op_name.rfind('_'));  // strip _fwd / _recompute
      // With tp_comm_overlap, QKV's and a dense FC1's gathers, and the projection's and a dense FC2's
      // reduce-scatters, are their split GEMMs' (compute_overlapped); the amax reduction before the
      // gather stays in line.
      if (tp && sp && (base == "ln1" || (base == "ln2" && !m_.moe()))) {
        const bool fp8 = base == "ln1" ? fp8_norms_.attention : fp8_norms_.ffn;
        if (amax_reduced(fp8)) tpc(CollectiveOp::AllReduce, "tp_amax_allreduce", kAmaxBytes);
        if (!overlapped(base == "ln1" ? "qkv" : "fc1")) tpc(CollectiveOp::AllGather, "tp_allgather", gather_bytes(fp8));
      }
      if (tp && (base == "proj" || (base == ffn_out && !moe_sp)) && !overlapped(base)) {
        tpc(sp ? CollectiveOp::ReduceScatter : CollectiveOp::AllReduce, sp ? "tp_reducescatter" : "tp_allreduce", tp_bytes_);
      }
      if (base == "expert_permute") dispatch("");
      if (base == "expert_fc2") combine("");
    } else {
      // The row-parallel GEMMs' output gradients: gather_output_grad. QKV's and FC1's input gradients:
      // ColumnBackward above. The MoE router's, without sequence parallelism: here, in line.
      if (tp && !sp && m_.moe() && op_name == "router_dgrad") tpc(CollectiveOp::AllReduce, "tp_allreduce_bwd", tp_bytes_);
      if (op_name == "expert_unpermute_bwd") dispatch("_bwd");
      if (op_name == "expert_fc1_wgrad") combine("_bwd");
    }
  }

  // With SP, the all-gather of a row-parallel GEMM's output gradient (the projection's, or a dense
  // FC2's; an MoE layer's experts gather their routed tokens' gradients after the all-to-all, after_op),
  // in line before the first backward op of that GEMM's part of the list (its bias gradient, FP8 cast or
  // input-gradient GEMM): after the residual add's backward where dropout gives it one, at the start of
  // the part where it has none.
  void gather_output_grad(std::size_t i, int mb, std::int64_t& prev, const std::string& prefix, int layer) {
    if (!(l_.sequence_parallel && l_.tp > 1)) return;
    const std::vector<OpCost>& ops = lists_[kBwd];
    const auto part = [](const std::string& name) -> std::string {
      if (name.starts_with("proj_")) return "proj";
      if (name.starts_with("fc2_")) return "fc2";
      return "";
    };
    const std::string gemm = part(ops[i].name);
    if (gemm.empty() || (i > 0 && part(ops[i - 1].name) == gemm)) return;
    const bool fp8 = gemm == "proj" ? fp8_norms_.attention : fp8_norms_.ffn;
    if (amax_reduced(fp8)) {
      prev = coll1(CollectiveOp::AllReduce, GroupKind::Tp, kAmaxBytes, StreamKind::Compute, prefix + "tp_amax_allreduce_bwd",
                   mb, prev, layer, -1);
    }
    if (overlapped(gemm)) return;
    prev = coll1(CollectiveOp::AllGather, GroupKind::Tp, gather_bytes(fp8), StreamKind::Compute, prefix + "tp_allgather_bwd",
                 mb, prev, layer, -1);
  }

  // FP8 current scaling quantises a sequence-parallel shard that the tensor group then gathers in FP8,
  // so the ranks first agree on one scale: the shard's amax, one FP32 value, all-reduced (MAX) over the
  // tensor group in line on the compute stream. Transformer Engine sets with_amax_reduction over
  // tp_group for the column-parallel input quantizer (QKV's, FC1's) and the row-parallel output-gradient
  // quantizer (the projection's, FC2's) under sequence parallelism
  // (_customize_quantizers_float8_current_scaling in pytorch/module/linear.py, layernorm_linear.py,
  // layernorm_mlp.py); Float8CurrentScalingQuantizer::quantize_impl reduces the amax between its
  // nvte_compute_amax and the cast. `fp8`: the gathered tensor is FP8 (gather_bytes).
  static constexpr Bytes kAmaxBytes = 4;
  bool amax_reduced(bool fp8) const { return fp8 && m_.fp8_scaling() == Fp8Recipe::Current; }

  // ---- context parallelism ----
  //
  // Each pass over a layer's attention (forward, its recomputation, backward) needs the whole sequence's
  // K and V of the rank's heads, and the backward returns their gradients to the ranks that hold them:
  //  - all-gather (Layout::cp_comm "allgather"): Llama 3's form (Llama Team 2024, §3.3.2: "we first
  //    all-gather the key (K) and value (V) tensors, and then compute attention output for the local query
  //    (Q) tensor chunk"), as Transformer Engine's AttnFuncWithCPAndKVAllGather runs it (transformer_engine/
  //    pytorch/attention/dot_product_attention/context_parallel.py): K and V all-gathered over the Cp group
  //    before the pass's first attention op, on the compute stream ("KV all-gather between CP ranks is
  //    exposed"; only the rank's own K and V are saved for the backward), and the backward reduce-scatters
  //    their gradients after its last.
  //  - ring ("p2p", AttnFuncWithCPAndKVP2P): the same bytes go round the group beside the kernels. The
  //    all-gather stands for the ring's exchanges, on the Cp communicator's own stream (the P2P stream,
  //    plan.hpp) from the op before the attention; the first step's kernel (model.cpp,
  //    flash_attention_ring) runs beside it and the other steps' op waits for it, which also orders each
  //    exchange after the one before. The backward's gradients come back after its last step, on the
  //    compute stream as above (TE waits for that exchange before it returns).
  void gather_kv(int list, std::size_t i, int mb, std::int64_t& prev, const std::string& prefix, int layer) {
    if (l_.cp == 1 || static_cast<std::ptrdiff_t>(i) != attn_first_[static_cast<std::size_t>(list)]) return;
    const char* what = list == kFwd ? "cp_allgather_kv" : list == kRecompute ? "recompute.cp_allgather_kv" : "cp_allgather_kv_bwd";
    if (ctx_.cp_ring) {
      kv_gathered_ =
          coll1(CollectiveOp::AllGather, GroupKind::Cp, cp_bytes_, StreamKind::P2P, prefix + what, mb, prev, layer, -1);
      return;
    }
    prev = coll1(CollectiveOp::AllGather, GroupKind::Cp, cp_bytes_, StreamKind::Compute, prefix + what, mb, prev, layer, -1);
  }
  // After op i: the ring's later steps (the op after the first attention op) wait for the exchange.
  void await_kv(int list, std::size_t i) {
    if (!ctx_.cp_ring || static_cast<std::ptrdiff_t>(i) != attn_first_[static_cast<std::size_t>(list)] + 1) return;
    prog_->add_dep_to_last(kv_gathered_);
  }
  void reduce_kv_grads(std::size_t i, int mb, std::int64_t& prev, const std::string& prefix, int layer) {
    if (l_.cp == 1 || static_cast<std::ptrdiff_t>(i) != attn_last_[static_cast<std::size_t>(kBwd)]) return;
    prev = coll1(CollectiveOp::ReduceScatter, GroupKind::Cp, cp_bytes_, StreamKind::Compute, prefix + "cp_reducescatter_dkv", mb,
                 prev, layer, -1);
  }

  // ---- tensor-parallel backward of the column-parallel GEMMs ----
  //
  // QKV and FC1 are Megatron-LM's ColumnParallelLinear; their backward is
  // LinearWithGradAccumulationAndAsyncCommunication.backward (megatron/core/tensor_parallel/layers.py;
  // in the 2022 code Korthikanti et al. measured, ColumnParallelLinearWithAsyncAllreduce and
  // ColumnParallelLinearWithSequenceParallelism in megatron/mpu/layers.py), which issues, in this order:
  //   SP only: an async all-gather of the layer's saved, sequence-split input (the forward's gathered
  //            copy is not kept), for the weight gradient;
  //   the input-gradient GEMM (dgrad);
  //   SP: handle.wait() on the all-gather, then an async reduce-scatter of the input gradient;
  //   no SP: an async all-reduce of the input gradient (async_tensor_model_parallel_allreduce, on unless
  //          --no-async-tensor-model-parallel-allreduce);
  //   the weight-gradient GEMM (wgrad), overlapping that collective;
  //   handle.wait() on the collective before the layer's backward returns to the LayerNorm backward.
  // (Megatron asks for CUDA_DEVICE_MAX_CONNECTIONS=1 so that each collective is scheduled before the
  // GEMM it overlaps.) The SMs the NCCL kernels hold slow the GEMMs they overlap, and so does the memory
  // bandwidth their traffic takes where a GEMM's memory roof binds (the simulator's contended,
  // sim/plan_sim.cpp); what the GEMMs' traffic takes from NCCL is not modelled.
  // The collectives run on the tensor-parallel communicator's own NCCL stream, beside the compute
  // stream and beside the data-parallel communicator's stream. The Plan has no stream per communicator:
  // they go on the P2P stream, whose ops wait for nothing but their dependencies, each depending on the
  // previous one (last_async_tp_: the communicator's stream order). On the Collective stream they would
  // queue behind the data-parallel buckets of the last micro-batch, which NCCL runs concurrently (seen:
  // GPT-3 175B on 1,024 GPUs 3% slower, each stage's last backward waiting for its buckets). The gathered
  // input lives in Megatron's global "mpu" memory buffer, which the forward all-gather also uses and
  // which the plan counts in neither pass, so memory is unchanged. The MoE router is not a
  // ColumnParallelLinear: its collective stays as after_op places it.
  struct ColumnBackward {
    std::int64_t gather = -1;  // SP: the all-gather of the input for the weight gradient
    std::int64_t reduce = -1;  // the input gradient's all-reduce / reduce-scatter, not yet waited for
    bool wgrad_next = false;   // the next op is the weight-gradient GEMM
  };
  bool is_column_parallel_dgrad(const std::string& op_name) const {
    return l_.tp > 1 && (op_name == "qkv_dgrad" || (!m_.moe() && op_name == "fc1_dgrad"));
  }
  // SP: the all-gather of the saved b·s/t·h input (tp_bytes_, the gathered array; in FP8, `fp8`) after
  // `dep` (the op before the dgrad: PyTorch's NCCL stream waits for the compute stream at issue). -1
  // without SP.
  std::int64_t regather_input(int mb, std::int64_t dep, const std::string& prefix, int layer, bool fp8) {
    if (!(l_.sequence_parallel && l_.tp > 1)) return -1;
    return async_tp(coll1(CollectiveOp::AllGather, GroupKind::Tp, gather_bytes(fp8), StreamKind::P2P, prefix + "tp_allgather_wgrad", mb,
                          dep, layer, -1));
  }
  // The input gradient's collective after the dgrad `dgrad` (and, with SP, the all-gather `gather`).
  std::uint32_t reduce_input_grad(int mb, std::int64_t dgrad, std::int64_t gather, const std::string& prefix, int layer) {
    const bool sp = l_.sequence_parallel;
    const std::uint32_t op = coll1(sp ? CollectiveOp::ReduceScatter : CollectiveOp::AllReduce, GroupKind::Tp, tp_bytes_,
                                   StreamKind::P2P, prefix + (sp ? "tp_reducescatter_bwd" : "tp_allreduce_bwd"), mb, dgrad,
                                   layer, -1);
    if (gather >= 0) prog_->add_dep_to_last(static_cast<std::uint32_t>(gather));
    return async_tp(op);
  }
  // Orders the asynchronous TP collective just added after the previous one, as their stream would.
  std::uint32_t async_tp(std::uint32_t op) {
    if (last_async_tp_ >= 0) prog_->add_dep_to_last(static_cast<std::uint32_t>(last_async_tp_));
    last_async_tp_ = op;
    return op;
  }

  // ---- tensor-parallel communication overlap (Layout::tp_comm_overlap) ----
  //
  // Transformer Engine's userbuffers (transformer_engine/pytorch/module/base.py, initialize_ub, 2024:
  // methods "ring_exchange" for qkv_fprop, fc1_fprop, proj_dgrad and fc2_dgrad; "pipeline" for
  // proj_fprop and fc2_fprop; "bulk" for the column-parallel GEMMs' backward, which ColumnBackward
  // above overlaps as Megatron does without them):
  //   ring exchange: the GEMM in tp chunks along its tokens, the first on the rank's own shard; while a
  //     chunk runs, each rank passes the shard it holds to the next (userbuffers_send with use_ce, the
  //     default: the copy engines, no SMs), and the next chunk runs on the shard that came in. A step
  //     moves one shard per rank, as a ring all-gather of gathered/(tp − 1) bytes does: here that
  //     all-gather, copy_engine, on the P2P stream, each step after the previous one.
  //   pipeline: the GEMM in num_splits chunks (4, initialize_ub's default and NeMo's configs), each
  //     chunk's output reduce-scattered by kernels on SMs of their own (num_sm) while the next chunk
  //     runs: a reduce-scatter of 1/num_splits of the array after each chunk, each after the previous
  //     one; the op after the GEMM waits for the last. NCCL's CTAs stand in for the num_sm SMs.
  // The chunks run back to back on the compute stream, each timed as its share of the whole GEMM
  // (OpCost::split: userbuffers launch them over several streams, so their tiles share waves). The NCCL
  // model prices the collectives; userbuffers' own latencies have no public figure.
  static constexpr int kPipelineSplits = 4;
  struct Overlapped {
    std::int64_t last = -1;      // the op the pass goes on from
    std::int64_t gathered = -1;  // ring exchange: its last step (the whole input has arrived); else -1
  };
  // Whether GEMM `base` ("qkv", "proj", "fc1", "fc2") is split (FC1 and FC2: a dense layer's only).
  bool overlapped(const std::string& base) const {
    return l_.tp_comm_overlap && (base == "qkv" || base == "proj" || (!m_.moe() && (base == "fc1" || base == "fc2")));
  }
  // How op i of `list` runs: in tp chunks after a ring exchange (QKV's and FC1's forward, the
  // projection's and FC2's input gradient), in kPipelineSplits chunks each before a reduce-scatter (the
  // projection's and FC2's forward), or whole.
  enum class Split { None, Ring, Pipeline };
  Split split_of(int list, std::size_t i) const {
    const OpCost& c = lists_[static_cast<std::size_t>(list)][i];
    const std::string gemm = c.name.substr(0, c.name.find('_'));
    if (c.kind != OpCost::Kind::Gemm || !overlapped(gemm)) return Split::None;
    if (list == kBwd) return (gemm == "proj" || gemm == "fc2") && c.name == gemm + "_dgrad" ? Split::Ring : Split::None;
    if (list != kFwd && list != kRecompute) return Split::None;
    return gemm == "qkv" || gemm == "fc1" ? Split::Ring : Split::Pipeline;
  }
  // The chunks op i of `list` runs in (0: whole).
  int split_parts(int list, std::size_t i) const {
    const Split s = split_of(list, i);
    return s == Split::Ring ? l_.tp : s == Split::Pipeline ? kPipelineSplits : 0;
  }
  // Op i of `list`, after `prev`: split with its collective as above when it is one of those GEMMs, else
  // compute() alone.
  Overlapped compute_overlapped(int list, std::size_t i, int mb, std::int64_t prev, int layer, std::int64_t local,
                                const std::string& prefix) {
    const std::int32_t chunk = split_cost_ids_[static_cast<std::size_t>(list)][i];
    if (chunk < 0) return {compute(list, i, mb, prev, layer, local), -1};
    const std::string& name = lists_[static_cast<std::size_t>(list)][i].name;
    if (split_of(list, i) == Split::Ring) {
      const bool attention = name.starts_with("qkv_") || name.starts_with("proj_");
      const Bytes gathered = gather_bytes(attention ? fp8_norms_.attention : fp8_norms_.ffn);
      const Bytes step_bytes = (gathered + l_.tp - 2) / (l_.tp - 1);
      const std::string what = list == kBwd ? "tp_ring_allgather_bwd" : "tp_ring_allgather";
      std::int64_t step = prev;
      std::int64_t last = compute(list, i, mb, prev, layer, local, chunk);
      for (int j = 1; j < l_.tp; ++j) {
        step = coll1(CollectiveOp::AllGather, GroupKind::Tp, step_bytes, StreamKind::P2P, prefix + what, mb, step, layer, -1);
        prog_->ops.back().copy_engine = true;  // the shard's copies, not NCCL's kernels
        last = compute(list, i, mb, step, layer, local, chunk);
      }
      return {last, step};
    }
    const Bytes piece = (tp_bytes_ + kPipelineSplits - 1) / kPipelineSplits;
    std::int64_t reduce = -1;
    for (int j = 0; j < kPipelineSplits; ++j) {
      // Chunks after the first follow it on the compute stream.
      const std::uint32_t c = compute(list, i, mb, j == 0 ? prev : -1, layer, local, chunk);
      const std::int64_t before = reduce;
      reduce = coll1(CollectiveOp::ReduceScatter, GroupKind::Tp, piece, StreamKind::P2P, prefix + "tp_pipeline_reducescatter", mb, c,
                     layer, -1);
      if (before >= 0) prog_->add_dep_to_last(static_cast<std::uint32_t>(before));
    }
    return {reduce, -1};
  }

  std::int32_t& act_slot(int mb, int c, std::int64_t j) {
    return act_[static_cast<std::size_t>(mb * stage_layers_ + local_layer(c, j))];
  }

  // Indices into lists_.
  static constexpr int kFwd = static_cast<int>(OpList::LayerForward), kBwd = static_cast<int>(OpList::LayerBackward),
                       kRecompute = static_cast<int>(OpList::LayerRecompute), kEmbFwd = static_cast<int>(OpList::EmbeddingForward),
                       kEmbBwd = static_cast<int>(OpList::EmbeddingBackward), kHeadFwd = static_cast<int>(OpList::HeadForward),
                       kHeadBwd = static_cast<int>(OpList::HeadBackward);
  static constexpr std::size_t kParamKindCount = static_cast<std::size_t>(ParamKind::LoraB) + 1;
  struct LayerSets {
    std::array<std::int32_t, kParamKindCount> of_kind{};  // param set of each tensor of the layer (one tensor each)
    std::int32_t all = -1;                                // all the layer's tensors
  };

  const TransformerModel& m_;
  const Layout& l_;
  Plan& plan_;
  PlanTables tables_;
  std::unordered_map<std::uint64_t, std::uint32_t> compute_names_;  // compute_name's memo
  OpContext ctx_;
  Bytes e_ = 2, pe_ = 2, ge_ = 2;
  int M_ = 1, v_ = 1, V_ = 1, stride_ = 1;
  std::vector<Layout::LayerRange> chunks_;  // this stage's chunks' layers
  std::vector<std::int64_t> chunk_local_;   // stage-local index of each chunk's first layer
  std::int64_t stage_layers_ = 0;
  std::array<std::vector<OpCost>, kOpLists> lists_;
  std::vector<std::vector<std::int32_t>> cost_ids_;
  std::vector<std::vector<std::optional<ParamKind>>> param_kinds_;
  std::vector<std::vector<std::int32_t>> split_cost_ids_;  // per list and op: its chunk's cost when split, else -1
  bool gather_p2p_ = false;  // pipeline messages are TP slices the receiver all-gathers
  Bytes p2p_bytes_ = 0, tp_bytes_ = 0, cp_bytes_ = 0, a2a_bytes_ = 0, routed_tp_bytes_ = 0, act_layer_ = 0, act_full_ = 0;
  // Which SP all-gathers carry FP8 (model.hpp): an fp8 model's of what its FP8 GEMMs read, one byte an
  // element, as Transformer Engine sends them (LayerNormLinear gathers its FP8 LayerNorm output, forward
  // and again for the weight gradient; a row-parallel Linear casts its output gradient before gathering).
  Fp8LayerNorms fp8_norms_;
  Bytes gather_bytes(bool fp8) const { return fp8 ? tp_bytes_ / e_ : tp_bytes_; }
  Bytes act_loss_ = 0;                   // what the loss keeps for its backward, per micro-batch (last stage)
  std::vector<std::int32_t> loss_act_;   // its tensor, per micro-batch
  std::array<std::ptrdiff_t, kOpLists> attn_first_{}, attn_last_{};  // each list's first and last attention op, -1: none
  std::uint32_t kv_gathered_ = 0;  // the ring's exchange of the pass under way (gather_kv)

  // Per-stage state.
  Program* prog_ = nullptr;
  int stage_ = 0;
  std::int32_t next_tensor_ = 0;
  std::vector<std::int64_t> coll_seq_;
  std::unordered_map<std::int32_t, PlanOp> live_;       // live tensors' Alloc ops
  std::vector<std::int32_t> act_;                       // activation tensor per (micro-batch, chunk, layer)
  std::vector<LayerSets> layer_sets_;                   // per stage-local layer
  std::int32_t embedding_set_ = -1, final_norm_set_ = -1, extra_set_ = -1, stage_set_ = -1;
  std::int64_t extra_elements_ = 0;
  std::int32_t extra_gathered_ = -1;
  std::vector<GradientReady> ready_dense_, ready_expert_;  // every final gradient, in ready order
  std::vector<std::int32_t> predicted_order_;             // final_gradient_order(), with overlap_param_gather
  std::unordered_map<std::int32_t, std::vector<std::uint32_t>> gather_ahead_of_;  // tensor -> its gathers not yet waited for
  PendingBuckets pending_dense_, pending_expert_;
  std::vector<std::uint32_t> reductions_;                 // the overlapped buckets issued
  std::vector<std::uint32_t> zero3_reductions_;           // ZeRO-3: the last micro-batch's reductions (reduce_zero3)
  std::int64_t last_replica_reduce_ = -1;                 // hybrid sharding: the last all-reduce over the replicas
  std::unordered_map<std::int32_t, std::int32_t> shard_sets_;  // hybrid sharding: param set -> its rank's shard
  std::int64_t last_async_tp_ = -1;                       // the last asynchronous TP collective (ColumnBackward)
  std::int64_t last_compute_ = -1;
};

GroupSet make_groups(int world, int count, const std::function<int(int)>& group_of) {
  GroupSet set;
  set.group_of_rank.resize(static_cast<std::size_t>(world));
  set.members.resize(static_cast<std::size_t>(count));
  for (int r = 0; r < world; ++r) {
    int g = group_of(r);
    set.group_of_rank[static_cast<std::size_t>(r)] = g;
    set.members[static_cast<std::size_t>(g)].push_back(r);
  }
  return set;
}

// DpIntra / DpInter: each Dp group split by host. Needs every host to hold the same number of each
// group's members; otherwise no rank is in a group of these kinds.
void add_host_split_groups(Plan& plan, int ranks_per_host) {
  const int world = plan.cluster.ranks;
  GroupSet intra{std::vector<int>(static_cast<std::size_t>(world), -1), {}};
  GroupSet inter = intra;
  const GroupSet& dp = plan.groups[static_cast<std::size_t>(GroupKind::Dp)];
  bool aligned = true;
  std::vector<std::vector<std::vector<int>>> split;  // per dp group: its members, per host
  for (const auto& members : dp.members) {
    std::vector<std::vector<int>> hosts;
    for (int r : members) {
      if (hosts.empty() || r / ranks_per_host != hosts.back().front() / ranks_per_host) hosts.emplace_back();
      hosts.back().push_back(r);
    }
    for (const auto& h : hosts) aligned = aligned && h.size() == hosts.front().size();
    split.push_back(std::move(hosts));
  }
  if (aligned) {
    for (const auto& hosts : split) {
      for (const auto& h : hosts) {
        for (int r : h) intra.group_of_rank[static_cast<std::size_t>(r)] = static_cast<int>(intra.members.size());
        intra.members.push_back(h);
      }
      for (std::size_t pos = 0; pos < hosts.front().size(); ++pos) {
        std::vector<int> across;
        for (const auto& h : hosts) {
          inter.group_of_rank[static_cast<std::size_t>(h[pos])] = static_cast<int>(inter.members.size());
          across.push_back(h[pos]);
        }
        inter.members.push_back(std::move(across));
      }
    }
  }
  plan.groups[static_cast<std::size_t>(GroupKind::DpIntra)] = std::move(intra);
  plan.groups[static_cast<std::size_t>(GroupKind::DpInter)] = std::move(inter);
}

}  // namespace

namespace {

// Communicators in Megatron rank order, rank = ((pp_i·dp + dp_i)·cp + cp_i)·tp + tp_i, from the plan's
// layout and cluster. The gradient dimension is dp·cp (plan.hpp's Dp). The expert groups fold context
// parallelism in, as Megatron-Core's MoE parallel folding does (parallel_state.py,
// initialize_model_parallel: the experts' RankGenerator over tp (expert_tensor_parallel_size's default) x
// ep x dp·cp/ep x pp with cp 1, order "tp-cp-ep-dp-pp"): Ep is ep consecutive members of the dp·cp
// dimension, ExpertDp the members holding the same experts.
void add_communicators(Plan& plan) {
  const Layout& layout = plan.layout;
  const int tp = layout.tp, dp = layout.grad_ranks(), cp = layout.cp, pp = layout.pp, ep = layout.ep;
  const int world = plan.cluster.ranks;
  auto tpi = [=](int r) { return r % tp; };
  auto dpi = [=](int r) { return (r / tp) % dp; };
  auto ppi = [=](int r) { return r / (tp * dp); };
  plan.groups.resize(kGroupKinds);
  plan.groups[static_cast<std::size_t>(GroupKind::Tp)] = make_groups(world, dp * pp, [=](int r) { return r / tp; });
  plan.groups[static_cast<std::size_t>(GroupKind::Dp)] =
      make_groups(world, tp * pp, [=](int r) { return ppi(r) * tp + tpi(r); });
  plan.groups[static_cast<std::size_t>(GroupKind::Pp)] =
      make_groups(world, tp * dp, [=](int r) { return dpi(r) * tp + tpi(r); });
  plan.groups[static_cast<std::size_t>(GroupKind::Ep)] =
      make_groups(world, pp * (dp / ep) * tp, [=](int r) { return (ppi(r) * (dp / ep) + dpi(r) / ep) * tp + tpi(r); });
  plan.groups[static_cast<std::size_t>(GroupKind::ExpertDp)] =
      make_groups(world, pp * ep * tp, [=](int r) { return (ppi(r) * ep + dpi(r) % ep) * tp + tpi(r); });
  plan.groups[static_cast<std::size_t>(GroupKind::Cp)] =
      make_groups(world, world / cp, [=](int r) { return r / (tp * cp) * tp + tpi(r); });
  add_host_split_groups(plan, std::max(1, plan.cluster.ranks_per_host));
  // ZeroShard / ZeroReplica: each Dp group cut into blocks of zero_shards() consecutive members, and
  // across the blocks by position.
  const int shard = layout.zero_shards(), replicas = layout.zero_replicas();
  auto dp_group = [=](int r) { return ppi(r) * tp + tpi(r); };
  plan.groups[static_cast<std::size_t>(GroupKind::ZeroShard)] =
      make_groups(world, tp * pp * replicas, [=](int r) { return dp_group(r) * replicas + dpi(r) / shard; });
  plan.groups[static_cast<std::size_t>(GroupKind::ZeroReplica)] =
      make_groups(world, tp * pp * shard, [=](int r) { return dp_group(r) * shard + dpi(r) % shard; });
  // Embedding: the first and the last stage's ranks of each Pp group.
  GroupSet embedding{std::vector<int>(static_cast<std::size_t>(world), -1), {}};
  if (pp > 1) {
    for (int r = 0; r < tp * dp; ++r) {
      const int last = r + (pp - 1) * tp * dp;
      embedding.group_of_rank[static_cast<std::size_t>(r)] = embedding.group_of_rank[static_cast<std::size_t>(last)] = r;
      embedding.members.push_back({r, last});
    }
  }
  plan.groups[static_cast<std::size_t>(GroupKind::Embedding)] = std::move(embedding);
}

}  // namespace

Plan build_plan(const TransformerModel& model, const Layout& layout, const ClusterShape& cluster) {
  validate(layout, model, cluster.ranks, cluster.ranks_per_host);
  Plan plan;
  plan.model = model;
  plan.layout = layout;
  plan.cluster = cluster;
  add_communicators(plan);

  const int world = cluster.ranks;
  Builder builder(model, layout, plan);
  plan.programs.reserve(static_cast<std::size_t>(layout.pp));
  for (int s = 0; s < layout.pp; ++s) builder.build_stage(s);
  plan.program_of_rank.resize(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) plan.program_of_rank[static_cast<std::size_t>(r)] = r / (world / layout.pp);
  plan.model_flops = training_flops(model, layout.global_batch, Recompute::None);
  return plan;
}

Plan reduction_plan(const ClusterShape& cluster, std::int64_t elements, DType dtype) {
  if (cluster.ranks < 1 || elements < 1) throw InvalidArgument("reduction_plan: needs >= 1 rank and >= 1 element");
  Plan plan;
  plan.model = gpt_model("gradient-reduction", 1, 1, 1, 1, 1, dtype);
  plan.layout.dp = cluster.ranks;
  plan.layout.global_batch = cluster.ranks;
  plan.cluster = cluster;
  add_communicators(plan);

  Program p;
  ParamTensor t;
  t.kind = ParamKind::Flat;
  t.elements = elements;
  t.dtype = dtype;
  p.params.push_back(t);
  p.param_sets.push_back({{0, elements}});
  const Bytes bytes = elements * gradient_bytes_per_element(dtype);
  PlanOp grads;
  grads.kind = OpKind::Alloc;
  grads.tensor_class = TensorClass::Grads;
  grads.tensor = 0;
  grads.bytes = bytes;
  grads.params = 0;
  plan.names = {"grads", "dp.allreduce"};
  p.add(grads);
  PlanOp ar = collective_op(CollectiveOp::AllReduce, GroupKind::Dp, bytes, StreamKind::Collective);
  ar.tensor_class = TensorClass::Grads;
  ar.params = 0;
  ar.name = 1;
  p.add(ar, {0});
  plan.programs.push_back(std::move(p));
  plan.program_names = {"reduce"};
  plan.program_of_rank.assign(static_cast<std::size_t>(cluster.ranks), 0);
  return plan;
}

}  // namespace twinbed
