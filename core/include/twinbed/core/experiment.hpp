// An experiment: one JSON config that says what to run (model, layout), where (cluster), how
// (backends, simulation options), where to put the results, and optionally a sweep over any field.
// Format and a commented example: README.md, section "Experiments".
//
// Parsing is strict, at this edge only: an unknown key, a wrong type or an out-of-range value is a
// ConfigError whose path is the JSON pointer of the offending value ("/cluster/ranks",
// "/layout/tp", "/sweep/~1layout~1pp") and whose message lists the accepted keys or values. Units are
// in key names. The parsed Experiment is a plain value; nothing downstream touches JSON.
//
// Relative file paths in a config (a topology file, a measured profile) are resolved against the folder
// of the config file (`base_dir`), and stored absolute, so a resolved config can be run from anywhere.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/layout.hpp"
#include "twinbed/core/model.hpp"
#include "twinbed/core/topology.hpp"
#include "twinbed/core/topology_builders.hpp"

namespace twinbed {

// "cluster": a topology preset with overrides, or a topology file; and the device or a measured profile.
//   {"topology": "dgx-a100", "ranks": 1024}                  a preset (see `twinbed list`) and its overrides
//   {"topology": "topologies/my.json"}                        a topology file (no overrides)
//   {"topology": "nvswitch-node", "device": "h100", "profile": "profiles/this-machine.json"}
// The override keys are those of a preset topology file (README "Topology files"); a preset that does
// not take one (e.g. "dims" on "switch") rejects it.
struct ClusterConfig {
  std::string topology = "switch";  // preset name, or the absolute path of a topology file
  bool topology_is_file = false;
  topo::PresetParams overrides;       // a preset's parameters given in the config (none for a file)
  std::string profile;                // absolute path of a measured compute profile; empty when none
  bool operator==(const ClusterConfig&) const = default;
};

// The NCCL releases whose tuner `auto` can model, by minor version: 2.20 to 2.28
// (sim/src/nccl_model.cpp lists what changed between them). "2.24" or "2.24.3" -> 24; anything else
// throws ConfigError at `path` naming the accepted ones.
inline constexpr int kNcclOldestMinor = 20;
inline constexpr int kNcclNewestMinor = 28;
int parse_nccl_version(const std::string& text, const std::string& path);
// Any NCCL 2.x release, modelled or not: "2.29.2" -> 29; ConfigError at `path` unless "2.<minor>" or
// "2.<minor>.<patch>".
int parse_nccl_release(const std::string& text, const std::string& path);
// The modelled release nearest to 2.<minor>: itself, 2.20 for an older one, 2.28 for a newer one (a
// release's tuner shares most of its tables with its neighbours').
int nearest_modelled_nccl_minor(int minor);

// "simulation": options of the sim backend. Names are checked against the accepted lists here; the
// simulator owns their meaning.
struct SimulationConfig {
  std::string network = "flow";                  // flow | analytical
  std::string fidelity = "representative";       // full | representative | coarse
  std::string collective_algorithm = "auto";     // auto | ring | tree | rhd | direct | hierarchical
  int nccl_minor = kNcclOldestMinor;             // "nccl_version": the NCCL 2.x auto models
  bool operator==(const SimulationConfig&) const = default;
};

// One technique of the experiment: a registered pass (core/passes.hpp) and its parameters, resolved
// (every default filled in, without "pass").
struct TechniqueConfig {
  std::string pass;
  nlohmann::json params = nlohmann::json::object();
  bool operator==(const TechniqueConfig&) const = default;
};

struct Experiment {
  std::string name;
  std::string description;                      // optional, one line for humans
  ClusterConfig cluster;
  TransformerModel model;
  Layout layout;
  std::vector<TechniqueConfig> techniques;      // passes applied to the plan, in order
  std::vector<std::string> backends{"sim"};     // "sim" and/or "real" (CPU ranks over MPI)
  SimulationConfig simulation;
  std::string output;                           // results folder; default "results/<name>"
  std::vector<std::string> warnings;            // from layout validation: legal, probably unintended
  bool operator==(const Experiment&) const = default;
};

// Accepted names, for messages and --help.
std::vector<std::string> accepted_backends();      // sim, real
std::vector<std::string> accepted_techniques();    // the registered passes, in the order an experiment lists them: lora, precision, dsa, tgc, zrdf
std::vector<std::string> accepted_networks();      // flow, analytical
std::vector<std::string> accepted_fidelities();    // full, representative, coarse
std::vector<std::string> accepted_collective_algorithms();

// Builds the cluster's topology. Throws ConfigError naming "/cluster/..." when a preset rejects an
// override or its value, or the topology file is bad.
Topology build_topology(const ClusterConfig& cluster);

// Parses a config object. "sweep" is allowed and ignored here (see expand_sweep). The layout's "dp"
// may be the string "auto": the cluster's ranks / (tp·cp·pp). After parsing, the layout is validated
// against the model and the cluster (layout.hpp's validate): an impossible layout is a ConfigError
// naming its field; warnings land in Experiment::warnings. Each "techniques" entry is parsed strictly by
// its pass (core/passes.hpp): errors name "/techniques/<i>/<key>".
Experiment experiment_from_json(const nlohmann::json& config, const std::filesystem::path& base_dir);

// The "cluster" and "techniques" sections alone, as experiment_from_json parses them (paths
// "/cluster/...", "/techniques/..." or `path`), for runs that are not whole experiments (claims'
// reductions, `twinbed train`'s variants).
ClusterConfig cluster_from_json(const nlohmann::json& j, const std::filesystem::path& base_dir);
std::vector<TechniqueConfig> techniques_from_json(const nlohmann::json& j, const std::string& path = "/techniques");

// The rule for an experiment's "name" (it names a results folder): 1 to 128 letters, digits, '-', '_'
// and '.', not starting with '.'.
bool valid_name(const std::string& name);

// Reads a file (malformed JSON and keys repeated within one object are ConfigErrors naming the file)
// without interpreting it. Paths in it are relative to the file's folder.
nlohmann::json read_config_file(const std::filesystem::path& file);
// read_config_file + experiment_from_json(…, the file's folder). Errors from inside the config keep the
// JSON path as their path and name the file in the message.
Experiment load_experiment(const std::filesystem::path& file);

// The fully resolved config: every section and key written with its value (defaults filled in, paths
// absolute, "dp": "auto" replaced by its number), no "sweep". experiment_from_json(resolved(e), any)
// == e (warnings aside, which are recomputed). Written beside the results.
nlohmann::json resolved(const Experiment& e);
// The "techniques" array of a resolved config: [{"pass": name, ...params}].
nlohmann::json techniques_json(const std::vector<TechniqueConfig>& techniques);

// ---- sweeps ----------------------------------------------------------------------------------------
//
// "sweep": {"/layout/pp": [8, 16], "/layout/micro_batch": [1, 2]} — keys are JSON pointers into the
// config, values non-empty arrays of values to put there. The points are the Cartesian product, the
// first axis varying slowest; axes are in the order of their pointers sorted as strings (JSON objects
// are unordered, so the file's order cannot be relied on). A pointer must name a key
// inside an existing section (its parent exists in the config); it cannot point into "sweep" or at
// "name"/"output" (one results folder per sweep).

struct SweepAxis {
  std::string pointer;                  // "/layout/pp"
  std::vector<nlohmann::json> values;
  bool operator==(const SweepAxis&) const = default;
};

struct SweepPoint {
  std::size_t index = 0;                // position in the product, 0-based
  std::string id;                       // "layout.pp=8,layout.micro_batch=1": stable across runs, used
                                        // to resume; the pointers' "/" become ".", strings unquoted;
                                        // '\\', ',' and '=' in a value are escaped with '\\', and so is
                                        // what would break a line (json_read::one_line): unique, one line
  std::vector<nlohmann::json> values;   // one per axis
  nlohmann::json config;                // the full config of this point, without "sweep"
  bool operator==(const SweepPoint&) const = default;
};

// The axes of the config's "sweep" (empty when there is none). Throws ConfigError naming
// "/sweep/<escaped pointer>" for a malformed pointer, a pointer whose parent does not exist, a
// forbidden target, a value that is not a non-empty array, a value given twice (two points would share
// an id), or a swept value the strict parser rejects where it is put (an unknown key "/layout/ppp", a
// wrong type, a value out of range). Each value is checked by parsing the config with that one value in
// place (without the layout's cross-field checks, so an impossible combination is not an error here). `base_dir` as for experiment_from_json.
std::vector<SweepAxis> sweep_axes(const nlohmann::json& config, const std::filesystem::path& base_dir);

// Every point of the sweep, in product order (one point with id "base" and no values when there is no
// sweep). The points' configs are not parsed here: a point may be impossible (a layout that does not
// fit), which the caller records per point by calling experiment_from_json on point.config.
// The product is capped at kMaxSweepPoints (ConfigError on /sweep beyond, before any point is built):
// each point holds its whole config, about 4 KB for a small one, so 100,000 points take some 400 MB
// (a million took 3.8 GB), and a 100,000-row table stays far below json_read::kMaxInputFileBytes.
inline constexpr std::size_t kMaxSweepPoints = 100000;
std::vector<SweepPoint> expand_sweep(const nlohmann::json& config, const std::filesystem::path& base_dir);

}  // namespace twinbed
