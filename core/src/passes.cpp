#include "twinbed/core/passes.hpp"

#include "passes/pass_support.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/core/passes/dsa.hpp"
#include "twinbed/core/passes/lora.hpp"
#include "twinbed/core/passes/tgc.hpp"
#include "twinbed/core/passes/zrdf.hpp"
#include "twinbed/core/passes/precision.hpp"

namespace twinbed {

namespace {

using nlohmann::json;

template <class Params>
PassParser parser(const char* name, Params (*from_json)(const json&, const std::string&), void (*apply_fn)(Plan&, const Params&),
                  json (*to_json)(const Params&)) {
  return [=](const json& entry, const std::string& path) -> std::unique_ptr<Pass> {
    auto pass = std::make_unique<passes::TechniquePass<Params>>(name, from_json(entry, path), apply_fn, to_json);
    pass->set_path(path);
    return pass;
  };
}

}  // namespace

Registry<PassParser> technique_passes() {
  Registry<PassParser> r("technique pass");
  r.add("lora", "LoRA adapters on chosen layer matrices, every base parameter frozen (Hu et al. 2021)",
        parser("lora", lora_params_from_json, apply_lora, lora_params_to_json));
  r.add("precision", "mixed precision per layer and op class; adaptive: HPAS's per-layer split, its statistics and loss scaling (seed 004)",
        parser("precision", precision_params_from_json, apply_precision, precision_params_to_json));
  r.add("dsa", "dynamic sparse activation: masked weight gradients and updates at a density, mask refresh (seed 004)",
        parser("dsa", dsa_params_from_json, apply_dsa, dsa_params_to_json));
  r.add("tgc", "gradient compression: quantised / top-k payloads with error feedback on the dp reduction (seed 004)",
        parser("tgc", tgc_params_from_json, apply_tgc, tgc_params_to_json));
  r.add("zrdf", "memory planning: every tensor an offset in one arena from lifetime analysis (seed 004); list it last",
        parser("zrdf", zrdf_params_from_json, apply_zrdf, zrdf_params_to_json));
  return r;
}

std::unique_ptr<Pass> parse_technique(const json& entry, const std::string& path) {
  json_read::require_object(entry, path);
  const Registry<PassParser> passes = technique_passes();
  const json& name = json_read::required(entry, path, "pass", "the technique's pass (" + json_read::join(passes.names()) + ")");
  const std::string pass = json_read::read_string(name, path + "/pass");
  const PassParser* parse = passes.find(pass);
  if (!parse) json_read::fail(path + "/pass", "unknown technique pass '" + pass + "'; known: " + json_read::join(passes.names()));
  return (*parse)(entry, path);
}

ClusterShape cluster_shape(const Topology& topology) {
  const int rph = topology.uniform_ranks_per_host();
  return {topology.num_ranks(), rph > 0 ? rph : topology.num_ranks()};
}

Plan plan_for(const Experiment& experiment) { return plan_for(experiment, build_topology(experiment.cluster)); }

void apply_techniques(Plan& plan, const std::vector<TechniqueConfig>& techniques) {
  for (std::size_t i = 0; i < techniques.size(); ++i) {
    const TechniqueConfig& t = techniques[i];
    json entry = {{"pass", t.pass}};
    entry.update(t.params);
    parse_technique(entry, json_read::child("/techniques", i))->apply(plan);
    plan.passes.push_back(t.pass);
  }
}

Plan plan_for(const Experiment& experiment, const Topology& topology) {
  Plan plan = build_plan(experiment.model, experiment.layout, cluster_shape(topology));
  apply_techniques(plan, experiment.techniques);
  validate(plan);
  return plan;
}

}  // namespace twinbed
