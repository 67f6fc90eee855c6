// Technique passes: each technique is a rewrite of a Plan (../shared/DESIGN.md, "Techniques as
// passes"), found by name, with strict JSON parameters. An experiment lists them in order:
//
//   "techniques": [{"pass": "lora", "rank": 8, "targets": ["qkv", "proj"]},
//                  {"pass": "tgc", "bits": 4, "topk_fraction": 0.01, "error_feedback": true}]
//
// What each pass changes is documented in its header (core/passes/*.hpp); every pass has a neutral
// setting under which it leaves the Plan unchanged (==). Passes compose in the listed order, which must
// be the registry's — lora, precision, dsa, tgc, zrdf, each at most once (experiment.hpp checks it):
// each pass is written for the plans the earlier ones leave (precision re-costs LoRA's GEMMs; tgc
// compresses whatever gradients remain; zrdf plans the final memory). Every
// op a pass adds is an ordinary Plan op (compute ops carry an OpCost, with OpCost::kernel naming the
// technique kernel of kernels/ a real backend runs for it), so any backend can execute it.
//
// plan_for() is the one road from an experiment to its Plan: every command (run, sweep, compare,
// claims) builds plans through it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/plan.hpp"
#include "twinbed/core/registry.hpp"
#include "twinbed/core/topology.hpp"

namespace twinbed {

struct Experiment;
struct TechniqueConfig;

class Pass {
 public:
  virtual ~Pass() = default;
  virtual std::string name() const = 0;
  // Rewrites `plan` in place. Throws ConfigError under path() when this plan cannot take the pass with
  // these parameters (e.g. a LoRA target the model does not have).
  virtual void apply(Plan& plan) const = 0;
  // The parameters with every default filled in, without "pass"; parsing it back gives an equal pass.
  virtual nlohmann::json params_json() const = 0;
  // The JSON path of the experiment entry the pass came from ("/techniques/0"), for errors.
  const std::string& path() const { return path_; }
  void set_path(std::string path) { path_ = std::move(path); }

 private:
  std::string path_;
};

// Parses the parameters of one entry (the whole object, "pass" included) at `path`; strict: unknown
// keys, wrong types and out-of-range values are ConfigErrors naming path + "/key".
using PassParser = std::function<std::unique_ptr<Pass>(const nlohmann::json& entry, const std::string& path)>;

// The registered passes, in the order an experiment lists them: lora, precision, dsa, tgc, zrdf.
Registry<PassParser> technique_passes();

// One "techniques" entry: an object with "pass" naming a registered pass (ConfigError at path + "/pass"
// listing the known names otherwise) and that pass's parameters.
std::unique_ptr<Pass> parse_technique(const nlohmann::json& entry, const std::string& path);

// Applies `techniques` (an experiment's, resolved) to `plan` in order, recording them in Plan::passes;
// errors name "/techniques/<i>/...". plan_for uses it; so do runs that build plans of their own
// (claims' gradient reductions).
void apply_techniques(Plan& plan, const std::vector<TechniqueConfig>& techniques);

// The cluster shape a topology gives a plan: its ranks, and its ranks per host (all of them when hosts
// differ in size).
ClusterShape cluster_shape(const Topology& topology);

// The experiment's Plan: build_plan(model, layout, the shape of `topology`), then every technique of
// the experiment in order, then validate(). The topology defaults to the experiment's cluster; `compare`
// passes this machine's. Throws ConfigError naming the field for impossible layouts and parameters.
Plan plan_for(const Experiment& experiment);
Plan plan_for(const Experiment& experiment, const Topology& topology);

}  // namespace twinbed
