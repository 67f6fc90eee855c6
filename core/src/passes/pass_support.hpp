// What the technique passes share: a Pass made of a parameter struct and two functions, JSON readers
// for their parameters, and the edits several passes make (model state, the optimizer step).
// Internal to core/src/passes.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/plan_edit.hpp"

namespace twinbed::passes {

// A Pass from `Params` and its apply / to-JSON functions. apply functions throw ConfigError with a
// path relative to the entry ("/targets/1"); the pass puts its own path in front.
template <class Params>
class TechniquePass final : public Pass {
 public:
  using ApplyFn = void (*)(Plan&, const Params&);
  using JsonFn = nlohmann::json (*)(const Params&);
  TechniquePass(std::string name, Params params, ApplyFn apply_fn, JsonFn json_fn)
      : name_(std::move(name)), params_(std::move(params)), apply_(apply_fn), to_json_(json_fn) {}
  std::string name() const override { return name_; }
  void apply(Plan& plan) const override {
    try {
      apply_(plan, params_);
    } catch (const ConfigError& e) {
      throw ConfigError(path() + e.path(), e.message());
    }
  }
  nlohmann::json params_json() const override { return to_json_(params_); }

 private:
  std::string name_;
  Params params_;
  ApplyFn apply_;
  JsonFn to_json_;
};

// The one parameter tensor an op acts on: -1 when it names none or several.
inline std::int32_t single_tensor(const std::vector<std::vector<ParamSlice>>& sets, const PlanOp& op) {
  if (op.params < 0) return -1;
  const auto& set = sets.at(static_cast<std::size_t>(op.params));
  return set.size() == 1 ? set[0].tensor : -1;
}

// The cost of a technique kernel that runs with the gradients: a memory-bound op of phase
// BackwardWeight over `elements`, moving `bytes` (rounded to the nearest byte) and doing `flops`.
OpCost kernel_cost(std::string name, OpCost::Kernel kernel, std::int64_t elements, double bytes, double flops = 0,
                   DType dtype = DType::FP32);

// The optimizer step of a program: its Compute op recorded as SpanKind::Optimizer. Throws
// InvalidArgument when there is none.
std::uint32_t optimizer_step_index(const Program& p);

// After a pass changed the parameter tensors (frozen some, added some, changed dtypes): the model
// state Allocs and Frees (weights, gradients, optimizer state) get the bytes model_state_of gives,
// and the optimizer step is re-costed for the parameters it now updates.
void refresh_model_state(ProgramEditor& e, const Plan& plan, PlanTables& tables);

// Parameter names as JSON: a list of strings parsed by parse_param_kind; ConfigError at path/i.
std::vector<ParamKind> read_param_kinds(const nlohmann::json& v, const std::string& path);
nlohmann::json param_kinds_json(const std::vector<ParamKind>& kinds);
std::vector<std::string> param_kind_names_of(const std::vector<ParamKind>& kinds);

}  // namespace twinbed::passes
