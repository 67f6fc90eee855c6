#include "pass_support.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

namespace twinbed::passes {

OpCost kernel_cost(std::string name, OpCost::Kernel kernel, std::int64_t elements, double bytes, double flops, DType dtype) {
  OpCost c;
  c.name = std::move(name);
  c.kind = OpCost::Kind::MemoryBound;
  c.phase = OpCost::Phase::BackwardWeight;
  c.dtype = dtype;
  c.kernel = kernel;
  c.elements = elements;
  c.bytes = std::llround(bytes);
  c.flops = flops;
  return c;
}

std::uint32_t optimizer_step_index(const Program& p) {
  for (std::uint32_t i = 0; i < p.ops.size(); ++i) {
    if (p.ops[i].kind == OpKind::Compute && p.ops[i].span == SpanKind::Optimizer) return i;
  }
  throw InvalidArgument("the program has no optimizer step");
}

void refresh_model_state(ProgramEditor& e, const Plan& plan, PlanTables& tables) {
  const Layout& layout = plan.layout;
  const ModelStateBytes state = model_state_of(e.params(), layout);
  for (std::uint32_t i = 0; i < e.size(); ++i) {
    PlanOp& op = e.op(i);
    if (op.kind == OpKind::Alloc || op.kind == OpKind::Free) {
      if (op.tensor_class == TensorClass::Weights) op.bytes = state.params;
      if (op.tensor_class == TensorClass::Grads) op.bytes = state.grads;
      if (op.tensor_class == TensorClass::Optimizer) op.bytes = state.optimizer;
    }
  }
  PlanOp& step = e.op(optimizer_step_index(e.original()));
  OpCost cost = tables.cost_of(step.cost);  // a copy: the table may grow below
  const OpCost fresh = optimizer_step_cost(e.params(), layout, plan.model.fused_optimizer);
  cost.bytes = fresh.bytes;
  cost.flops = fresh.flops;
  step.cost = tables.cost(cost);
}

std::vector<ParamKind> read_param_kinds(const nlohmann::json& v, const std::string& path) {
  if (!v.is_array()) json_read::fail(path, "expected an array of parameter names (" + json_read::join(param_kind_names()) + "), got " + json_read::got(v));
  std::vector<ParamKind> out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const ParamKind k = json_read::read_named(v[i], json_read::child(path, i), parse_param_kind);
    if (std::find(out.begin(), out.end(), k) != out.end()) json_read::fail(json_read::child(path, i), "'" + to_string(k) + "' is listed twice");
    out.push_back(k);
  }
  return out;
}

std::vector<std::string> param_kind_names_of(const std::vector<ParamKind>& kinds) {
  std::vector<std::string> out;
  for (ParamKind k : kinds) out.push_back(to_string(k));
  return out;
}

nlohmann::json param_kinds_json(const std::vector<ParamKind>& kinds) {
  nlohmann::json out = nlohmann::json::array();
  for (ParamKind k : kinds) out.push_back(to_string(k));
  return out;
}

}  // namespace twinbed::passes
