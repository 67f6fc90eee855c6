// The runs of a claim — what its figures are computed from — and the simulations behind them.
//
// A claim file's "runs" maps names to run specifications:
//   {"experiment": "../gpt3-175b-1024-a100-pp16.json"}   an experiment file, relative to the claim file
//   {"config": {...}}                                     an experiment config written inline
//   {"from": "<run>", "set": {"/layout/pp": 8}, "techniques": [...], "add_techniques": [...]}
//                                                         another run changed: values put at JSON
//                                                         pointers, techniques replaced or appended
//   {"reduction": {"cluster": {...}, "gradient_bytes": 2e9, "dtype": "bf16", "algorithm": "ring",
//                  "network": "flow"}}                    one data-parallel all-reduce of gradients over
//                                                         the whole cluster (core's reduction_plan);
//                                                         "gradient_bytes": {"for_time_s": 12.7} derives
//                                                         the size whose plain all-reduce takes that long
//                                                         (a secant search on the simulated time, aiming
//                                                         at 0.01%, an error beyond 1%; the derivation,
//                                                         with the time reached, is reported)
//   {"from": "<reduction>", "techniques": [...]}          the same reduction with passes (tgc)
// Errors name the JSON path ("/runs/tgc/from"); run_ledger adds the claim file.
//
// Every run is simulated once per Runs object, whichever claim names it: runs are cached by their
// specification resolved as far as it goes without simulating (the experiment config after "from" and
// "set", or the reduction's fields; the folder relative paths start from; for a derived size, the
// reduction it was derived on), so twenty claims that share the GPT-3 baseline simulate it once, and two
// runs that differ only in where their size was derived are two simulations.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/claims/claim.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/report.hpp"

namespace twinbed::claims {

struct RunResult {
  bool reduction = false;
  Experiment experiment;            // for reductions: the cluster, techniques and simulation options
  Plan plan;
  Report report;
  std::string topology;             // the cluster, in words
  Bytes gradient_bytes = 0;         // reductions: the gradient buffer
  std::string derivation;           // how a derived input was obtained ("" when none)
  double wall_s = 0;                // plan building and simulation
};

class Runs {
 public:
  // The run `name` of `claim`, simulated (or from the cache). Throws ConfigError naming the run's
  // path for a bad specification, and what the simulation throws.
  const RunResult& get(const Claim& claim, const std::string& name);
  // Simulations done so far (for progress and tests).
  int simulations() const { return simulations_; }

 private:
  struct Spec;
  Spec resolve(const Claim& claim, const std::string& name, int depth) const;
  Bytes derive_bytes(const Spec& spec, double seconds, std::string& derivation);
  std::unique_ptr<RunResult> simulate(const Spec& spec);

  std::map<std::string, std::unique_ptr<RunResult>> cache_;
  std::map<std::string, std::pair<Bytes, std::string>> derived_;  // reduction key -> (bytes, derivation)
  int simulations_ = 0;
};

}  // namespace twinbed::claims
