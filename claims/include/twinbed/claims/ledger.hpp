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
  std::optional<double> measured;     // empty until a real backend measures the claims
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

// Runs every claim (runs shared between claims are simulated once). `progress`, when set, hears a line
// per claim. A judged figure reported in another unit than its metric gives is a ConfigError at
// /figures/<i>/reported/unit. Throws ConfigError (its path, then "(in <claim file>)") for a broken claim file; any other
// twinbed Error of a claim comes back as an Error ending "(in <claim file>)".
std::vector<ClaimResult> run_ledger(const std::vector<std::string>& files,
                                    const std::function<void(const std::string&)>& progress = {});

// The outputs. The table has one row per figure: ID, technique, figure, reported, simulated, measured,
// verdict, reason.
std::string ledger_table(const std::vector<ClaimResult>& results);
nlohmann::json ledger_json(const std::vector<ClaimResult>& results);
std::string ledger_csv(const std::vector<ClaimResult>& results);
std::string ledger_markdown(const std::vector<ClaimResult>& results);

}  // namespace twinbed::claims
