// Validation of the simulator against published measurements (experiments/validation/, its README
// documents the row formats): what `twinbed validate` runs. Two sets:
//  - collectives: nccl-tests bus bandwidths on named machines. Each row is simulated on its file's
//    topology as NCCL would run it: `nccl_algo` null is NCCL's own choice (time_group_collective's
//    "auto": sim/nccl_model.hpp on NVIDIA presets), a forced algorithm ("Ring", "Tree", "NVLS") is
//    NCCL's tuner restricted to that algorithm (its protocols still chosen by least time, as NCCL does
//    under NCCL_ALGO). busbw = size / time x busbw_factor (nccl-tests' definition, REFERENCE.md).
//  - training: end-to-end throughput of named runs. Each row holds an experiment (the project's config
//    format: cluster, model, layout, simulation) with the inputs as its source states them; one
//    iteration is simulated and the figure is computed the way the source computes its own:
//      flops "model":    Korthikanti et al. 2022's model FLOPs, no recomputation counted
//                        (model.hpp training_flops(.., Recompute::None): 72·B·s·l·h²(1 + s/6h + V/12lh));
//      flops "hardware": the FLOPs the run executes with its recomputation (training_flops with the
//                        layout's recompute: full is 96·B·s·l·h²(1 + s/6h + V/16lh)).
//    TFLOP/s per GPU = FLOPs / step time / GPUs; MFU = that / the device's dense peak in the model's dtype.
//
// error = (simulated − published) / published, signed. Aggregates per set: mean and max of |error|,
// and whether the target holds (targets are reported, never used to tune anything):
//   collectives: |error| ≤ 10 % at every row of 1 MiB and more (smaller rows are reported, not judged);
//   training:    mean |error| ≤ 5 % and max |error| ≤ 10 %.
//
// Parsing is strict (the edge): unknown keys, missing or wrong fields are ConfigErrors whose message
// names the file and whose path is the JSON pointer in it. No JSON reaches the simulation. The library
// never prints: progress goes through a callback.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/experiment.hpp"
#include "twinbed/core/schedule.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed::validation {

enum class Set { Collectives, Training };
// "collectives", "training"; parse throws UnknownName listing them.
std::string to_string(Set s);
Set parse_set(const std::string& name);
std::vector<std::string> set_names();

// What every row carries besides its inputs: where it comes from.
struct Provenance {
  std::string file;    // the data file, as found under the data folder (relative to it)
  std::string source;  // URL
  std::string where;   // where in it, in the source's words where useful
  bool operator==(const Provenance&) const = default;
};

// One nccl-tests figure (collectives/*.json).
struct CollectiveCase {
  std::string id;                   // "<file stem>/<row index>"
  Provenance provenance;
  std::string machine;
  nlohmann::json topology;          // the file's "topology" (a preset form), parsed when simulated
  CollectiveOp op = CollectiveOp::AllReduce;
  int ranks = 0;
  Bytes size = 0;                   // nccl-tests' size convention
  std::optional<std::string> nccl_algo;  // nullopt: NCCL's choice; else "Ring", "Tree" or "NVLS"
  std::optional<int> nccl_minor;         // "nccl_version": the NCCL 2.x the source ran, simulated with the nearest
                                         // modelled release's tables (nearest_modelled_nccl_minor); nullopt: 2.20's
  std::optional<double> busbw_GBps;      // exactly one of the two is set
  std::optional<double> time_us;
  bool operator==(const CollectiveCase&) const = default;
};

// How the source counts the FLOPs of its figure.
enum class FlopsBasis { Model, Hardware };
std::string to_string(FlopsBasis b);  // "model", "hardware"

// TFLOP/s per GPU and MFU count FLOPs on the row's basis; tokens_per_gpu (tokens per second per GPU,
// a source's own unit where it prints no FLOPs) counts none.
enum class Metric { TflopsPerGpu, Mfu, TokensPerGpu };
std::string to_string(Metric m);  // "tflops_per_gpu", "mfu", "tokens_per_gpu"

// One end-to-end training figure (training/*.json).
struct TrainingCase {
  std::string id;                   // the row's "id"
  Provenance provenance;
  std::string run;                  // the run as the source names it
  Experiment experiment;            // parsed and validated (layout fits the cluster)
  Metric metric = Metric::TflopsPerGpu;
  double published = 0;             // TFLOP/s per GPU, MFU as a fraction, or tokens/s per GPU
  FlopsBasis flops = FlopsBasis::Model;  // unused with TokensPerGpu
  std::vector<std::string> assumed; // inputs the source does not state: "pointer into the row: why" each
  bool operator==(const TrainingCase&) const = default;
};

struct Dataset {
  std::vector<std::string> files;   // every row file read, relative to the data folder, sorted
  std::vector<CollectiveCase> collectives;
  std::vector<TrainingCase> training;
  bool operator==(const Dataset&) const = default;
};

// The rows of one file's parsed JSON. `file` is the name used in messages and provenance; relative
// paths in an experiment (a topology file) are resolved against `base_dir`. Throws ConfigError (path:
// the JSON pointer in the file; message: what is accepted, and the file).
std::vector<CollectiveCase> collectives_from_json(const nlohmann::json& j, const std::string& file);
std::vector<TrainingCase> training_from_json(const nlohmann::json& j, const std::string& file,
                                             const std::filesystem::path& base_dir = {});

// Every *.json under dir/collectives and dir/training (sorted by name; a missing subfolder is an empty
// set; a folder without either is a ConfigError naming it). `only` restricts to one set.
Dataset load_dataset(const std::filesystem::path& dir, std::optional<Set> only = std::nullopt);

// Only the named rows, in the dataset's order: each name a row id ("mt-nlg-530b-420-nodes",
// "h100-8gpu-nvswitch/3") or a data file's stem, for all its rows ("mt-nlg-530b"). `files` is kept (the
// files read). ConfigError naming "--row" for a name that is neither, listing the data files' stems.
Dataset select_rows(const Dataset& d, const std::vector<std::string>& names);

// Cheap rows: what ctest runs. Every collective row (a tuner evaluation, microseconds); a training row
// whose plan is small: at most kCheapRanks GPUs and kCheapLayerMicroBatches layers × micro-batches per
// pipeline (no wall-clock measure: the same rows are cheap on every machine).
inline constexpr int kCheapRanks = 64;
inline constexpr std::int64_t kCheapLayerMicroBatches = 4096;
bool cheap(const TrainingCase& c);

struct RowResult {
  std::string id;
  Set set = Set::Collectives;
  std::string label;      // what was simulated, one line ("allreduce 8 ranks 4G NCCL's choice")
  std::string metric;     // "busbw_GBps", "time_us", "tflops_per_gpu", "mfu", "tokens_per_gpu"
  double published = 0;
  double simulated = 0;
  double error = 0;       // (simulated − published) / published
  bool judged = true;     // counts toward the set's target (collectives: size ≥ 1 MiB)
  std::string detail;     // the algorithm NCCL's model picked, or the step time
  std::string device;     // the GPU the row ran on, as its topology names it ("a100", "h100")
  std::optional<Bytes> size;  // collectives: the size in nccl-tests' convention (a sweep's x axis)
  // Training rows: where the simulated step went (twinbed run's "step breakdown" and "op kind" shares),
  // so that a reader can see which part of the model a row's error weighs on.
  struct Breakdown {
    double compute = 0, exposed_communication = 0, bubble = 0;  // fractions of the step, means over ranks
    std::vector<std::pair<std::string, double>> op_kinds;     // each kind's share of the summed span time
    bool operator==(const Breakdown&) const = default;
  };
  std::optional<Breakdown> breakdown;
  std::string profile;    // training rows: the measured profile it ran with (Options::profiles); empty: the defaults
  std::vector<std::string> assumed;
  Provenance provenance;
  bool operator==(const RowResult&) const = default;
};

// (simulated − published) / published; InvalidArgument when published is not > 0.
double relative_error(double simulated, double published);

// The experiment a training row simulates (named by its id): the row's own, with the measured profile
// of its device when `profiles` (as Options::profiles) has one. core/experiment.hpp's resolved() of it is
// a config `twinbed run` takes, which reruns the row with its trace and per-op tables.
Experiment row_experiment(const TrainingCase& c, const std::map<std::string, std::string>& profiles = {});

RowResult simulate(const CollectiveCase& c);
// `profiles` as Options::profiles.
RowResult simulate(const TrainingCase& c, const std::map<std::string, std::string>& profiles = {});

// Checks Options::profiles before anything runs: each key a device preset, each file a profile that
// loads for it. ConfigError naming "--profile" otherwise.
void check_profiles(const std::map<std::string, std::string>& profiles);

struct Aggregate {
  Set set = Set::Collectives;
  int rows = 0;           // judged rows
  double mean_abs_error = 0;
  double max_abs_error = 0;
  std::string max_row;    // id of the row of largest |error|
  std::string target;     // the target for this set, in words
  bool target_met = false;
  bool operator==(const Aggregate&) const = default;
};
inline constexpr Bytes kJudgedMinCollectiveBytes = MiB;
inline constexpr double kCollectiveMaxError = 0.10;
inline constexpr double kTrainingMeanError = 0.05;
inline constexpr double kTrainingMaxError = 0.10;

// One aggregate per set that has judged rows, in Set order.
std::vector<Aggregate> aggregate(const std::vector<RowResult>& rows);

struct Options {
  std::optional<Set> only;
  bool cheap_only = false;
  // Device preset name -> a measured profile of that device (twinbed calibrate --gpu): the training rows
  // whose cluster has that device are simulated with it instead of the roofline defaults (the cluster's
  // "profile"). Collective rows are NCCL's model and do not read it. Empty: the defaults everywhere.
  std::map<std::string, std::string> profiles;
  // Called before each row is simulated ("[3/12] training mtnlg-530b ...").
  std::function<void(const std::string&)> progress;
};

struct Results {
  std::vector<RowResult> rows;
  std::vector<Aggregate> aggregates;
  int skipped_expensive = 0;  // training rows left out by cheap_only
};
Results run(const Dataset& data, const Options& options);

// "twinbed-validate-1": {"format", "rows": [...], "aggregates": [...], "skipped_expensive"}; the caller
// adds "provenance".
nlohmann::json to_json(const Results& r);
// The printed table: per row id, metric, published, simulated, error %, detail; then per data file, per
// set and device, and per algorithm and protocol the collective rows were simulated as (across
// machines), the mean and max |error|; then the per-set aggregates and targets.
std::string table(const Results& r);

}  // namespace twinbed::validation
