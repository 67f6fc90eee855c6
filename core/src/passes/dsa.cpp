#include "twinbed/core/passes/dsa.hpp"

#include <algorithm>
#include <cmath>

#include "pass_support.hpp"

namespace twinbed {

namespace {

using nlohmann::json;
using Phase = OpCost::Phase;
using Sparsity = OpCost::Sparsity;

const std::vector<ParamKind> kMaskable = {ParamKind::Qkv, ParamKind::Proj,      ParamKind::Fc1,
                                          ParamKind::Fc2, ParamKind::ExpertFc1, ParamKind::ExpertFc2};

bool is_target(const DsaParams& p, ParamKind k) {
  const std::vector<ParamKind>& list = p.targets.empty() ? kMaskable : p.targets;
  return std::find(list.begin(), list.end(), k) != list.end();
}

// How a GEMM of a target behaves, by which operand carries the mask (see dsa.hpp).
Sparsity sparsity_of(const DsaParams& p, Phase phase) {
  switch (p.granularity) {
    case DsaParams::Granularity::Unstructured: return Sparsity::Unstructured;
    case DsaParams::Granularity::Block: return Sparsity::Block;
    case DsaParams::Granularity::NM:
      // Sparse tensor cores take a 2:4 input operand: W in the forward GEMM, nothing else.
      return (phase == Phase::Forward || phase == Phase::Recompute) && p.n == 2 && p.m == 4 ? Sparsity::TwoFour
                                                                                           : Sparsity::Unstructured;
  }
  return Sparsity::Unstructured;
}

OpCost sparse(OpCost c, const DsaParams& p) {
  c.sparsity = sparsity_of(p, c.phase);
  c.density = p.density;
  c.block = p.granularity == DsaParams::Granularity::Block ? p.block_size : 0;
  c.flops *= p.density;
  return c;
}

Program rewrite(const Plan& plan, const Program& prog, const DsaParams& p, PlanTables& tables) {
  const Layout& l = plan.layout;
  ProgramEditor e(prog);
  // The targets: trainable tensors of the target kinds.
  std::vector<char> target(prog.params.size(), 0);
  std::vector<ParamTensor> masked = prog.params, only_targets;  // targets scaled by the density; targets alone
  std::int64_t target_elements = 0;
  for (std::size_t t = 0; t < prog.params.size(); ++t) {
    const ParamTensor& tensor = prog.params[t];
    if (!tensor.trainable || !is_target(p, tensor.kind)) continue;
    target[t] = 1;
    target_elements += tensor.elements;
    masked[t].elements = std::llround(static_cast<double>(tensor.elements) * p.density);
    only_targets.push_back(tensor);
  }
  if (target_elements == 0) return prog;

  const bool prune = p.mode == DsaParams::Mode::Prune;
  for (std::uint32_t i = 0; i < prog.ops.size(); ++i) {
    const PlanOp& op = prog.ops[i];
    if (op.kind != OpKind::Compute) continue;
    const OpCost c = plan.costs[static_cast<std::size_t>(op.cost)];
    const std::int32_t t = passes::single_tensor(prog.param_sets, op);
    if (t < 0 || !target[static_cast<std::size_t>(t)] || c.kind != OpCost::Kind::Gemm || c.kernel != OpCost::Kernel::None) continue;
    if (c.phase == Phase::BackwardWeight || prune) e.op(i).cost = tables.cost(sparse(c, p));
  }

  // The masked optimizer step, the refresh before it, and the masks.
  const std::uint32_t step = passes::optimizer_step_index(prog);
  const std::int64_t shard = updated_params_of(only_targets, l);  // target parameters of the rank's optimizer shard
  OpCost masked_step = optimizer_step_cost(masked, l, plan.model.fused_optimizer);
  masked_step.bytes += shard;  // the mask it reads
  masked_step.kernel = OpCost::Kernel::MaskedStep;
  masked_step.elements = shard;  // the masked ones among the step's parameters
  masked_step.density = p.density;
  e.op(step).cost = tables.cost(masked_step);

  // Each target's gradient in its own dtype (precision, listed before dsa, may have changed it) and 17 B.
  const Bytes refresh_bytes = updated_gradient_bytes_of(only_targets, l) + 17 * shard;
  PlanOp refresh = prog.ops[step];
  refresh.span = SpanKind::MemoryBound;
  refresh.name = tables.name("dsa.mask_refresh");
  OpCost refresh_cost = passes::kernel_cost("dsa.mask_refresh", OpCost::Kernel::MaskRefresh, shard,
                                            static_cast<double>(refresh_bytes) / p.refresh_every);
  refresh_cost.sparsity = p.granularity == DsaParams::Granularity::Block ? Sparsity::Block
                          : p.granularity == DsaParams::Granularity::NM && p.n == 2 && p.m == 4 ? Sparsity::TwoFour
                                                                                                 : Sparsity::Unstructured;
  refresh_cost.density = p.density;
  refresh_cost.block = p.granularity == DsaParams::Granularity::Block ? p.block_size : 0;
  refresh_cost.every = p.refresh_every;
  refresh.cost = tables.cost(refresh_cost);
  const PlanOp scores = alloc_op(TensorClass::Workspace, e.new_tensor_id(), 4 * shard, tables.name("dsa.scores"));
  const OpRef alloc = e.insert_before(step, scores, e.original_deps(step));
  const OpRef r = e.insert_before(step, refresh, {alloc});
  PlanOp free = scores;
  free.kind = OpKind::Free;
  e.add_dep(OpRef::original(step), e.insert_before(step, free, {r}));

  // One byte per target parameter.
  e.insert_before(0, alloc_op(TensorClass::TechniqueState, e.new_tensor_id(), target_elements, tables.name("dsa.masks")));
  return e.finish();
}

std::string granularity_name(DsaParams::Granularity g) {
  switch (g) {
    case DsaParams::Granularity::Unstructured: return "unstructured";
    case DsaParams::Granularity::Block: return "block";
    case DsaParams::Granularity::NM: return "nm";
  }
  return "unstructured";
}

}  // namespace

DsaParams dsa_params_from_json(const json& entry, const std::string& path) {
  using namespace json_read;
  require_object(entry, path);
  check_keys(entry, path, {"pass", "density", "granularity", "block_size", "n", "m", "refresh_every", "mode", "targets"});
  DsaParams p;
  const std::string g = entry.contains("granularity") ? read_string(entry["granularity"], path + "/granularity") : "unstructured";
  if (g == "unstructured") p.granularity = DsaParams::Granularity::Unstructured;
  else if (g == "block") p.granularity = DsaParams::Granularity::Block;
  else if (g == "nm") p.granularity = DsaParams::Granularity::NM;
  else fail(path + "/granularity", "unknown value '" + g + "'; accepted: unstructured, block, nm");
  if (entry.contains("block_size")) p.block_size = static_cast<int>(read_int(entry["block_size"], path + "/block_size", 1, 1 << 16));
  if (entry.contains("m")) p.m = static_cast<int>(read_int(entry["m"], path + "/m", 1, 1 << 10));
  if (entry.contains("n")) p.n = static_cast<int>(read_int(entry["n"], path + "/n", 1, p.m));
  for (const char* key : {"block_size", "n", "m"}) {
    const bool applies = std::string(key) == "block_size" ? p.granularity == DsaParams::Granularity::Block
                                                          : p.granularity == DsaParams::Granularity::NM;
    if (entry.contains(key) && !applies) fail(child(path, key), "applies to granularity " + std::string(key[0] == 'b' ? "block" : "nm") + " only");
  }
  if (p.granularity == DsaParams::Granularity::NM) {
    p.density = static_cast<double>(p.n) / p.m;
    if (entry.contains("density") && std::abs(read_number(entry["density"], path + "/density", "n/m") - p.density) > 1e-12) {
      fail(path + "/density", "with granularity nm the density is n/m = " + std::to_string(p.density) + "; leave it out or make it equal");
    }
  } else {
    const json& d = required(entry, path, "density", "the fraction of each target's parameters kept active, in (0, 1]");
    p.density = read_number(d, path + "/density", "a fraction in (0, 1]");
    if (!(p.density > 0 && p.density <= 1)) fail(path + "/density", "expected a fraction in (0, 1], got " + got(d));
  }
  if (entry.contains("refresh_every")) p.refresh_every = static_cast<int>(read_int(entry["refresh_every"], path + "/refresh_every", 1, 1 << 30));
  if (entry.contains("mode")) {
    const std::string m = read_string(entry["mode"], path + "/mode");
    if (m == "freeze") p.mode = DsaParams::Mode::Freeze;
    else if (m == "prune") p.mode = DsaParams::Mode::Prune;
    else fail(path + "/mode", "unknown value '" + m + "'; accepted: freeze, prune");
  }
  if (entry.contains("targets") && !(entry["targets"].is_string() && entry["targets"].get<std::string>() == "all")) {
    p.targets = passes::read_param_kinds(entry["targets"], path + "/targets");
    for (std::size_t i = 0; i < p.targets.size(); ++i) {
      if (std::find(kMaskable.begin(), kMaskable.end(), p.targets[i]) == kMaskable.end()) {
        fail(child(path + "/targets", i), "'" + to_string(p.targets[i]) + "' cannot be masked; accepted: " +
                                              join(passes::param_kind_names_of(kMaskable)) + ", or \"all\"");
      }
    }
  }
  return p;
}

json dsa_params_to_json(const DsaParams& p) {
  json j = {{"density", p.density},
            {"granularity", granularity_name(p.granularity)},
            {"refresh_every", p.refresh_every},
            {"mode", p.mode == DsaParams::Mode::Freeze ? "freeze" : "prune"},
            {"targets", p.targets.empty() ? json("all") : passes::param_kinds_json(p.targets)}};
  if (p.granularity == DsaParams::Granularity::Block) j["block_size"] = p.block_size;
  if (p.granularity == DsaParams::Granularity::NM) {
    j["n"] = p.n;
    j["m"] = p.m;
  }
  return j;
}

void apply_dsa(Plan& plan, const DsaParams& p) {
  if (p.density >= 1) return;
  for (std::size_t i = 0; i < p.targets.size(); ++i) {
    const ParamKind k = p.targets[i];
    const bool dense_ffn = k == ParamKind::Fc1 || k == ParamKind::Fc2;
    const bool expert = k == ParamKind::ExpertFc1 || k == ParamKind::ExpertFc2;
    if ((dense_ffn && plan.model.moe()) || (expert && !plan.model.moe())) {
      throw ConfigError("/targets/" + std::to_string(i), "the model has no " + to_string(k) + " matrices");
    }
  }
  PlanTables tables(plan);
  for (Program& prog : plan.programs) prog = rewrite(plan, prog, p, tables);
}

}  // namespace twinbed
