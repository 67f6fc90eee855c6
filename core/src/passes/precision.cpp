#include "twinbed/core/passes/precision.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <unordered_map>
#include <utility>

#include "pass_support.hpp"

namespace twinbed {

namespace {

using nlohmann::json;
using Kind = OpCost::Kind;

constexpr std::pair<PrecisionPolicy, const char*> kPolicies[] = {{PrecisionPolicy::Static, "static"},
                                                                 {PrecisionPolicy::Adaptive, "adaptive"}};
constexpr std::pair<PrecisionOps, const char*> kOps[] = {{PrecisionOps::Gemm, "gemm"},
                                                         {PrecisionOps::Attention, "attention"},
                                                         {PrecisionOps::MemoryBound, "memory_bound"},
                                                         {PrecisionOps::All, "all"}};
constexpr std::pair<LossScaling, const char*> kLossScaling[] = {{LossScaling::Dynamic, "dynamic"}, {LossScaling::None, "none"}};

template <class E, std::size_t N>
std::string name_in(const std::pair<E, const char*> (&table)[N], E value) {
  for (const auto& [v, name] : table) {
    if (v == value) return name;
  }
  throw InvalidArgument("precision: value outside its table");
}

template <class E, std::size_t N>
E parse_in(const std::pair<E, const char*> (&table)[N], const std::string& what, const std::string& name) {
  std::vector<std::string> known;
  for (const auto& [v, n] : table) {
    if (name == n) return v;
    known.emplace_back(n);
  }
  throw UnknownName(what, name, known);
}

bool matches(PrecisionOps ops, Kind kind) {
  switch (ops) {
    case PrecisionOps::Gemm: return kind == Kind::Gemm;
    case PrecisionOps::Attention: return kind == Kind::Attention;
    case PrecisionOps::MemoryBound: return kind == Kind::MemoryBound;
    case PrecisionOps::All: return true;
  }
  return false;
}

// `x` bytes that were `from` under the old dtype and are `to` under the new one; exact when x == from.
Bytes rescale(Bytes x, Bytes from, Bytes to) {
  if (from == to || from == 0) return x;
  if (x == from) return to;
  return std::llround(static_cast<double>(x) * static_cast<double>(to) / static_cast<double>(from));
}

constexpr std::array<DType, 5> kAllDTypes = {DType::FP32, DType::TF32, DType::BF16, DType::FP16, DType::FP8};
std::size_t dtype_index(DType d) { return static_cast<std::size_t>(d); }

class PrecisionRewrite {
 public:
  PrecisionRewrite(Plan& plan, const PrecisionParams& p, PlanTables& tables)
      : plan_(plan), l_(plan.layout), p_(p), tables_(tables) {
    // Each layer's dtype before the pass: that of its parameter tensors (the dtype its GEMMs read).
    const auto slots = static_cast<std::size_t>(plan.model.layers + 1);
    old_layer_.assign(slots, plan.model.dtype);
    new_layer_.resize(slots);
    std::vector<char> seen(slots, 0);
    for (const Program& prog : plan.programs) {
      for (const ParamTensor& t : prog.params) {
        const auto slot = static_cast<std::size_t>(t.layer + 1);
        if (t.base >= 0 || slot >= slots || seen[slot]) continue;
        old_layer_[slot] = t.dtype;
        seen[slot] = 1;
      }
    }
    for (std::size_t s = 0; s < slots; ++s) new_layer_[s] = target(static_cast<std::int32_t>(s) - 1, Kind::Gemm);
    // The builder's name of each layer's recomputation workspace.
    for (std::int64_t layer = 0; layer < plan.model.layers; ++layer) {
      recompute_workspace_.push_back(layer_prefix(static_cast<int>(layer)) + "recompute");
      recomputed_.push_back(l_.recomputes_layer(plan.model, layer) ? 1 : 0);
    }
    // The activation formulas per dtype: what a layer stores, what recomputation regenerates, and what
    // the loss keeps (its only activation outside the layers).
    Layout none = l_;
    none.recompute = Recompute::None;
    for (DType d : kAllDTypes) {
      const TransformerModel m = model_in(d);
      activation_[dtype_index(d)] = rank_activation_bytes_per_layer(m, l_);
      stored_whole_[dtype_index(d)] = rank_activation_bytes_per_layer(m, none);
      workspace_[dtype_index(d)] = stored_whole_[dtype_index(d)] - activation_[dtype_index(d)];
      loss_[dtype_index(d)] = rank_loss_activation_bytes(m, l_);
    }
  }

  // Whether the pass puts some compute op of the plan in fp16 that was not in fp16 before it.
  bool makes_fp16() {
    for (const Program& prog : plan_.programs) {
      for (const PlanOp& op : prog.ops) {
        if (!retypable(op)) continue;
        const std::int32_t id = retyped_cost(op);
        if (id == op.cost) continue;
        if (tables_.cost_of(id).dtype == DType::FP16 && tables_.cost_of(op.cost).dtype != DType::FP16) return true;
      }
    }
    return false;
  }

  Program rewrite(const Program& prog, bool loss_scale) {
    ProgramEditor e(prog);
    const bool params_changed = retype_params(e);
    bool changed = params_changed;
    const std::uint32_t step = passes::optimizer_step_index(prog);
    for (std::uint32_t i = 0; i < prog.ops.size(); ++i) {
      const PlanOp& op = prog.ops[i];
      if (op.kind == OpKind::Compute) {
        if (!retypable(op)) continue;
        const std::int32_t id = retyped_cost(op);
        if (id != op.cost) {
          e.op(i).cost = id;
          changed = true;
        }
        continue;
      }
      Bytes bytes = op.bytes;
      const DType before = old_dtype(op.layer), after = new_dtype(op.layer);
      // Messages and collectives of activations carry the activation dtype (BF16 for FP8 layers).
      const Bytes act_before = bytes_per_element(activation_dtype(before)), act_after = bytes_per_element(activation_dtype(after));
      if (op.kind == OpKind::Send || op.kind == OpKind::Recv) {
        bytes = rescale(op.bytes, act_before, act_after);
      } else if (op.kind == OpKind::Collective) {
        if (op.tensor_class == TensorClass::Activation) {
          bytes = rescale(op.bytes, act_before, act_after);
        } else if (op.params >= 0) {
          bytes = state_bytes(e, op);
        }
      } else if (op.tensor_class == TensorClass::Activation) {
        // A layer the layout leaves out of recomputation (Layout::recompute_layers) stores it all.
        const auto& formula = op.layer < 0                                          ? loss_
                              : recomputed_.at(static_cast<std::size_t>(op.layer)) ? activation_
                                                                                    : stored_whole_;
        bytes = rescale(op.bytes, formula[dtype_index(before)], formula[dtype_index(after)]);
      } else if (op.tensor_class == TensorClass::Workspace && op.layer >= 0 &&
                 plan_.names[op.name] == recompute_workspace_.at(static_cast<std::size_t>(op.layer))) {
        bytes = rescale(op.bytes, workspace_[dtype_index(before)], workspace_[dtype_index(after)]);
      } else if (op.tensor_class == TensorClass::CommBuffer && op.params >= 0) {
        bytes = state_bytes(e, op);
      }
      if (bytes != op.bytes) {
        e.op(i).bytes = bytes;
        changed = true;
      }
    }
    if (params_changed) passes::refresh_model_state(e, plan_, tables_);
    changed = add_step_ops(e, step, loss_scale) || changed;
    return changed ? e.finish() : prog;
  }

 private:
  DType target(std::int32_t layer, Kind kind) const { return precision_target(p_, plan_.model, layer, kind); }
  // A layer's dtype (-1: outside the layers) before and after the pass.
  DType old_dtype(std::int32_t layer) const { return old_layer_.at(static_cast<std::size_t>(layer + 1)); }
  DType new_dtype(std::int32_t layer) const { return new_layer_.at(static_cast<std::size_t>(layer + 1)); }

  TransformerModel model_in(DType d) const {
    TransformerModel m = plan_.model;
    m.dtype = d;
    return m;
  }

  // The model's own ops in dtype d, by name (names are unique across the lists).
  const std::unordered_map<std::string, OpCost>& lists(DType d) {
    auto it = lists_.find(d);
    if (it != lists_.end()) return it->second;
    const TransformerModel m = model_in(d);
    const OpContext c = l_.op_context();
    std::unordered_map<std::string, OpCost>& out = lists_[d];
    for (const std::vector<OpCost>& list : model_op_lists(m, c, l_.recompute)) {
      for (const OpCost& op : list) out.emplace(op.name, op);
    }
    return out;
  }

  // Compute ops whose dtype the pass sets: the model's and LoRA's, not the optimizer step.
  bool retypable(const PlanOp& op) const {
    if (op.kind != OpKind::Compute || op.span == SpanKind::Optimizer) return false;
    const OpCost::Kernel k = plan_.costs[static_cast<std::size_t>(op.cost)].kernel;
    return k == OpCost::Kernel::None || k == OpCost::Kernel::Lora;
  }

  // The op's cost in its target dtype (its own id when nothing changes).
  std::int32_t retyped_cost(const PlanOp& op) {
    const DType t = target(op.layer, tables_.cost_of(op.cost).kind);
    const auto key = std::make_pair(op.cost, t);
    auto it = retyped_.find(key);
    if (it != retyped_.end()) return it->second;
    const OpCost c = tables_.cost_of(op.cost);  // a copy: interning may grow the table
    const OpCost fresh = retyped(c, t);
    const std::int32_t id = fresh == c ? op.cost : tables_.cost(fresh);
    retyped_.emplace(key, id);
    return id;
  }

  OpCost retyped(const OpCost& c, DType t) {
    if (c.dtype == t) return c;
    // The cost's reference formula in both dtypes: the model's op of that name, or a plain matmul of
    // that shape; bytes follow the formula (scaled, if another pass changed them), FLOPs do not change.
    OpCost ref_old, ref_new;
    const auto& old_list = lists(c.dtype);
    const auto found = old_list.find(c.name);
    if (c.kernel == OpCost::Kernel::None && found != old_list.end()) {
      ref_old = found->second;
      ref_new = lists(t).at(c.name);
    } else if (c.is_matmul()) {
      ref_old = matmul_cost(c.name, c.kind, c.phase, c.m, c.n, c.k, c.batch, c.dtype);
      ref_new = matmul_cost(c.name, c.kind, c.phase, c.m, c.n, c.k, c.batch, t);
    } else {
      return c;  // a memory-bound op the model does not define: its formula is unknown
    }
    OpCost out = c;
    out.dtype = t;
    out.bytes = rescale(c.bytes, ref_old.bytes, ref_new.bytes);
    return out;
  }

  // Parameter tensors take their layer's dtype, LoRA factors their base's. Returns whether any changed.
  bool retype_params(ProgramEditor& e) const {
    std::vector<ParamTensor>& params = e.params();
    bool changed = false;
    for (ParamTensor& t : params) {
      if (t.base >= 0) continue;
      changed = changed || t.dtype != new_dtype(t.layer);
      t.dtype = new_dtype(t.layer);
    }
    for (ParamTensor& t : params) {
      if (t.base < 0) continue;
      const DType d = params.at(static_cast<std::size_t>(t.base)).dtype;
      changed = changed || t.dtype != d;
      t.dtype = d;
    }
    return changed;
  }

  // A gradient or parameter collective, or a ZeRO-3 buffer, recomputed from its parameter set.
  Bytes state_bytes(ProgramEditor& e, const PlanOp& op) const {
    const Program& prog = e.original();
    // Gradients and parameters have the same per-element bytes (model_state_bytes); named apart for
    // clarity. Buffers hold one or the other.
    const bool grads = op.tensor_class == TensorClass::Grads;
    Bytes (*per_element)(DType) = parameter_bytes_per_element;
    if (grads) per_element = gradient_bytes_per_element;
    if (grads && l_.grad_dtype == GradDtype::FP32) per_element = [](DType) -> Bytes { return 4; };  // layout.hpp
    const std::vector<ParamSlice>& set = prog.param_sets.at(static_cast<std::size_t>(op.params));
    const Bytes before = set_bytes(set, prog.params, per_element), after = set_bytes(set, e.params(), per_element);
    // Not its parameters' bytes: an earlier pass compressed it (tgc's payloads and their buffers).
    if (op.bytes != before) throw ConfigError("", "list precision before tgc: a gradient exchange is already compressed");
    return after;
  }

  // The loss scaling and the adaptive rule's statistics, right before the optimizer step. Returns
  // whether any op was added.
  bool add_step_ops(ProgramEditor& e, std::uint32_t step, bool loss_scale) {
    const Program& prog = e.original();
    std::vector<OpRef> deps = e.original_deps(step);
    bool added = false;
    auto add = [&](const OpCost& cost, std::int32_t params) {
      PlanOp op;
      op.kind = OpKind::Compute;
      op.stream = StreamKind::Compute;
      op.span = span_of(cost);
      op.name = tables_.name(cost.name);
      op.cost = tables_.cost(cost);
      op.params = params;
      const OpRef r = e.insert_before(step, op, deps);
      e.add_dep(OpRef::original(step), r);
      deps.push_back(r);  // the statistics read the unscaled gradients
      added = true;
    };
    if (loss_scale) {
      // The fp16 gradients the rank holds at the step: ZeRO-sharded as the optimizer step's.
      std::vector<ParamTensor> fp16;
      std::vector<ParamSlice> slices;
      for (std::size_t t = 0; t < e.params().size(); ++t) {
        const ParamTensor& p = e.params()[t];
        if (!p.trainable || p.dtype != DType::FP16) continue;
        fp16.push_back(p);
        slices.push_back({static_cast<std::int32_t>(t), p.elements});
      }
      const std::int64_t n = updated_params_of(fp16, l_);
      if (n > 0) {
        // Reads and writes each gradient once; an overflow check and an unscale per gradient.
        add(passes::kernel_cost("precision.loss_scale", OpCost::Kernel::LossScale, n,
                                static_cast<double>(2 * n * bytes_per_element(DType::FP16)), 2.0 * static_cast<double>(n),
                                DType::FP16),
            e.add_param_set(std::move(slices)));
      }
    }
    if (p_.policy == PrecisionPolicy::Adaptive) {
      const std::int64_t n = updated_params_of(e.params(), l_);
      const Bytes bytes = updated_gradient_bytes_of(e.params(), l_);
      if (n > 0) {
        // One read of every gradient, a sum and a sum of squares per layer, amortised over redecide_every.
        const auto every = static_cast<double>(p_.redecide_every);
        OpCost stats = passes::kernel_cost("precision.statistics", OpCost::Kernel::Precision, n,
                                           static_cast<double>(bytes) / every, 3.0 * static_cast<double>(n) / every);
        stats.every = static_cast<int>(std::min<std::int64_t>(p_.redecide_every, INT32_MAX));
        add(stats, prog.ops[step].params);
      }
    }
    return added;
  }

  Plan& plan_;
  const Layout& l_;
  const PrecisionParams& p_;
  PlanTables& tables_;
  std::vector<DType> old_layer_, new_layer_;  // by layer + 1
  std::vector<std::string> recompute_workspace_;  // by layer
  std::vector<char> recomputed_;                  // by layer: Layout::recomputes_layer
  // By dtype_index: a recomputed layer's activations, a layer's without recomputation, the workspace
  // (their difference) and the loss's.
  std::array<Bytes, kAllDTypes.size()> activation_{}, stored_whole_{}, workspace_{}, loss_{};
  std::map<DType, std::unordered_map<std::string, OpCost>> lists_;
  std::map<std::pair<std::int32_t, DType>, std::int32_t> retyped_;  // (cost, target dtype) -> cost
};

DType read_dtype(const json& v, const std::string& path) { return json_read::read_named(v, path, parse_dtype); }

PrecisionOverride read_override(const json& v, const std::string& path) {
  json_read::require_object(v, path);
  json_read::check_keys(v, path, {"ops", "layers", "dtype"});
  PrecisionOverride o;
  o.ops = json_read::read_named(json_read::required(v, path, "ops", "gemm, attention, memory_bound or all"), path + "/ops",
                                [](const std::string& n) { return parse_in(kOps, "op class", n); });
  o.dtype = read_dtype(json_read::required(v, path, "dtype", json_read::join(dtype_names())), path + "/dtype");
  if (v.contains("layers")) {
    const json& layers = v["layers"];
    const std::string lp = path + "/layers";
    if (!layers.is_array() || layers.size() != 2) {
      json_read::fail(lp, "expected [first, last] (inclusive layer indices), got " + json_read::got(layers));
    }
    o.first_layer = json_read::read_int(layers[0], json_read::child(lp, 0), 0, 1 << 30);
    o.last_layer = json_read::read_int(layers[1], json_read::child(lp, 1), 0, 1 << 30);
    if (*o.first_layer > *o.last_layer) {
      json_read::fail(lp, "first layer " + std::to_string(*o.first_layer) + " is after last " + std::to_string(*o.last_layer));
    }
  }
  return o;
}

}  // namespace

PrecisionParams precision_params_from_json(const json& entry, const std::string& path) {
  json_read::require_object(entry, path);
  PrecisionParams p;
  if (entry.contains("policy")) {
    p.policy = json_read::read_named(entry["policy"], path + "/policy",
                                     [](const std::string& n) { return parse_in(kPolicies, "precision policy", n); });
  }
  const bool adaptive = p.policy == PrecisionPolicy::Adaptive;
  const std::vector<std::string> fixed = {"dtype", "overrides"};
  const std::vector<std::string> rule = {"low", "high", "low_fraction", "redecide_every"};
  const std::vector<std::string>& own = adaptive ? rule : fixed;
  std::vector<std::string> keys = {"pass", "policy", "loss_scaling"};
  keys.insert(keys.end(), own.begin(), own.end());
  json_read::check_keys(entry, path, keys,
                        adaptive ? " (policy \"adaptive\"; " + json_read::join(fixed) + " go with \"static\")"
                                 : " (policy \"static\"; " + json_read::join(rule) + " go with \"adaptive\")");
  if (entry.contains("loss_scaling")) {
    p.loss_scaling = json_read::read_named(entry["loss_scaling"], path + "/loss_scaling",
                                           [](const std::string& n) { return parse_in(kLossScaling, "loss scaling", n); });
  }
  if (!adaptive) {
    if (entry.contains("dtype")) p.dtype = read_dtype(entry["dtype"], path + "/dtype");
    if (entry.contains("overrides")) {
      const json& list = entry["overrides"];
      if (!list.is_array()) json_read::fail(path + "/overrides", "expected an array of overrides, got " + json_read::got(list));
      for (std::size_t i = 0; i < list.size(); ++i) {
        p.overrides.push_back(read_override(list[i], json_read::child(path + "/overrides", i)));
      }
    }
    return p;
  }
  if (entry.contains("low")) p.low = read_dtype(entry["low"], path + "/low");
  if (entry.contains("high")) p.high = read_dtype(entry["high"], path + "/high");
  const std::string fp = path + "/low_fraction";
  const json& f = json_read::required(entry, path, "low_fraction", "the fraction of layers in the low dtype, in [0, 1]");
  p.low_fraction = json_read::read_number(f, fp, "a number in [0, 1]");
  if (p.low_fraction < 0 || p.low_fraction > 1) json_read::fail(fp, "expected a number in [0, 1], got " + json_read::got(f));
  if (entry.contains("redecide_every")) {
    p.redecide_every = json_read::read_int(entry["redecide_every"], path + "/redecide_every", 1, 1'000'000'000);
  }
  return p;
}

json precision_params_to_json(const PrecisionParams& p) {
  json j = {{"policy", name_in(kPolicies, p.policy)}};
  if (p.policy == PrecisionPolicy::Static) {
    if (p.dtype) j["dtype"] = dtype_name(*p.dtype);
    json overrides = json::array();
    for (const PrecisionOverride& o : p.overrides) {
      json entry = {{"ops", name_in(kOps, o.ops)}, {"dtype", dtype_name(o.dtype)}};
      if (o.first_layer) entry["layers"] = {*o.first_layer, *o.last_layer};
      overrides.push_back(entry);
    }
    j["overrides"] = overrides;
  } else {
    j["low"] = dtype_name(p.low);
    j["high"] = dtype_name(p.high);
    j["low_fraction"] = p.low_fraction;
    j["redecide_every"] = p.redecide_every;
  }
  j["loss_scaling"] = name_in(kLossScaling, p.loss_scaling);
  return j;
}

DType precision_target(const PrecisionParams& p, const TransformerModel& model, std::int64_t layer, OpCost::Kind kind) {
  if (p.policy == PrecisionPolicy::Adaptive) {
    if (layer < 0) return p.high;
    const double f = p.low_fraction;
    const bool low = std::floor(static_cast<double>(layer + 1) * f) > std::floor(static_cast<double>(layer) * f);
    return low ? p.low : p.high;
  }
  DType t = p.dtype.value_or(model.dtype);
  for (const PrecisionOverride& o : p.overrides) {
    if (!matches(o.ops, kind)) continue;
    if (o.first_layer && (layer < *o.first_layer || layer > *o.last_layer)) continue;
    t = o.dtype;
  }
  return t;
}

void apply_precision(Plan& plan, const PrecisionParams& p) {
  if (plan.model.dtype == DType::FP8) {
    // Its ops are not all of one dtype (model.hpp), which this pass's retyping assumes (precision.hpp).
    throw ConfigError("", "the model's dtype fp8 is Transformer Engine's recipe (FP8 linear GEMMs, BF16 everywhere else), "
                          "which this pass does not retype: give the model a 16- or 32-bit dtype and set fp8 with the pass");
  }
  for (std::size_t i = 0; i < p.overrides.size(); ++i) {
    const PrecisionOverride& o = p.overrides[i];
    if (o.last_layer && *o.last_layer >= plan.model.layers) {
      throw ConfigError("/overrides/" + std::to_string(i) + "/layers",
                        "the model has " + std::to_string(plan.model.layers) + " layers (0.." +
                            std::to_string(plan.model.layers - 1) + "), not " + std::to_string(*o.last_layer + 1));
    }
  }
  PlanTables tables(plan);
  PrecisionRewrite rewrite(plan, p, tables);
  const bool loss_scale = p.loss_scaling == LossScaling::Dynamic && rewrite.makes_fp16();
  for (Program& prog : plan.programs) prog = rewrite.rewrite(prog, loss_scale);
}

}  // namespace twinbed
