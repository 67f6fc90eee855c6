#include "twinbed/core/experiment.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string_view>

#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/core/topology_json.hpp"

namespace twinbed {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

using json_read::check_keys;
using json_read::child;
using json_read::fail;
using json_read::got;
using json_read::join;
using json_read::read_string;
using json_read::require_object;
using json_read::required;

std::string read_choice(const json& v, const std::string& path, const std::vector<std::string>& accepted) {
  const std::string s = read_string(v, path);
  if (std::find(accepted.begin(), accepted.end(), s) == accepted.end()) {
    fail(path, "unknown value " + json_read::quoted(s) + "; accepted: " + join(accepted));
  }
  return s;
}

// A file path from the config, relative to the config's folder; it must be a file twinbed can read
// (json_read::unreadable_reason).
std::string read_file_path(const json& v, const std::string& path, const fs::path& base_dir, const std::string& what) {
  const std::string text = read_string(v, path);
  if (text.empty()) fail(path, "expected a file path, got an empty string");
  fs::path p(text);
  if (p.is_relative()) p = base_dir / p;
  p = fs::absolute(p).lexically_normal();
  if (const std::string why = json_read::unreadable_reason(p, what); !why.empty()) {
    fail(path, json_read::quoted(p.string(), std::string::npos) + ": " + why);
  }
  return p.string();
}

// ---- sections ----------------------------------------------------------------------------------


ClusterConfig parse_cluster(const json& j, const fs::path& base_dir) {
  const std::string path = "/cluster";
  require_object(j, path);
  std::vector<std::string> accepted = {"topology", "profile"};
  for (const std::string& key : preset_override_keys()) accepted.push_back(key);
  check_keys(j, path, accepted);

  ClusterConfig c;
  const json& topology = required(j, path, "topology", "a topology preset name or a topology file");
  const std::string name = read_string(topology, path + "/topology");
  const Registry<topo::PresetFactory> presets = topo::topology_presets();
  if (presets.find(name)) {
    c.topology = name;
  } else {
    fs::path p(name);
    if (p.is_relative()) p = base_dir / p;
    p = fs::absolute(p).lexically_normal();
    std::error_code ec;
    if (name.empty() || !fs::exists(p, ec)) {
      fail(path + "/topology", json_read::quoted(name) + " is neither a topology preset (known: " + join(presets.names()) +
                                   ") nor a file (looked for " + json_read::quoted(p.string(), std::string::npos) + ")");
    }
    if (const std::string why = json_read::unreadable_reason(p, "topology"); !why.empty()) {
      fail(path + "/topology", json_read::quoted(p.string(), std::string::npos) + ": " + why);
    }
    c.topology = p.string();
    c.topology_is_file = true;
    for (const std::string& key : preset_override_keys()) {
      if (j.contains(key)) fail(child(path, key), "applies to topology presets only; edit the topology file instead");
    }
  }
  c.overrides = preset_params_from_json(j, path);
  if (j.contains("profile")) c.profile = read_file_path(j["profile"], path + "/profile", base_dir, "measured profile");
  return c;
}

SimulationConfig parse_simulation(const json& j) {
  const std::string path = "/simulation";
  require_object(j, path);
  check_keys(j, path, {"network", "fidelity", "collective_algorithm", "nccl_version"});
  SimulationConfig s;
  if (j.contains("network")) s.network = read_choice(j["network"], path + "/network", accepted_networks());
  if (j.contains("fidelity")) s.fidelity = read_choice(j["fidelity"], path + "/fidelity", accepted_fidelities());
  if (j.contains("collective_algorithm")) {
    s.collective_algorithm =
        read_choice(j["collective_algorithm"], path + "/collective_algorithm", accepted_collective_algorithms());
  }
  if (j.contains("nccl_version")) {
    s.nccl_minor = parse_nccl_version(read_string(j["nccl_version"], path + "/nccl_version"), path + "/nccl_version");
  }
  return s;
}

std::vector<std::string> parse_backends(const json& j) {
  if (!j.is_array() || j.empty()) fail("/backends", "expected a non-empty array of backend names (accepted: sim, real), got " + got(j));
  std::vector<std::string> out;
  for (std::size_t i = 0; i < j.size(); ++i) {
    const std::string p = "/backends/" + std::to_string(i);
    const std::string b = read_string(j[i], p);
    if (b != "sim" && b != "real") {
      fail(p, "unknown backend " + json_read::quoted(b) + "; accepted: sim, real (CPU ranks over MPI)");
    }
    if (std::find(out.begin(), out.end(), b) != out.end()) fail(p, "backend " + json_read::quoted(b) + " is listed twice");
    out.push_back(b);
  }
  return out;
}

std::vector<TechniqueConfig> parse_techniques(const json& j, const std::string& path = "/techniques") {
  if (!j.is_array()) {
    fail(path, "expected an array of technique entries like {\"pass\": \"lora\", \"rank\": 8}, got " + got(j));
  }
  std::vector<TechniqueConfig> out;
  // Passes apply in one order, the registry's (lora, precision, dsa, tgc, zrdf), each at most once:
  // each pass's documentation describes what it does to the plans the earlier ones leave.
  const std::vector<std::string> order = technique_passes().names();
  const auto rank = [&](const std::string& name) { return std::find(order.begin(), order.end(), name) - order.begin(); };
  for (std::size_t i = 0; i < j.size(); ++i) {
    const std::unique_ptr<Pass> pass = parse_technique(j[i], child(path, i));
    if (!out.empty() && rank(out.back().pass) >= rank(pass->name())) {
      fail(child(path, i), pass->name() + (out.back().pass == pass->name() ? " is listed twice" : " must come before " + out.back().pass) +
                                        "; techniques apply in the order " + join(order) + ", each at most once");
    }
    out.push_back({pass->name(), pass->params_json()});
  }
  return out;
}

// "2.<minor>" or "2.<minor>.<patch>", each part 1 to 3 decimal digits: the minor; nullopt otherwise.
std::optional<int> nccl_release_minor(std::string_view v) {
  const auto digits = [](std::string_view s) {
    return !s.empty() && s.size() <= 3 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (v.substr(0, 2) != "2.") return std::nullopt;
  const std::size_t dot = v.find('.', 2);
  const std::string_view m = v.substr(2, dot == std::string_view::npos ? std::string_view::npos : dot - 2);
  if (!digits(m) || (dot != std::string_view::npos && !digits(v.substr(dot + 1)))) return std::nullopt;
  return std::stoi(std::string(m));
}

bool nccl_minor_modelled(int minor) { return minor >= kNcclOldestMinor && minor <= kNcclNewestMinor; }

}  // namespace

int parse_nccl_release(const std::string& text, const std::string& path) {
  const std::optional<int> minor = nccl_release_minor(text);
  if (!minor) {
    fail(path, "expected an NCCL release as \"2.<minor>\" or \"2.<minor>.<patch>\" (\"2.24\", \"2.24.3\"), got " +
                   json_read::quoted(text));
  }
  return *minor;
}

int parse_nccl_version(const std::string& text, const std::string& path) {
  const int minor = nccl_release_minor(text).value_or(-1);
  if (!nccl_minor_modelled(minor)) {
    fail(path, "NCCL version " + json_read::quoted(text) + " is not modelled; accepted: 2." +
                   std::to_string(kNcclOldestMinor) + " to 2." + std::to_string(kNcclNewestMinor) +
                   ", as \"2.24\" or \"2.24.3\"");
  }
  return minor;
}

int nearest_modelled_nccl_minor(int minor) { return std::clamp(minor, kNcclOldestMinor, kNcclNewestMinor); }

bool valid_name(const std::string& name) {
  return !name.empty() && name.size() <= 128 && name.front() != '.' &&
         std::all_of(name.begin(), name.end(), [](char ch) {
           return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                  ch == '_' || ch == '.';
         });
}

namespace {

// The layout object with "dp": "auto" replaced by ranks / (tp·cp·pp). Other problems with tp/cp/pp are
// left to layout_from_json, which names them.
json resolve_auto_dp(const json& layout, int ranks) {
  if (!layout.is_object() || !layout.contains("dp") || !layout["dp"].is_string()) return layout;
  const std::string path = "/layout/dp";
  if (layout["dp"].get<std::string>() != "auto") {
    fail(path, "expected an integer >= 1 or the string \"auto\" (the cluster's ranks / (tp·cp·pp)), got " + got(layout["dp"]));
  }
  const auto degree = [&](const char* key) -> std::int64_t {
    if (!layout.contains(key)) return 1;
    return layout[key].is_number_integer() && layout[key].get<std::int64_t>() >= 1 ? layout[key].get<std::int64_t>() : 1;
  };
  const std::int64_t others = degree("tp") * degree("cp") * degree("pp");
  if (ranks % others != 0) {
    fail(path, "\"auto\" needs the cluster's " + std::to_string(ranks) + " ranks to be a multiple of tp·cp·pp = " +
                   std::to_string(others));
  }
  json out = layout;
  out["dp"] = ranks / others;
  return out;
}

// Parses every section; checks the layout against model and cluster only when asked (sweep value
// checks parse single values without the cross-field checks).
Experiment parse(const json& config, const fs::path& base_dir, bool check_layout) {
  require_object(config, "");
  check_keys(config, "",
             {"name", "description", "cluster", "model", "layout", "techniques", "backends", "simulation", "output", "sweep"});
  Experiment e;
  e.name = read_string(required(config, "", "name", "the experiment's name, also its default results folder"), "/name");
  if (!valid_name(e.name)) {
    fail("/name", "expected a non-empty name of letters, digits, '-', '_' and '.' (it names a folder), got " +
                      json_read::quoted(e.name));
  }
  if (config.contains("description")) e.description = read_string(config["description"], "/description");

  e.cluster = parse_cluster(required(config, "", "cluster", "the topology and device"), base_dir);
  const Topology topology = build_topology(e.cluster);
  e.model = model_from_json(required(config, "", "model", "the transformer"), "/model");
  e.layout = layout_from_json(resolve_auto_dp(required(config, "", "layout", "how the model is spread over the cluster"),
                                              topology.num_ranks()),
                              "/layout");
  if (config.contains("techniques")) e.techniques = parse_techniques(config["techniques"]);
  if (config.contains("backends")) e.backends = parse_backends(config["backends"]);
  if (config.contains("simulation")) e.simulation = parse_simulation(config["simulation"]);
  e.output = "results/" + e.name;
  if (config.contains("output")) {
    e.output = read_string(config["output"], "/output");
    if (e.output.empty()) fail("/output", "expected a folder path, got an empty string");
  }
  if (config.contains("sweep")) {
    require_object(config["sweep"], "/sweep");  // its contents are sweep_axes' business
  }
  if (check_layout) {
    const int rph = topology.uniform_ranks_per_host();
    e.warnings = validate(e.layout, e.model, topology.num_ranks(), rph > 0 ? rph : topology.num_ranks());
  }
  return e;
}

std::string value_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// `text` as a part of a point id: '\\', ',' and '=' preceded by a backslash, then what would break a line
// escaped as in error text (json_read::one_line, whose escapes also start with a backslash). Reading an id
// back is then unambiguous, so distinct values give distinct ids, whatever text they hold.
std::string id_part(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\' || c == ',' || c == '=') out += '\\';
    out += c;
  }
  return json_read::one_line(out);
}

// "/layout/pp" -> "layout.pp".
std::string pointer_label(const std::string& pointer) {
  std::string s = pointer.substr(1);
  std::replace(s.begin(), s.end(), '/', '.');
  return id_part(s);
}

}  // namespace

ClusterConfig cluster_from_json(const json& j, const fs::path& base_dir) { return parse_cluster(j, base_dir); }
std::vector<TechniqueConfig> techniques_from_json(const json& j, const std::string& path) {
  return parse_techniques(j, path);
}

std::vector<std::string> accepted_backends() { return {"sim", "real"}; }
std::vector<std::string> accepted_techniques() { return technique_passes().names(); }
std::vector<std::string> accepted_networks() { return {"flow", "analytical"}; }
std::vector<std::string> accepted_fidelities() { return {"full", "representative", "coarse"}; }
std::vector<std::string> accepted_collective_algorithms() { return {"auto", "ring", "tree", "rhd", "direct", "hierarchical"}; }

Topology build_topology(const ClusterConfig& c) {
  if (c.topology_is_file) {
    try {
      return load_topology(c.topology);
    } catch (const ConfigError& e) {
      // The file's own paths are relative to the file; say so under /cluster/topology.
      throw ConfigError("/cluster/topology", "in topology file: " + std::string(e.what()));
    }
  }
  const Registry<topo::PresetFactory> presets = topo::topology_presets();
  try {
    return presets.get(c.topology)(c.overrides);
  } catch (const UnknownName& e) {
    throw ConfigError("/cluster/topology", e.what());
  } catch (const topo::UnsupportedPresetParam& e) {
    fail_unsupported(e, "/cluster");
  } catch (const InvalidArgument& e) {
    throw ConfigError("/cluster", "topology preset " + json_read::quoted(c.topology) + ": " + e.what());
  }
}

Experiment experiment_from_json(const json& config, const fs::path& base_dir) { return parse(config, base_dir, true); }

json read_config_file(const fs::path& file) { return json_read::read_json_file(file.string(), "experiment"); }

Experiment load_experiment(const fs::path& file) {
  const json j = read_config_file(file);
  try {
    return experiment_from_json(j, fs::absolute(file).parent_path());
  } catch (const ConfigError& e) {
    throw ConfigError(e.path(), e.message() + " (in " + file.string() + ")");
  }
}

json techniques_json(const std::vector<TechniqueConfig>& techniques) {
  json out = json::array();
  for (const TechniqueConfig& t : techniques) {
    json entry = {{"pass", t.pass}};
    entry.update(t.params);
    out.push_back(entry);
  }
  return out;
}

json resolved(const Experiment& e) {
  json cluster = {{"topology", e.cluster.topology}};
  cluster.update(preset_params_to_json(e.cluster.overrides));
  if (!e.cluster.profile.empty()) cluster["profile"] = e.cluster.profile;
  json out{{"name", e.name},
              {"cluster", cluster},
              {"model", model_to_json(e.model)},
              {"layout", layout_to_json(e.layout)},
              {"techniques", techniques_json(e.techniques)},
              {"backends", e.backends},
              {"simulation",
               {{"network", e.simulation.network},
                {"fidelity", e.simulation.fidelity},
                {"collective_algorithm", e.simulation.collective_algorithm},
                {"nccl_version", "2." + std::to_string(e.simulation.nccl_minor)}}},
              {"output", e.output}};
  if (!e.description.empty()) out["description"] = e.description;
  return out;
}

// ---- sweeps --------------------------------------------------------------------------------------

std::vector<SweepAxis> sweep_axes(const json& config, const fs::path& base_dir) {
  if (!config.is_object() || !config.contains("sweep")) return {};
  const json& sweep = config["sweep"];
  require_object(sweep, "/sweep");
  json base = config;
  base.erase("sweep");

  std::vector<SweepAxis> axes;
  for (const auto& [pointer, values] : sweep.items()) {
    const std::string path = child("/sweep", pointer);
    const std::string top = pointer.substr(0, pointer.find('/', 1));
    if (top == "/sweep" || top == "/name" || top == "/output") {
      fail(path, json_read::quoted(pointer) + " cannot be swept (one sweep has one name and one results folder)");
    }
    const json::json_pointer ptr = json_read::settable_pointer(base, pointer, path);
    if (!values.is_array() || values.empty()) fail(path, "expected a non-empty array of values, got " + got(values));

    // Each value alone, in place: the strict parser says whether it is acceptable there. A value twice
    // (or 2 and "2") would make two points with one id, and a sweep resumes by id. Distinct values give
    // distinct ids whatever text they hold (a description, a name, a file path): id_part escapes it.
    std::map<std::string, std::size_t> seen;
    for (std::size_t i = 0; i < values.size(); ++i) {
      const auto [first, fresh] = seen.emplace(value_text(values[i]), i);
      if (!fresh) {
        fail(child(path, std::to_string(i)), json_read::quoted(pointer) + " = " + json_read::shown(values[i]) +
                                                 " repeats the value at index " + std::to_string(first->second));
      }
      json trial = base;
      trial[ptr] = values[i];
      try {
        parse(trial, base_dir, false);
      } catch (const ConfigError& e) {
        const std::string& p = e.path();
        if (p == pointer || p.rfind(pointer + "/", 0) == 0) {
          fail(child(path, std::to_string(i)),
               json_read::quoted(pointer) + " = " + json_read::shown(values[i]) + ": " + e.message());
        }
        // Errors elsewhere are the base config's or a combination's; each point reports them.
      }
    }
    axes.push_back({pointer, values.get<std::vector<json>>()});
  }
  // A field swept inside a field that is itself swept ("/layout" and "/layout/pp") has no meaning: the
  // outer value replaces what the inner one would be put in.
  std::set<std::string_view> pointers;
  for (const SweepAxis& a : axes) pointers.insert(a.pointer);
  for (const SweepAxis& a : axes) {
    for (std::size_t cut = a.pointer.find('/', 1); cut != std::string::npos; cut = a.pointer.find('/', cut + 1)) {
      if (pointers.count(std::string_view(a.pointer).substr(0, cut))) {
        fail(child("/sweep", a.pointer), json_read::quoted(a.pointer) + " lies inside " +
                                             json_read::quoted(a.pointer.substr(0, cut)) + ", which is swept too: sweep one or the other");
      }
    }
  }
  return axes;
}

std::vector<SweepPoint> expand_sweep(const json& config, const fs::path& base_dir) {
  const std::vector<SweepAxis> axes = sweep_axes(config, base_dir);
  json base = config;
  if (base.is_object()) base.erase("sweep");
  if (axes.empty()) return {SweepPoint{0, "base", {}, base}};

  // Multiplied only while at most the cap, so it cannot overflow (an axis has fewer values than its file
  // has bytes).
  std::size_t total = 1;
  for (const SweepAxis& a : axes) total = total > kMaxSweepPoints ? total : total * a.values.size();
  if (total > kMaxSweepPoints) {
    std::string product;
    for (const SweepAxis& a : axes) product += (product.empty() ? "" : " x ") + std::to_string(a.values.size());
    fail("/sweep", product + " points; a sweep has at most " + std::to_string(kMaxSweepPoints) +
                       " (each point holds its whole config in memory)");
  }
  std::vector<SweepPoint> points;
  points.reserve(total);
  for (std::size_t index = 0; index < total; ++index) {
    SweepPoint p;
    p.index = index;
    p.config = base;
    // Mixed radix, the first axis slowest.
    std::size_t rest = index;
    std::vector<std::size_t> choice(axes.size());
    for (std::size_t a = axes.size(); a-- > 0;) {
      choice[a] = rest % axes[a].values.size();
      rest /= axes[a].values.size();
    }
    for (std::size_t a = 0; a < axes.size(); ++a) {
      const json& v = axes[a].values[choice[a]];
      p.values.push_back(v);
      p.config[json::json_pointer(axes[a].pointer)] = v;
      p.id += (a ? "," : "") + pointer_label(axes[a].pointer) + "=" + id_part(value_text(v));
    }
    points.push_back(std::move(p));
  }
  return points;
}

}  // namespace twinbed
