#include "twinbed/core/passes/lora.hpp"

#include <algorithm>
#include <map>
#include <tuple>

#include "pass_support.hpp"

namespace twinbed {

namespace {

using nlohmann::json;
using Phase = OpCost::Phase;

const std::vector<ParamKind> kAdaptable = {ParamKind::Qkv, ParamKind::Proj, ParamKind::Fc1, ParamKind::Fc2};

// The adapter of one base tensor on one program.
struct Adapter {
  std::int32_t a = -1, b = -1;  // tensors
  std::int32_t set_a = -1, set_b = -1;
  std::int64_t replicated = 0;  // elements of the factor replicated over tp (A for column-, B for row-parallel W)
  std::int32_t replicated_tensor = -1;
};

class LoraRewrite {
 public:
  LoraRewrite(Plan& plan, const LoraParams& p, PlanTables& tables)
      : plan_(plan), l_(plan.layout), p_(p), tables_(tables),
        ge_(gradient_bytes_per_element(plan.layout, plan.model.dtype)), pe_(parameter_bytes_per_element(plan.model.dtype)) {}

  Program rewrite(const Program& prog) {
    ProgramEditor e(prog);
    const std::uint32_t step = passes::optimizer_step_index(prog);
    add_adapters(e, prog.ops[step].params);

    // Per layer: the bytes of x·Aᵀ kept per micro-batch, its adapters, and (tp) the replicated factors.
    const std::int64_t tokens = static_cast<std::int64_t>(l_.micro_batch) * plan_.model.seq_len;
    std::map<std::int32_t, Bytes> activation;
    std::map<std::int32_t, std::vector<ParamSlice>> layer_adapters;  // per layer: its adapters' tensors
    std::vector<ParamSlice> replicated_slices;                       // the tp-replicated factors
    for (const auto& [base, ad] : adapters_) {
      const std::int32_t layer = tensor(e, base).layer;
      if (l_.recompute != Recompute::Full || !l_.recomputes_layer(plan_.model, layer)) {
        activation[layer] += tokens * p_.rank * bytes_per_element(activation_dtype(plan_.model.dtype));
      }
      for (std::int32_t t : {ad.a, ad.b}) layer_adapters[layer].push_back({t, tensor(e, t).elements});
      if (ad.replicated > 0) replicated_slices.push_back({ad.replicated_tensor, ad.replicated});
    }
    std::map<std::int32_t, std::int32_t> layer_sets;  // per layer: the param set of its adapters
    for (auto& [layer, slices] : layer_adapters) layer_sets[layer] = e.add_param_set(slices);
    std::map<std::int32_t, std::int32_t> shard_sets;  // hybrid sharding: a layer's adapter set -> its rank's shard

    const int last_mb = l_.micro_batches() - 1;
    std::vector<Ready> ready;             // the adapters' final gradients
    std::vector<OpRef> replicated_ready;  // the weight-gradient GEMMs of replicated factors, last micro-batch
    for (std::uint32_t i = 0; i < step; ++i) {
      const PlanOp& op = prog.ops[i];
      if (op.kind == OpKind::Compute) {
        const OpCost cost = plan_.costs[static_cast<std::size_t>(op.cost)];  // a copy: adding costs may move the table
        const std::int32_t t = passes::single_tensor(prog.param_sets, op);
        if (cost.phase == Phase::BackwardWeight && t >= 0) {
          e.remove(i);  // every base tensor is frozen
          continue;
        }
        auto it = adapters_.find(t);
        if (it == adapters_.end() || cost.kind != OpCost::Kind::Gemm) continue;
        const Adapter& ad = it->second;
        if (cost.phase == Phase::Forward || cost.phase == Phase::Recompute) {
          // W's forward GEMM is (m tokens, n = d, k = k).
          const bool fwd = cost.phase == Phase::Forward;
          const OpRef xa = add_gemm(e, i, OpRef::original(i), fwd ? kAFwd : kARecompute, cost.phase, {cost.m, p_.rank, cost.k}, ad.set_a);
          const OpRef y = add_gemm(e, i, xa, fwd ? kBFwd : kBRecompute, cost.phase, {cost.m, cost.n, p_.rank}, ad.set_b);
          if (fwd) {
            first_forward_.emplace(ad.a, xa);
            first_forward_.emplace(ad.b, y);
          }
          for (std::uint32_t dep : e.dependents(i)) e.add_dep(OpRef::original(dep), y);
        } else if (cost.phase == Phase::BackwardData) {
          // W's data-gradient GEMM is (m tokens, n = k, k = d).
          const std::int64_t m = cost.m, k = cost.n, d = cost.k;
          const OpRef db = add_gemm(e, i, OpRef::original(i), kBWgrad, Phase::BackwardWeight, {d, p_.rank, m}, ad.set_b);
          const OpRef dxa = add_gemm(e, i, db, kAOutDgrad, Phase::BackwardData, {m, p_.rank, d}, ad.set_a);
          const OpRef da = add_gemm(e, i, dxa, kAWgrad, Phase::BackwardWeight, {p_.rank, k, m}, ad.set_a);
          const OpRef dx = add_gemm(e, i, da, kDgrad, Phase::BackwardData, {m, k, p_.rank}, ad.set_a);
          for (std::uint32_t dep : e.dependents(i)) e.add_dep(OpRef::original(dep), dx);
          if (op.micro_batch == last_mb) {
            ready.push_back({i, db, ad.b, tensor(e, ad.b).elements});
            ready.push_back({i, da, ad.a, tensor(e, ad.a).elements});
            if (ad.replicated > 0) replicated_ready.push_back(da);
          }
        }
      } else if (op.kind == OpKind::Collective && op.tensor_class == TensorClass::Grads) {
        if (op.layer >= 0 && layer_sets.count(op.layer)) {
          // ZeRO-3: the layer's reduce-scatter carries its adapters' gradients only, and hybrid sharding's
          // all-reduce across the shard groups their shard (each tensor's share, as the builder's).
          std::int32_t set = layer_sets.at(op.layer);
          if (op.group == GroupKind::ZeroReplica) {
            auto [it, fresh] = shard_sets.try_emplace(set, -1);
            if (fresh) it->second = e.add_param_set(shard_of(e.param_sets()[static_cast<std::size_t>(set)], l_.zero_shards()));
            set = it->second;
          }
          resize_layer_reduction(e, prog, i, set_elements(e.param_sets()[static_cast<std::size_t>(set)]) * ge_, set);
        } else {
          drop_reduction(e, prog, i);
        }
      } else if ((op.kind == OpKind::Alloc || op.kind == OpKind::Free) && op.tensor_class == TensorClass::Activation &&
                 activation.count(op.layer)) {
        e.op(i).bytes += activation.at(op.layer);
      }
    }
    // ZeRO 1-2: the parameter gathers (after the step, or ahead of the forward) carried the frozen
    // parameters. (ZeRO-3's gather the layers for their passes: kept.)
    if (l_.zero_stage == 1 || l_.zero_stage == 2) {
      for (std::uint32_t i = 0; i < prog.ops.size(); ++i) {
        const PlanOp& op = prog.ops[i];
        if (op.kind == OpKind::Collective && op.tensor_class == TensorClass::Weights) e.remove(i);
      }
    }

    std::vector<OpRef> before_step;
    // Tensor parallelism: the replicated factors' gradients are partial sums; one all-reduce for all.
    const std::int64_t replicated = set_elements(replicated_slices);
    if (replicated > 0 && !replicated_ready.empty()) {
      PlanOp ar = collective_op(CollectiveOp::AllReduce, GroupKind::Tp, replicated * ge_, StreamKind::Collective);
      ar.name = tables_.name("lora.tp_allreduce");
      ar.tensor_class = TensorClass::Grads;
      ar.params = e.add_param_set(replicated_slices);
      before_step.push_back(e.insert_before(step, ar, replicated_ready));
    }
    if (!(l_.zero_stage == 3 && l_.grad_ranks() > 1)) emit_buckets(e, prog, step, ready, before_step);
    for (OpRef r : before_step) e.add_dep(OpRef::original(step), r);
    passes::refresh_model_state(e, plan_, tables_);
    return e.finish();
  }

 private:
  struct Ready {
    std::uint32_t after;  // the original op the gradient's GEMMs follow: orders the buckets
    OpRef op;
    std::int32_t tensor;
    std::int64_t elements;
  };
  struct Shape {
    std::int64_t m, n, k;
  };

  static const ParamTensor& tensor(ProgramEditor& e, std::int32_t t) { return e.params()[static_cast<std::size_t>(t)]; }

  // Freezes every base tensor and gives each target its factors; adds them to the stage's set (the
  // optimizer and model-state allocations).
  void add_adapters(ProgramEditor& e, std::int32_t stage_set) {
    adapters_.clear();
    first_forward_.clear();
    const std::size_t base_count = e.params().size();
    for (std::size_t t = 0; t < base_count; ++t) {
      e.params()[t].trainable = false;
      const ParamTensor w = e.params()[t];
      if (std::find(p_.targets.begin(), p_.targets.end(), w.kind) == p_.targets.end()) continue;
      ParamTensor a = w, b = w;
      a.kind = ParamKind::LoraA;
      a.rows = p_.rank;
      b.kind = ParamKind::LoraB;
      b.cols = p_.rank;
      a.elements = a.rows * a.cols;
      b.elements = b.rows * b.cols;
      a.trainable = b.trainable = true;
      a.base = b.base = static_cast<std::int32_t>(t);
      Adapter ad;
      ad.a = e.add_param_tensor(a);
      ad.b = e.add_param_tensor(b);
      ad.set_a = e.add_param_set({{ad.a, a.elements}});
      ad.set_b = e.add_param_set({{ad.b, b.elements}});
      ad.replicated = l_.tp > 1 ? (w.row_parallel ? b.elements : a.elements) : 0;
      ad.replicated_tensor = w.row_parallel ? ad.b : ad.a;
      adapters_[static_cast<std::int32_t>(t)] = ad;
      auto& stage = e.param_sets()[static_cast<std::size_t>(stage_set)];
      stage.push_back({ad.a, a.elements});
      stage.push_back({ad.b, b.elements});
    }
  }

  // The adapter GEMMs of one adapted matrix: their names, as op names end.
  enum What { kAFwd, kBFwd, kARecompute, kBRecompute, kBWgrad, kAOutDgrad, kAWgrad, kDgrad };
  static constexpr const char* kWhat[] = {"a_fwd", "b_fwd", "a_recompute", "b_recompute", "b_wgrad", "a_out_dgrad", "a_wgrad", "dgrad"};

  // An adapter GEMM right after original op `at` (after those added there before), depending on `dep`.
  // Its name and cost are the same for every micro-batch: interned once per (base op, what).
  OpRef add_gemm(ProgramEditor& e, std::uint32_t at, OpRef dep, What what, Phase phase, Shape s, std::int32_t set) {
    const PlanOp& base = e.original().ops[at];
    PlanOp g = base;
    auto [it, fresh] = interned_.try_emplace({base.name, base.cost, static_cast<int>(what)}, std::pair<std::uint32_t, std::int32_t>{});
    if (fresh) {
      const OpCost cost = plan_.costs[static_cast<std::size_t>(base.cost)];
      const std::string matrix = cost.name.substr(0, cost.name.rfind('_'));  // "qkv"
      OpCost c = matmul_cost(matrix + ".lora_" + kWhat[what], OpCost::Kind::Gemm, phase, s.m, s.n, s.k, 1, cost.dtype);
      c.kernel = OpCost::Kernel::Lora;
      // Named as the builder names the layer's ops: "l17.qkv.lora_a_fwd".
      it->second = {tables_.name(layer_prefix(base.layer) + c.name), tables_.cost(c)};
    }
    g.name = it->second.first;
    g.cost = it->second.second;
    g.span = SpanKind::Gemm;
    g.params = set;
    return e.insert_after(at, g, {dep});
  }

  // A final-gradient bucket (or a ZeRO-3 layer reduction) of frozen gradients: gone, with the buffer
  // ZeRO-3 allocates around it.
  static void drop_reduction(ProgramEditor& e, const Program& prog, std::uint32_t i) {
    e.remove(i);
    for_each_buffer(prog, i, [&](std::uint32_t j) { e.remove(j); });
  }
  static void resize_layer_reduction(ProgramEditor& e, const Program& prog, std::uint32_t i, Bytes bytes, std::int32_t set) {
    e.op(i).bytes = bytes;
    e.op(i).params = set;
    for_each_buffer(prog, i, [&](std::uint32_t j) {
      e.op(j).bytes = bytes;
      e.op(j).params = set;
    });
  }
  // The ZeRO-3 gradient buffer the builder allocates right before a layer's reduce-scatter and frees
  // right after it.
  template <class F>
  static void for_each_buffer(const Program& prog, std::uint32_t i, F f) {
    if (i == 0 || i + 1 >= prog.ops.size()) return;
    const PlanOp& before = prog.ops[i - 1];
    const PlanOp& after = prog.ops[i + 1];
    if (before.kind == OpKind::Alloc && before.tensor_class == TensorClass::CommBuffer && after.kind == OpKind::Free &&
        after.tensor == before.tensor) {
      f(i - 1);
      f(i + 1);
    }
  }

  // The adapters' gradients in data-parallel buckets before the step (gradient_buckets, as the builder
  // does), and with ZeRO 1-2 the updated adapter parameters gathered after it (or, with
  // overlap_param_gather, ahead of the forward).
  void emit_buckets(ProgramEditor& e, const Program& prog, std::uint32_t step, std::vector<Ready>& ready,
                    std::vector<OpRef>& before_step) {
    if (ready.empty() || l_.grad_ranks() <= 1) return;
    std::stable_sort(ready.begin(), ready.end(), [](const Ready& x, const Ready& y) { return x.after < y.after; });
    std::vector<GradientReady> list;
    for (std::size_t k = 0; k < ready.size(); ++k) list.push_back({static_cast<std::uint32_t>(k), ready[k].tensor, ready[k].elements});
    // Without overlap, every bucket waits for the whole backward: its last compute op.
    std::int64_t last_compute = -1;
    for (std::uint32_t i = 0; i < step; ++i) {
      if (prog.ops[i].kind == OpKind::Compute && !e.removed(i)) last_compute = i;
    }
    for (BucketCollective& b : gradient_reduction(list, GroupKind::Dp, l_, ge_, "lora.dp.", tables_)) {
      b.op.params = e.add_param_set(std::move(b.bucket.slices));
      const Ready& last = ready[b.bucket.ready_op];
      if (l_.overlap_grad_reduce || last_compute < 0) {
        // Issued where its last gradient completes, as the builder issues its buckets (plan_builder.cpp,
        // issue_buckets): on the Collective stream's FIFO it comes before what the rest of the backward
        // puts there.
        before_step.push_back(e.insert_after(last.after, b.op, {last.op}));
      } else {
        before_step.push_back(e.insert_before(step, b.op, {OpRef::original(static_cast<std::uint32_t>(last_compute))}));
      }
    }
    std::vector<BucketCollective> gathers = parameter_gather(list, GroupKind::Dp, l_, ge_, pe_, "lora.dp.", tables_);
    if (!l_.overlap_param_gather) {
      for (BucketCollective& b : gathers) {
        b.op.params = e.add_param_set(std::move(b.bucket.slices));
        e.insert_after(step, b.op, {OpRef::original(step)});
      }
      return;
    }
    // Ahead of the forward, as the builder issues the base's (plan_builder.cpp, emit_parameter_gather_ahead):
    // at the start in forward order, each adapter's first forward GEMM waiting for the gathers that hold it.
    std::reverse(gathers.begin(), gathers.end());
    for (BucketCollective& b : gathers) {
      b.op.params = e.add_param_set(b.bucket.slices);
      const OpRef r = e.insert_before(0, b.op);
      for (const ParamSlice& s : b.bucket.slices) {
        if (auto it = first_forward_.find(s.tensor); it != first_forward_.end()) e.add_dep(it->second, r);
      }
    }
  }

  Plan& plan_;
  const Layout& l_;
  const LoraParams& p_;
  PlanTables& tables_;
  Bytes ge_, pe_;
  std::map<std::int32_t, Adapter> adapters_;  // by base tensor, for the program being rewritten
  std::map<std::int32_t, OpRef> first_forward_;  // adapter tensor -> its first forward GEMM, in that program
  std::map<std::tuple<std::uint32_t, std::int32_t, int>, std::pair<std::uint32_t, std::int32_t>> interned_;  // -> (name, cost)
};

}  // namespace

LoraParams lora_params_from_json(const json& entry, const std::string& path) {
  json_read::require_object(entry, path);
  json_read::check_keys(entry, path, {"pass", "rank", "alpha", "targets"});
  LoraParams p;
  if (entry.contains("rank")) p.rank = static_cast<int>(json_read::read_int(entry["rank"], path + "/rank", 0, 1 << 20));
  if (entry.contains("alpha")) {
    p.alpha = json_read::read_number(entry["alpha"], path + "/alpha", "a number > 0");
    if (p.alpha <= 0) json_read::fail(path + "/alpha", "expected a number > 0, got " + json_read::got(entry["alpha"]));
  }
  if (entry.contains("targets")) {
    p.targets = passes::read_param_kinds(entry["targets"], path + "/targets");
    for (std::size_t i = 0; i < p.targets.size(); ++i) {
      if (std::find(kAdaptable.begin(), kAdaptable.end(), p.targets[i]) == kAdaptable.end()) {
        json_read::fail(json_read::child(path + "/targets", i),
                        "'" + to_string(p.targets[i]) + "' cannot take an adapter; accepted: " +
                            json_read::join(passes::param_kind_names_of(kAdaptable)));
      }
    }
  }
  return p;
}

json lora_params_to_json(const LoraParams& p) {
  return {{"rank", p.rank}, {"alpha", p.alpha}, {"targets", passes::param_kinds_json(p.targets)}};
}

void apply_lora(Plan& plan, const LoraParams& p) {
  if (p.rank == 0) return;
  for (std::size_t i = 0; i < p.targets.size(); ++i) {
    const bool ffn = p.targets[i] == ParamKind::Fc1 || p.targets[i] == ParamKind::Fc2;
    if (ffn && plan.model.moe()) {
      throw ConfigError("/targets/" + std::to_string(i), "the model's FFN is a mixture of experts: it has no " +
                                                             to_string(p.targets[i]) + "; adapt qkv or proj");
    }
  }
  PlanTables tables(plan);
  LoraRewrite rewrite(plan, p, tables);
  for (Program& prog : plan.programs) prog = rewrite.rewrite(prog);
}

std::int64_t lora_trainable_parameters(const TransformerModel& model, const LoraParams& p) {
  if (p.rank == 0) return parameter_count(model).total();
  const std::int64_t h = model.hidden, f = model.ffn();
  std::int64_t per_layer = 0;
  for (ParamKind k : p.targets) {
    // W is d×k (y = x·Wᵀ): qkv q×h (q = qkv_width: 3h without grouped-query attention or head_dim),
    // proj h×w (w = attention_width: h without head_dim), fc1 f×h (2f×h with SwiGLU), fc2 h×f.
    const std::int64_t d = k == ParamKind::Qkv ? model.qkv_width() : k == ParamKind::Fc1 ? model.fc1_width() : h;
    const std::int64_t in = k == ParamKind::Fc2 ? f : k == ParamKind::Proj ? model.attention_width() : h;
    per_layer += static_cast<std::int64_t>(p.rank) * (d + in);
  }
  return model.layers * per_layer;
}

}  // namespace twinbed
