// A claim of the ledger: one row of ../shared/CLAIMS.md, as `experiments/claims/<ID>.json` states it —
// the reported figures, the runs that put them to the test, the assumptions where the seed leaves a gap —
// and the verdict rule. Parsed strictly at the edge (ConfigError naming the JSON path); nothing
// downstream touches JSON except the runs' experiment configs, which go through experiment.hpp.
//
// File format (every key but the optional ones required; unknown keys are errors):
//   {"id": "TGC-AR",                         // = the file name without .json
//    "seed": "004", "technique": "...", "claim": "...as CLAIMS.md states it...",
//    "assumptions": ["..."],                 // optional: what the seed leaves out and what is assumed
//    "runs": {"<name>": <run>, ...},         // optional: see runs.hpp
//    "figures": [<figure>, ...]}
//   figure: {"what": "all-reduce time",
//            "reported": {"value": 0.3} | {"min": 60, "max": 75} | {"max": 0.5} | {"min": 92},
//                        plus "unit": "s" and optionally "baseline": 12.7 (the "before" of "before → after"),
//            "metric": {"name": "<metric>", ...its arguments}   (metrics.hpp): simulated, and/or
//            "measured": {"train": "../train-fortunes.json",    measured in a real training run
//                         "variant": "dsa-30pct",               (measured.hpp): a training config
//                         "metric": "accuracy_drop_points"}     relative to the claim file, one of its
//                                                              variants, a measured metric; or
//            "not_reproducible": "why this figure cannot be put to an experiment here"
//                                                              (alone: not with "metric" or "measured"),
//            "arithmetic": {"name": "<metric>", ...}            optional without "metric": a check the
//                                                              figure allows, computed and shown
//            "tolerance": {"rel": 0.1} | {"abs": 2},            default {"rel": 0.1}; abs in the figure's
//                                                              unit, both >= 0 (0: an exact match)
//            "note": "..."}                                     optional: the analysis shown with a verdict
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace twinbed::claims {

// A reported figure: a value, a range, or a bound ("< 0.5%": max only; "> 90%": min only).
struct Reported {
  std::optional<double> value, min, max;
  std::string unit;
  std::optional<double> baseline;  // the "before" of a "before → after" figure, for the record
  bool operator==(const Reported&) const = default;
};

struct Tolerance {
  double rel = 0.1;                // relative to the reported value (or to the range's bounds)
  std::optional<double> abs;       // absolute, in the figure's unit; when given it is used instead of rel
                                   // (0: an exact match)
  bool operator==(const Tolerance&) const = default;
};

// Where a measured figure comes from: the comparison of `variant` with its reference in the results of
// a `twinbed train` run of the config at `train_config` (train_output.hpp), read by `metric`.
struct Measured {
  std::string train;         // the training config's path as the claim file gives it (relative to it)
  std::string train_config;  // the same, absolute and normalised
  std::string variant;       // a variant of that config (checked when the ledger loads the config)
  std::string metric;        // a measured metric's name (measured.hpp), checked when parsed
  bool operator==(const Measured&) const = default;
};

struct Figure {
  std::string what;
  Reported reported;
  nlohmann::json metric;             // {"name": ..., args}; null when not simulated
  std::optional<Measured> measured;  // when the figure is measured in a training run
  std::string not_reproducible;      // why, when the figure cannot be put to an experiment here
  nlohmann::json arithmetic;         // an optional computed check for a not-reproducible figure
  Tolerance tolerance;
  std::string note;
  bool operator==(const Figure&) const = default;
};

struct Claim {
  std::string id;
  std::string seed;
  std::string technique;
  std::string claim;
  std::vector<std::string> assumptions;
  nlohmann::json runs = nlohmann::json::object();  // parsed by the runner (runs.hpp), which knows their shape
  std::vector<Figure> figures;
  std::string file;                                // where it was read from (absolute)
  bool operator==(const Claim&) const = default;
};

Claim claim_from_json(const nlohmann::json& j, const std::string& file);
// Reads and parses a claim file; the id must equal the file's stem.
Claim load_claim(const std::string& file);

// ---- verdicts -------------------------------------------------------------------------------------

enum class Verdict { Reproduced, NotReproduced, NotReproducibleHere };
// "reproduced", "not reproduced", "not reproducible here".
std::string to_string(Verdict v);

struct Judgement {
  Verdict verdict = Verdict::NotReproducibleHere;
  std::string reason;
  bool operator==(const Judgement&) const = default;
};

// What a judged value comes from: the simulator or a real training run. The reason says which
// ("simulated 0.3 s, ..." / "measured 0.12 %, ...").
enum class Source { Simulated, Measured };

// The verdict on a figure given the value found for it, simulated or measured (nullopt or not finite:
// nothing could be computed, which is a missing input). Within tolerance: a value v is matched when
// |s − v| ≤ tol(v); a range [a, b] when a − tol(a) ≤ s ≤ b + tol(b); a bound "max b" when s ≤ b + tol(b);
// "min a" when s ≥ a − tol(a); tol(x) = abs when given, else rel·|x|. The reason states both figures and
// the ratio between them; `why` (what drives the difference, computed by the caller) is appended when
// not reproduced. A figure with not_reproducible is not reproducible here whatever the value.
Judgement judge(const Figure& f, std::optional<double> value, const std::string& why = "", Source source = Source::Simulated);

// "0.3 s", "60–75 %", "≤ 0.5 %", "≥ 92 %"; with the baseline: "12.7 → 0.3 s".
std::string format_reported(const Reported& r);
// A number in few significant digits ("0.304", "98.4", "1200", "1.23e+05": exponent form at |v| >= 1e5
// or below 1e-3).
std::string format_value(double v);

}  // namespace twinbed::claims
