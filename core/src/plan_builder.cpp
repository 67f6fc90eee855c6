// build_plan: model + layout + cluster -> Plan (contract in plan.hpp).
//
// One Program per pipeline stage: every tp·dp rank of a stage runs the same ops, and everything in an
// op is relative to the executing rank, so the stage's ranks share it.
#include <algorithm>
#include <functional>
#include <string>
#include <unordered_map>

#include "twinbed/core/error.hpp"
#include "twinbed/core/plan.hpp"

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

// Gradient bytes per parameter (16-bit dtypes keep 16-bit gradients, FP32 32-bit), from model.hpp's
// model-state accounting so the two never disagree.
Bytes grad_bytes_per_param(DType dt) { return model_state_bytes(1, dt, 0, 1).grads; }
Bytes param_bytes_per_param(DType dt) { return model_state_bytes(1, dt, 0, 1).params; }

class Builder {
 public:
  Builder(const TransformerModel& model, const Layout& layout, Plan& plan)
      : m_(model), l_(layout), plan_(plan), ctx_(layout.op_context()) {
    e_ = bytes_per_element(m_.dtype);
    M_ = l_.micro_batches();
    v_ = l_.virtual_stages;
    V_ = l_.pp * v_;
    stride_ = l_.tp * l_.dp;
    lpc_ = static_cast<int>(l_.layers_per_chunk(m_));
    fwd_ = layer_forward_ops(m_, ctx_);
    bwd_ = layer_backward_ops(m_, ctx_);
    rec_ = layer_recompute_ops(m_, ctx_, l_.recompute);
    emb_fwd_ = embedding_forward_ops(m_, ctx_);
    emb_bwd_ = embedding_backward_ops(m_, ctx_);
    head_fwd_ = head_forward_ops(m_, ctx_);
    head_bwd_ = head_backward_ops(m_, ctx_);
    for (auto* list : {&fwd_, &bwd_, &rec_, &emb_fwd_, &emb_bwd_, &head_fwd_, &head_bwd_}) {
      std::vector<std::int32_t> ids;
      for (const OpCost& c : *list) ids.push_back(cost_id(c));
      cost_ids_.push_back(ids);
    }
    const bool sp = l_.sequence_parallel && l_.tp > 1;
    const Bytes bsh = static_cast<Bytes>(l_.micro_batch) * m_.seq_len * m_.hidden * e_;
    p2p_bytes_ = sp ? bsh / l_.tp : bsh;
    tp_bytes_ = bsh;  // all-reduce: per-rank buffer; SP all-gather / reduce-scatter: the gathered array
    a2a_bytes_ = static_cast<Bytes>(l_.micro_batch) * m_.seq_len * m_.top_k * m_.hidden * e_ / (sp ? l_.tp : 1);
    act_layer_ = rank_activation_bytes_per_layer(m_, l_);
    Layout none = l_;
    none.recompute = Recompute::None;
    act_full_ = rank_activation_bytes_per_layer(m_, none);
    layer_params_ = layer_params();
  }

  void build_stage(int stage);

 private:
  // Dense and expert parameters of one layer on one rank (tp-sharded as Megatron shards them; the
  // totals per stage come from rank_parameters, this only splits them per layer).
  struct LayerParams {
    std::int64_t dense = 0;
    std::int64_t expert = 0;
  };
  LayerParams layer_params() const {
    const std::int64_t h = m_.hidden, f = m_.ffn(), t = l_.tp;
    LayerParams p;
    p.dense = (3 * h * h + 3 * h) / t + h * h / t + h + 4 * h;
    const std::int64_t ffn = (h * f + f) / t + f * h / t + h;
    if (m_.moe()) {
      p.dense += h * m_.experts;
      p.expert = ffn * (m_.experts / l_.ep);
    } else {
      p.dense += ffn;
    }
    return p;
  }

  std::uint32_t name_id(const std::string& s) {
    auto [it, fresh] = names_.emplace(s, static_cast<std::uint32_t>(plan_.names.size()));
    if (fresh) plan_.names.push_back(s);
    return it->second;
  }
  std::int32_t cost_id(const OpCost& c) {
    for (std::size_t i = 0; i < plan_.costs.size(); ++i) {
      if (plan_.costs[i] == c) return static_cast<std::int32_t>(i);
    }
    plan_.costs.push_back(c);
    return static_cast<std::int32_t>(plan_.costs.size() - 1);
  }
  static SpanKind span_of(const OpCost& c) {
    switch (c.kind) {
      case OpCost::Kind::Gemm: return SpanKind::Gemm;
      case OpCost::Kind::Attention: return SpanKind::Attention;
      case OpCost::Kind::MemoryBound: return SpanKind::MemoryBound;
    }
    return SpanKind::Other;
  }

  // ---- op emitters (each returns the new op's index) ----
  std::uint32_t compute(int list, std::size_t i, const std::string& prefix, int mb, std::int64_t dep) {
    const std::vector<OpCost>* lists[] = {&fwd_, &bwd_, &rec_, &emb_fwd_, &emb_bwd_, &head_fwd_, &head_bwd_};
    const OpCost& c = (*lists[list])[i];
    PlanOp op;
    op.kind = OpKind::Compute;
    op.stream = StreamKind::Compute;
    op.span = span_of(c);
    op.name = name_id(prefix + c.name);
    op.cost = cost_ids_[static_cast<std::size_t>(list)][i];
    op.micro_batch = mb;
    return add(op, dep);
  }
  std::uint32_t collective(CollectiveOp what, GroupKind g, Bytes bytes, StreamKind stream, const std::string& name,
                           int mb, const std::vector<std::uint32_t>& deps) {
    PlanOp op;
    op.kind = OpKind::Collective;
    op.stream = stream;
    op.span = SpanKind::Collective;
    op.collective = what;
    op.group = g;
    op.bytes = bytes;
    op.tag = coll_seq_[static_cast<std::size_t>(g)]++;
    op.name = name_id(name);
    op.micro_batch = mb;
    return prog_->add(op, deps);
  }
  std::uint32_t coll1(CollectiveOp what, GroupKind g, Bytes bytes, StreamKind stream, const std::string& name, int mb,
                      std::int64_t dep) {
    std::vector<std::uint32_t> d;
    if (dep >= 0) d.push_back(static_cast<std::uint32_t>(dep));
    return collective(what, g, bytes, stream, name, mb, d);
  }
  std::uint32_t p2p(OpKind kind, int peer_offset, std::int64_t tag, const std::string& name, int mb, std::int64_t dep) {
    PlanOp op;
    op.kind = kind;
    op.stream = StreamKind::P2P;
    op.span = SpanKind::SendRecv;
    op.peer_offset = peer_offset;
    op.tag = tag;
    op.bytes = p2p_bytes_;
    op.name = name_id(name);
    op.micro_batch = mb;
    return add(op, dep);
  }
  // Allocs take effect at the head of their stream; returns the tensor id.
  std::int32_t alloc(TensorClass cls, Bytes bytes, StreamKind stream, const std::string& name, int mb, std::int64_t dep) {
    PlanOp op;
    op.kind = OpKind::Alloc;
    op.stream = stream;
    op.tensor_class = cls;
    op.tensor = next_tensor_++;
    op.bytes = bytes;
    op.name = name_id(name);
    op.micro_batch = mb;
    add(op, dep);
    live_bytes_[op.tensor] = {bytes, cls};
    return op.tensor;
  }
  std::uint32_t free(std::int32_t tensor, StreamKind stream, const std::string& name, int mb, std::int64_t dep) {
    PlanOp op;
    op.kind = OpKind::Free;
    op.stream = stream;
    op.tensor = tensor;
    auto it = live_bytes_.find(tensor);
    op.bytes = it->second.first;
    op.tensor_class = it->second.second;
    live_bytes_.erase(it);
    op.name = name_id(name);
    op.micro_batch = mb;
    return add(op, dep);
  }
  std::uint32_t add(const PlanOp& op, std::int64_t dep) {
    if (dep >= 0) return prog_->add(op, {static_cast<std::uint32_t>(dep)});
    return prog_->add(op);
  }

  // The TP / EP collectives between a layer's ops, keyed by the op after which they run.
  // Forward: without SP, all-reduce after the row-parallel GEMMs (proj, fc2 / expert_unpermute); with
  // SP, all-gather after each LayerNorm and reduce-scatter after the row-parallel GEMMs. Backward: the
  // conjugates (Megatron's f/g operators). MoE: all-to-all after permute and after expert_fc2.
  void after_op(const std::string& op_name, bool forward_like, int mb, std::int64_t& prev, const std::string& prefix) {
    const bool sp = l_.sequence_parallel && l_.tp > 1;
    const bool tp = l_.tp > 1;
    const bool moe = m_.moe() && l_.ep > 1;
    auto tpc = [&](CollectiveOp op, const char* what) {
      prev = coll1(op, GroupKind::Tp, tp_bytes_, StreamKind::Compute, prefix + what, mb, prev);
    };
    auto a2a = [&](const char* what) {
      prev = coll1(CollectiveOp::AllToAll, GroupKind::Ep, a2a_bytes_, StreamKind::Compute, prefix + what, mb, prev);
    };
    const std::string ffn_out = m_.moe() ? "expert_unpermute" : "fc2";
    if (forward_like) {
      const std::string base = op_name.substr(0, op_name.rfind('_'));  // strip _fwd / _recompute
      if (tp && sp && (base == "ln1" || base == "ln2")) tpc(CollectiveOp::AllGather, "tp_allgather");
      if (tp && (base == "proj" || base == ffn_out)) {
        tpc(sp ? CollectiveOp::ReduceScatter : CollectiveOp::AllReduce, sp ? "tp_reducescatter" : "tp_allreduce");
      }
      if (moe && (base == "expert_permute" || base == "expert_fc2")) a2a("ep_alltoall");
    } else {
      const std::string ffn_in = m_.moe() ? "router_dgrad" : "fc1_dgrad";
      if (tp && sp && (op_name == "mlp_residual_bwd" || op_name == "attn_residual_bwd")) {
        tpc(CollectiveOp::AllGather, "tp_allgather_bwd");
      }
      if (tp && (op_name == "qkv_dgrad" || op_name == ffn_in)) {
        tpc(sp ? CollectiveOp::ReduceScatter : CollectiveOp::AllReduce, sp ? "tp_reducescatter_bwd" : "tp_allreduce_bwd");
      }
      if (moe && (op_name == "expert_unpermute_bwd" || op_name == "expert_permute_bwd")) a2a("ep_alltoall_bwd");
    }
  }

  const TransformerModel& m_;
  const Layout& l_;
  Plan& plan_;
  OpContext ctx_;
  Bytes e_ = 2;
  int M_ = 1, v_ = 1, V_ = 1, stride_ = 1, lpc_ = 1;
  std::vector<OpCost> fwd_, bwd_, rec_, emb_fwd_, emb_bwd_, head_fwd_, head_bwd_;
  std::vector<std::vector<std::int32_t>> cost_ids_;
  std::unordered_map<std::string, std::uint32_t> names_;
  Bytes p2p_bytes_ = 0, tp_bytes_ = 0, a2a_bytes_ = 0, act_layer_ = 0, act_full_ = 0;
  LayerParams layer_params_;

  // Per-stage state.
  Program* prog_ = nullptr;
  std::int32_t next_tensor_ = 0;
  std::vector<std::int64_t> coll_seq_;
  std::unordered_map<std::int32_t, std::pair<Bytes, TensorClass>> live_bytes_;
};

void Builder::build_stage(int stage) {
  plan_.programs.emplace_back();
  prog_ = &plan_.programs.back();
  plan_.program_names.push_back("stage" + std::to_string(stage));
  next_tensor_ = 0;
  coll_seq_.assign(kGroupKinds, 0);
  live_bytes_.clear();
  const int p = l_.pp;
  const bool zero3 = l_.zero_stage == 3;
  const bool last_stage = stage == p - 1;
  const Bytes pe = param_bytes_per_param(m_.dtype), ge = grad_bytes_per_param(m_.dtype);

  // Model state, live for the whole iteration (ZeRO-sharded per rank_model_state_bytes).
  const ModelStateBytes state = rank_model_state_bytes(m_, l_, stage);
  alloc(TensorClass::Weights, state.params, StreamKind::Compute, "weights", -1, -1);
  alloc(TensorClass::Grads, state.grads, StreamKind::Compute, "grads", -1, -1);
  alloc(TensorClass::Optimizer, state.optimizer, StreamKind::Compute, "optimizer_state", -1, -1);

  // Embedding / head / final-norm parameters of this stage (what rank_parameters holds beyond layers).
  const RankParameters rp = rank_parameters(m_, l_.tp, p, l_.ep, stage);
  const std::int64_t lps = l_.layers_per_stage(m_);
  const std::int64_t extra_params = rp.dense - lps * layer_params_.dense;
  std::int32_t extra_gathered = -1;
  if (zero3 && extra_params > 0 && l_.dp > 1) {
    // ZeRO-3 gathers the (small) embedding/head parameters once for the iteration.
    extra_gathered = alloc(TensorClass::CommBuffer, extra_params * pe, StreamKind::Collective, "zero3.gather_extra", -1, -1);
    coll1(CollectiveOp::AllGather, GroupKind::Dp, extra_params * pe, StreamKind::Collective, "zero3.allgather_extra", -1, -1);
  }

  // Gradient producers of the final accumulation step: (op index, dense grad bytes, expert grad bytes).
  struct GradItem {
    std::uint32_t op;
    Bytes dense;
    Bytes expert;
  };
  std::vector<GradItem> grads;
  std::int64_t last_compute = -1;

  // Activations stored per (micro-batch, chunk, layer) between forward and backward.
  std::vector<std::int32_t> act(static_cast<std::size_t>(M_) * v_ * lpc_, -1);
  auto act_slot = [&](int mb, int c, int j) -> std::int32_t& {
    return act[(static_cast<std::size_t>(mb) * v_ + c) * lpc_ + j];
  };
  const Bytes layer_param_bytes = (layer_params_.dense + layer_params_.expert) * pe;

  for (const Step& st : stage_order(l_.schedule, p, stage, M_, v_)) {
    const int mb = st.micro_batch, c = st.chunk;
    const int vs = c * p + stage;                 // virtual stage
    const int first_layer = vs * lpc_;            // global index of the chunk's first layer
    const std::string mbs = std::to_string(mb);
    std::int64_t prev = -1;
    if (st.forward) {
      if (vs > 0) {
        const int from = (stage > 0) ? -stride_ : (p - 1) * stride_;
        prev = p2p(OpKind::Recv, from, (static_cast<std::int64_t>(mb) * V_ + vs) * 2, "pp.recv_act", mb, -1);
      }
      if (vs == 0) {
        for (std::size_t i = 0; i < emb_fwd_.size(); ++i) prev = compute(3, i, "", mb, prev);
        if (l_.tp > 1) {
          const bool sp = l_.sequence_parallel;
          prev = coll1(sp ? CollectiveOp::ReduceScatter : CollectiveOp::AllReduce, GroupKind::Tp, tp_bytes_,
                       StreamKind::Compute, sp ? "embedding.tp_reducescatter" : "embedding.tp_allreduce", mb, prev);
        }
      }
      std::int64_t prefetch_dep = prev;
      for (int j = 0; j < lpc_; ++j) {
        const std::string prefix = "l" + std::to_string(first_layer + j) + ".";
        act_slot(mb, c, j) = alloc(TensorClass::Activation, act_layer_, StreamKind::Compute, prefix + "activations", mb, prev);
        std::int32_t gathered = -1;
        std::int64_t gather = -1;
        if (zero3 && l_.dp > 1) {
          gathered = alloc(TensorClass::CommBuffer, layer_param_bytes, StreamKind::Collective, prefix + "zero3.params", mb,
                           prefetch_dep);
          gather = coll1(CollectiveOp::AllGather, GroupKind::Dp, layer_param_bytes, StreamKind::Collective,
                         prefix + "zero3.allgather", mb, prefetch_dep);
        }
        std::int64_t first_op = -1;
        for (std::size_t i = 0; i < fwd_.size(); ++i) {
          prev = compute(0, i, prefix, mb, prev);
          if (i == 0 && gather >= 0) prog_->add_dep_to_last(static_cast<std::uint32_t>(gather));
          if (i == 0) first_op = prev;
          after_op(fwd_[i].name, true, mb, prev, prefix);
        }
        prefetch_dep = first_op;  // the next layer's parameters are gathered once this layer has begun
        if (gathered >= 0) free(gathered, StreamKind::Compute, prefix + "zero3.params", mb, prev);
      }
      if (vs == V_ - 1) {
        for (std::size_t i = 0; i < head_fwd_.size(); ++i) prev = compute(5, i, "", mb, prev);
      } else {
        const int to = (stage < p - 1) ? stride_ : -(p - 1) * stride_;
        p2p(OpKind::Send, to, (static_cast<std::int64_t>(mb) * V_ + vs + 1) * 2, "pp.send_act", mb, prev);
      }
    } else {
      const bool final_pass = mb == M_ - 1;  // gradients complete after this micro-batch's backward
      if (vs < V_ - 1) {
        const int from = (stage < p - 1) ? stride_ : -(p - 1) * stride_;
        prev = p2p(OpKind::Recv, from, (static_cast<std::int64_t>(mb) * V_ + vs) * 2 + 1, "pp.recv_grad", mb, -1);
      } else {
        for (std::size_t i = 0; i < head_bwd_.size(); ++i) prev = compute(6, i, "", mb, prev);
        // The head's gradients (tied embedding copy, final norm) are ready here; with pp == 1 they are
        // counted with the embedding's below.
        if (final_pass && last_stage && stage > 0) grads.push_back({static_cast<std::uint32_t>(prev), extra_params * ge, 0});
      }
      std::int64_t prefetch_dep = prev;
      for (int j = lpc_ - 1; j >= 0; --j) {
        const std::string prefix = "l" + std::to_string(first_layer + j) + ".";
        std::int32_t gathered = -1;
        std::int64_t gather = -1;
        if (zero3 && l_.dp > 1) {
          gathered = alloc(TensorClass::CommBuffer, layer_param_bytes, StreamKind::Collective, prefix + "zero3.params", mb,
                           prefetch_dep);
          gather = coll1(CollectiveOp::AllGather, GroupKind::Dp, layer_param_bytes, StreamKind::Collective,
                         prefix + "zero3.allgather_bwd", mb, prefetch_dep);
        }
        std::int32_t workspace = -1;
        if (!rec_.empty()) {
          // Recomputation regenerates what the layer did not store, for the duration of its backward.
          workspace = alloc(TensorClass::Workspace, act_full_ - act_layer_, StreamKind::Compute, prefix + "recompute",
                            mb, prev);
        }
        bool first = true;
        std::int64_t first_op = -1;
        auto gate = [&]() {
          if (first && gather >= 0) prog_->add_dep_to_last(static_cast<std::uint32_t>(gather));
          if (first) first_op = prev;
          first = false;
        };
        for (std::size_t i = 0; i < rec_.size(); ++i) {
          prev = compute(2, i, prefix, mb, prev);
          gate();
          if (l_.recompute == Recompute::Full) after_op(rec_[i].name, true, mb, prev, prefix + "recompute.");
        }
        for (std::size_t i = 0; i < bwd_.size(); ++i) {
          prev = compute(1, i, prefix, mb, prev);
          gate();
          after_op(bwd_[i].name, false, mb, prev, prefix);
        }
        prefetch_dep = first_op;
        if (workspace >= 0) free(workspace, StreamKind::Compute, prefix + "recompute", mb, prev);
        free(act_slot(mb, c, j), StreamKind::Compute, prefix + "activations", mb, prev);
        if (gathered >= 0) free(gathered, StreamKind::Compute, prefix + "zero3.params", mb, prev);
        if (zero3 && l_.dp > 1) {
          // ZeRO-3 keeps no full gradients: each micro-batch's layer gradients are reduce-scattered.
          const Bytes gb = (layer_params_.dense + layer_params_.expert) * ge;
          std::int32_t buf = alloc(TensorClass::CommBuffer, gb, StreamKind::Collective, prefix + "zero3.grads", mb, prev);
          std::uint32_t rs = coll1(CollectiveOp::ReduceScatter, GroupKind::Dp, gb, StreamKind::Collective,
                                   prefix + "zero3.reducescatter", mb, prev);
          free(buf, StreamKind::Collective, prefix + "zero3.grads", mb, rs);
        } else if (final_pass) {
          grads.push_back({static_cast<std::uint32_t>(prev), layer_params_.dense * ge, layer_params_.expert * ge});
        }
      }
      if (vs == 0) {
        for (std::size_t i = 0; i < emb_bwd_.size(); ++i) prev = compute(4, i, "", mb, prev);
        if (final_pass && stage == 0) grads.push_back({static_cast<std::uint32_t>(prev), extra_params * ge, 0});
      } else {
        const int to = (stage > 0) ? -stride_ : (p - 1) * stride_;
        p2p(OpKind::Send, to, (static_cast<std::int64_t>(mb) * V_ + vs - 1) * 2 + 1, "pp.send_grad", mb, prev);
      }
    }
    last_compute = std::max<std::int64_t>(last_compute, prev);
  }
  // ---- data-parallel gradient reduction, in buckets, in the order gradients become ready ----
  std::vector<std::uint32_t> reductions;
  std::sort(grads.begin(), grads.end(), [](const GradItem& a, const GradItem& b) { return a.op < b.op; });
  auto emit_buckets = [&](GroupKind g, int group_size, bool expert) {
    if (group_size <= 1 || zero3) return;
    const CollectiveOp op = l_.zero_stage == 0 ? CollectiveOp::AllReduce : CollectiveOp::ReduceScatter;
    Bytes pending = 0;
    int bucket = 0;
    const std::string base = std::string(expert ? "expert_dp" : "dp") + ".bucket";
    for (std::size_t i = 0; i < grads.size(); ++i) {
      Bytes b = expert ? grads[i].expert : grads[i].dense;
      pending += b;
      const std::int64_t dep = l_.overlap_grad_reduce ? static_cast<std::int64_t>(grads[i].op) : last_compute;
      while (pending >= l_.bucket_bytes || (i + 1 == grads.size() && pending > 0)) {
        const Bytes size = std::min(pending, l_.bucket_bytes);
        reductions.push_back(coll1(op, g, size, StreamKind::Collective, base + std::to_string(bucket++), -1, dep));
        pending -= size;
      }
    }
  };
  emit_buckets(GroupKind::Dp, l_.dp, false);
  if (m_.moe()) emit_buckets(GroupKind::ExpertDp, l_.dp / l_.ep, true);

  // ---- optimizer step over this rank's (sharded) state ----
  {
    const std::int64_t shard = state.optimizer / (m_.dtype == DType::FP32 || m_.dtype == DType::TF32 ? 8 : 12);
    OpCost step;
    step.name = "optimizer_step";
    step.kind = OpCost::Kind::MemoryBound;
    step.phase = OpCost::Phase::BackwardWeight;
    // Adam reads and writes the FP32 master weight, momentum and variance (24 B), reads the gradient
    // and writes the 16-bit weight (4 B): 28 bytes and about 12 FLOPs per parameter of the shard.
    step.bytes = 28 * shard;
    step.flops = 12.0 * static_cast<double>(shard);
    step.dtype = DType::FP32;
    PlanOp op;
    op.kind = OpKind::Compute;
    op.stream = StreamKind::Compute;
    op.span = SpanKind::Optimizer;
    op.name = name_id("optimizer_step");
    op.cost = cost_id(step);
    std::vector<std::uint32_t> deps = reductions;
    if (last_compute >= 0) deps.push_back(static_cast<std::uint32_t>(last_compute));
    const std::uint32_t step_op = prog_->add(op, deps);
    last_compute = step_op;
  }
  // ZeRO 1-2: the updated parameter shards are all-gathered (same buckets, parameter bytes).
  if ((l_.zero_stage == 1 || l_.zero_stage == 2) && l_.dp > 1) {
    Bytes total = 0;
    for (const auto& g : grads) total += g.dense;
    Bytes left = total / ge * pe;
    for (int bucket = 0; left > 0; ++bucket) {
      const Bytes size = std::min(left, l_.bucket_bytes / ge * pe);
      coll1(CollectiveOp::AllGather, GroupKind::Dp, size, StreamKind::Collective,
            "dp.param_allgather" + std::to_string(bucket), -1, last_compute);
      left -= size;
    }
    if (m_.moe() && l_.dp / l_.ep > 1) {
      Bytes etotal = 0;
      for (const auto& g : grads) etotal += g.expert;
      left = etotal / ge * pe;
      for (int bucket = 0; left > 0; ++bucket) {
        const Bytes size = std::min(left, l_.bucket_bytes / ge * pe);
        coll1(CollectiveOp::AllGather, GroupKind::ExpertDp, size, StreamKind::Collective,
              "expert_dp.param_allgather" + std::to_string(bucket), -1, last_compute);
        left -= size;
      }
    }
  }
  if (extra_gathered >= 0) free(extra_gathered, StreamKind::Compute, "zero3.gather_extra", -1, last_compute);
}

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

}  // namespace

Plan build_plan(const TransformerModel& model, const Layout& layout, const ClusterShape& cluster) {
  validate(layout, model, cluster.ranks, cluster.ranks_per_host);
  Plan plan;
  plan.model = model;
  plan.layout = layout;
  plan.cluster = cluster;
  const int tp = layout.tp, dp = layout.dp, pp = layout.pp, ep = layout.ep, world = cluster.ranks;

  // Communicators in Megatron rank order: rank = (pp_i·dp + dp_i)·tp + tp_i.
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

  Builder builder(model, layout, plan);
  plan.programs.reserve(static_cast<std::size_t>(pp));
  for (int s = 0; s < pp; ++s) builder.build_stage(s);
  plan.program_of_rank.resize(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) plan.program_of_rank[static_cast<std::size_t>(r)] = ppi(r);
  plan.model_flops = training_flops(model, layout.global_batch, Recompute::None);
  return plan;
}

}  // namespace twinbed
