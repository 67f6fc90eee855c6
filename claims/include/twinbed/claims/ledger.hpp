// The claims ledger: every claim file put through its runs and metrics, each figure judged, and the
// table, JSON, CSV and Markdown people read. One function runs it; the CLI (`twinbed claims`) prints
// and writes what it returns.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/claims/claim.hpp"

namespace twinbed::claims {

struct FigureResult {
  std::string what;
  Reported reported;
  std::optional<double> simulated;
  std::optional<double> measured;     // from a training run (measured.hpp); empty when the figure names
                                      // none, its run's results were not given, or they hold no figure
  std::string measured_at;            // the scale the results come from (measured_scale); "" without them
  std::optional<double> arithmetic;   // a not-reproducible figure's computed check, in arithmetic_unit
  std::string arithmetic_unit;        // its metric's unit: a check need not be the reported quantity
  std::string arithmetic_why;
  Judgement judgement;
  std::string note;
};

struct ClaimResult {
  Claim claim;
  std::vector<FigureResult> figures;
  std::vector<std::string> derivations;  // inputs derived from the reported figures, and runs whose peak
                                         // memory does not fit their devices: stated beside the assumptions
  double wall_s = 0;
};

// The claim files of `dir` (experiments/claims/*.json), sorted by ID; when `ids` is not empty only
// those, in that order (an unknown ID is a ConfigError listing the known ones).
std::vector<std::string> claim_files(const std::string& dir, const std::vector<std::string>& ids);

// The train.json (`twinbed train`'s results, format "twinbed-train-1") of a run of the training config
// at `train_config` (an absolute path, as train_configs lists it) as that config is now, or nullopt when
// there is none. The ledger never trains: its caller finds, or makes, the results.
using TrainResultsLookup = std::function<std::optional<nlohmann::json>(const std::string& train_config)>;

struct LedgerOptions {
  std::function<void(const std::string&)> progress;  // hears a line per claim, when set
  TrainResultsLookup train_results;                  // unset: nothing is measured
};

// The training configs the measured figures of these claim files name (absolute, normalised, each
// once, in the order first named), each checked as run_ledger checks it (it loads, has the variant,
// the metric's unit is the figure's), so a caller can train them before run_ledger. Errors as
// run_ledger's.
std::vector<std::string> train_configs(const std::vector<std::string>& files);

// Runs every claim (runs shared between claims are simulated once; each training config is loaded, and
// its results looked up, once). A judged figure reported in another unit than its metric (simulated or
// measured) gives is a ConfigError at /figures/<i>/reported/unit; a measured figure whose training
// config cannot be loaded, or does not have its variant, one at /figures/<i>/measured/train or
// /variant, as is a variant the results hold no comparison for.
// A measured figure is judged on its measured value. Without results for its config it is not
// reproducible here ("not measured yet: run `twinbed train <config>` ..."), unless it is simulated too:
// then it is judged on the simulated value and the reason says it is not measured yet.
// Throws ConfigError (its path, then "(in <claim file>)") for a broken claim file; any other
// twinbed Error of a claim comes back as an Error ending "(in <claim file>)".
std::vector<ClaimResult> run_ledger(const std::vector<std::string>& files, const LedgerOptions& options);
std::vector<ClaimResult> run_ledger(const std::vector<std::string>& files,
                                    const std::function<void(const std::string&)>& progress = {});

// The outputs. The table has one row per figure: ID, figure, reported, simulated, measured, verdict,
// reason; then a line counting the verdicts. (The CSV adds the technique and the unit.)
std::string ledger_table(const std::vector<ClaimResult>& results);
nlohmann::json ledger_json(const std::vector<ClaimResult>& results);
std::string ledger_csv(const std::vector<ClaimResult>& results);
std::string ledger_markdown(const std::vector<ClaimResult>& results);

}  // namespace twinbed::claims
