// Measured figures: a claim's figure read from the results of a real training run (`twinbed train`,
// train/include/twinbed/train/train_output.hpp), not from the simulator. The claims library never
// trains: run_ledger (ledger.hpp) asks its caller for a run's train.json and reads it here.
//
// A measured figure names a variant of a training config; its value comes from the comparison of that
// variant with its reference (the technique-free variant trained as many steps from the same weights),
// read by one of these metrics, each in one unit ("%"):
//   accuracy_drop_points          reference − variant final top-1 next-byte held-out accuracy, in
//                                 percentage points (the comparison's accuracy_drop_points): how the
//                                 seeds' "accuracy loss <0.5%" is read
//   accuracy_retained_pct         100 · variant / reference final held-out accuracy
//   held_out_loss_increase_pct    100 · (variant − reference final held-out loss) / reference loss
//   gradient_bytes_reduction_pct  100 · (1 − variant / reference gradient bytes per step (bytes_ratio))
// A figure measured this way is judged on the measured value, and its reason ends with the scale it
// was measured at (measured_scale), which is not the seed's. Training differs from run to run (another
// seed gives another trajectory); when the config trains the reference with other seeds too, the spread
// between them (max − min) is carried through the metric and taken as ± around the value, and a value
// whose spread reaches across the reported bound is "not reproducible here": this scale cannot tell.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/registry.hpp"

namespace twinbed::claims {

// What the measured metrics read of a train.json (format "twinbed-train-1"), as plain values.
struct TrainedVariant {
  std::string name;
  std::string from;                 // the variant whose final weights it started from; "" from scratch
  bool checkpoint = false;          // started from a checkpoint file instead
  std::int64_t steps = 0;           // as configured
  std::int64_t parameters = 0;      // the model's (LoRA's adapters not counted)
  double final_held_out_loss = 0;   // nats
  double final_held_out_accuracy = 0;  // top-1 next byte, in [0, 1]
  double mean_bytes_per_step = 0;   // gradient exchange, the busiest rank's
  std::string corpus;               // in words: "Debian's fortunes (computers, linux)"
  bool operator==(const TrainedVariant&) const = default;
};

struct TrainedComparison {
  std::string variant, reference;
  double held_out_delta_equal_steps = 0;  // nats; NaN when train.json has null
  double accuracy_drop_points = 0;
  double bytes_ratio = 0;
  // How far apart the reference and its technique-free peers (other seeds) ended: NaN without peers.
  double seed_spread_loss = 0;             // nats
  double seed_spread_accuracy_points = 0;  // percentage points
  int seed_runs = 1;                       // runs the spread is taken over
  bool operator==(const TrainedComparison&) const = default;
};

struct TrainResults {
  int layers = 0, hidden = 0, ranks = 0;  // from the config in its provenance
  std::vector<TrainedVariant> variants;
  std::vector<TrainedComparison> comparisons;
  const TrainedVariant* variant(const std::string& name) const;         // nullptr when absent
  const TrainedComparison* comparison(const std::string& variant) const;  // nullptr when it has none
  bool operator==(const TrainResults&) const = default;
};

// Reads a train.json. Error (not ConfigError: the file is a result, not the claim's input) naming
// `where` and the JSON path for a wrong format, a missing or mistyped field, or a comparison whose
// variant or reference is not among the variants.
TrainResults train_results_from_json(const nlohmann::json& train_json, const std::string& where);

struct MeasuredMetric {
  std::string unit;  // as claim files write units
  // The value for `c`; `why` gets what it was computed from ("top-1 held-out accuracy: ...").
  std::function<double(const TrainResults& r, const TrainedComparison& c, std::string& why)> value;
  // The run-to-run spread of that value at this scale, in the same unit: the comparison's seed spread
  // carried through the metric (0 for what does not vary between runs, such as bytes); NaN when the
  // training config trains the reference with no other seed.
  std::function<double(const TrainResults& r, const TrainedComparison& c)> spread;
};

// The measured metrics, by name (the list above).
Registry<MeasuredMetric> measured_metrics();

// "a 4-layer, 128-wide byte-level GPT (0.83 M parameters) trained 400 steps on 2 CPU ranks on Debian's
// fortunes": the scale `variant` was measured at. InvalidArgument for a variant not in `r`.
std::string measured_scale(const TrainResults& r, const std::string& variant);

// About how many minutes `twinbed train` takes for the training config at `train_config` (at least 1):
// its FLOPs (forward and backward of every variant's steps, and its evaluations) at the rate the
// default config ran at on a 2-core machine. An estimate for messages, no more. Throws what
// load_train_config throws.
int training_minutes(const std::string& train_config);

}  // namespace twinbed::claims
