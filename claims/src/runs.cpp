#include "twinbed/claims/runs.hpp"

#include <chrono>
#include <cmath>
#include <filesystem>

#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/sim/plan_sim.hpp"

namespace twinbed::claims {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace json_read;

struct Runs::Spec {
  std::string name;                 // the run's name in its claim
  std::string path;                 // "/runs/<name>", for errors
  bool reduction = false;
  json config = json::object();     // an experiment's config, or the reduction's fields
  fs::path base_dir;                // relative paths in `config` are relative to it
  json derive_from;                 // a reduction whose size is derived: its fields where the derivation was
                                    // stated, so runs made from it keep that size whatever they change

  // Everything above that decides the result (not the name, nor the path): two runs with the same key
  // are the same simulation.
  std::string key() const {
    return (reduction ? "reduction:" : "experiment:") + config.dump() + "|" + base_dir.string() + "|" + derive_from.dump();
  }
};

namespace {

constexpr int kMaxDepth = 16;

// Puts `value` at `pointer` in `target`; the pointer's parent must exist (as sweeps require).
void set_at(json& target, const std::string& pointer, const json& value, const std::string& path) {
  target[json_read::settable_pointer(target, pointer, path)] = value;
}

Time step_of(const Plan& plan, const Topology& topology, const sim::PlanSimOptions& options) {
  return sim::simulate_plan(plan, topology, options).step_time;
}

}  // namespace

Runs::Spec Runs::resolve(const Claim& claim, const std::string& name, int depth) const {
  const std::string path = child("/runs", name);
  if (!claim.runs.contains(name)) {
    std::vector<std::string> known;
    for (const auto& [k, v] : claim.runs.items()) known.push_back(k);
    throw ConfigError(path, "no run named '" + name + "' in the claim; its runs: " + join(known));
  }
  if (depth > kMaxDepth) throw ConfigError(path, "runs derive from each other in a cycle");
  const json& run = claim.runs[name];
  Spec spec;
  require_object(run, path);
  check_keys(run, path, {"experiment", "config", "reduction", "from", "set", "techniques", "add_techniques"});
  const int sources = static_cast<int>(run.contains("experiment")) + run.contains("config") + run.contains("reduction") + run.contains("from");
  if (sources != 1) fail(path, "give exactly one of \"experiment\", \"config\", \"reduction\" and \"from\"");
  const fs::path claim_dir = fs::path(claim.file).parent_path();
  if (run.contains("experiment")) {
    fs::path file = read_name(run["experiment"], path + "/experiment");
    if (file.is_relative()) file = claim_dir / file;
    spec.config = read_config_file(file);
    spec.base_dir = fs::absolute(file).parent_path();
  } else if (run.contains("config")) {
    require_object(run["config"], path + "/config");
    spec.config = run["config"];
    spec.base_dir = claim_dir;
  } else if (run.contains("reduction")) {
    const json& r = run["reduction"];
    const std::string at = path + "/reduction";
    require_object(r, at);
    check_keys(r, at, {"cluster", "gradient_bytes", "dtype", "algorithm", "network"});
    required(r, at, "cluster", "the cluster, as an experiment's");
    required(r, at, "gradient_bytes", "a byte count, or {\"for_time_s\": seconds}");
    spec.reduction = true;
    spec.config = {{"dtype", "bf16"}, {"algorithm", "ring"}, {"network", "flow"}, {"techniques", json::array()}};
    spec.config.update(r);
    spec.base_dir = claim_dir;
    if (spec.config["gradient_bytes"].is_object()) spec.derive_from = spec.config;
  } else {
    const std::string from = read_name(run["from"], path + "/from");
    spec = resolve(claim, from, depth + 1);
  }
  if (run.contains("set")) {
    require_object(run["set"], path + "/set");
    for (const auto& [pointer, value] : run["set"].items()) set_at(spec.config, pointer, value, child(path + "/set", pointer));
  }
  if (run.contains("techniques")) spec.config["techniques"] = run["techniques"];
  if (run.contains("add_techniques")) {
    if (!run["add_techniques"].is_array()) fail(path + "/add_techniques", "expected an array of technique entries");
    json& list = spec.config["techniques"];
    if (list.is_null()) list = json::array();
    for (const json& t : run["add_techniques"]) list.push_back(t);
  }
  spec.name = name;
  spec.path = path;
  return spec;
}

namespace {

struct Reduction {
  ClusterConfig cluster;
  Topology topology;
  std::vector<TechniqueConfig> techniques;
  DType dtype = DType::BF16;
  std::string algorithm, network;
};

Reduction parse_reduction(const json& r, const fs::path& base_dir, const std::string& at) {
  Reduction out;
  out.cluster = cluster_from_json(r["cluster"], base_dir);
  out.topology = build_topology(out.cluster);
  out.techniques = techniques_from_json(r["techniques"]);
  out.dtype = read_named(r["dtype"], at + "/dtype", parse_dtype);
  out.algorithm = read_string(r["algorithm"], at + "/algorithm");
  const std::vector<std::string> algorithms = accepted_collective_algorithms();
  if (std::find(algorithms.begin(), algorithms.end(), out.algorithm) == algorithms.end()) {
    fail(at + "/algorithm", "unknown algorithm '" + out.algorithm + "'; accepted: " + join(algorithms));
  }
  out.network = read_string(r["network"], at + "/network");
  const std::vector<std::string> networks = accepted_networks();
  if (std::find(networks.begin(), networks.end(), out.network) == networks.end()) {
    fail(at + "/network", "unknown network model '" + out.network + "'; accepted: " + join(networks));
  }
  return out;
}

sim::PlanSimOptions reduction_options(const Reduction& r, bool record_spans) {
  sim::PlanSimOptions o;
  o.network = r.network;
  o.collective_algorithm = r.algorithm;
  o.record_spans = record_spans;
  return o;
}

std::int64_t elements_of(Bytes bytes, DType dtype) {
  const Bytes per = gradient_bytes_per_element(dtype);
  return std::max<std::int64_t>(1, bytes / per);
}

}  // namespace

Bytes Runs::derive_bytes(const Spec& spec, double seconds, std::string& derivation) {
  const std::string at = spec.path + "/reduction";
  json base = spec.derive_from.is_null() ? spec.config : spec.derive_from;
  base["techniques"] = json::array();
  base.erase("gradient_bytes");
  const std::string key = base.dump() + "|" + spec.base_dir.string() + "|" + std::to_string(seconds);
  if (auto it = derived_.find(key); it != derived_.end()) {
    derivation = it->second.second;
    return it->second.first;
  }
  const Reduction r = parse_reduction(base, spec.base_dir, at);
  const ClusterShape shape = cluster_shape(r.topology);
  const sim::PlanSimOptions options = reduction_options(r, false);
  const Bytes per = gradient_bytes_per_element(r.dtype);
  const auto time_of = [&](Bytes bytes) {
    ++simulations_;
    return step_of(reduction_plan(shape, elements_of(bytes, r.dtype), r.dtype), r.topology, options).seconds();
  };
  // A plain all-reduce's time grows with its size, almost linearly (latency + bytes / bandwidth): the
  // secant method on t(bytes) − seconds lands in a few simulations (each costs up to a second at a
  // thousand ranks); the size is rounded to whole elements.
  const Bytes limit = Bytes{1} << 52;
  double x0 = static_cast<double>(GiB), t0 = time_of(GiB);
  double x1 = std::clamp(x0 * seconds / t0, static_cast<double>(per), static_cast<double>(limit));
  Bytes best = static_cast<Bytes>(x1) / per * per;
  double t = time_of(best);
  for (int i = 0; i < 30 && std::abs(t - seconds) > 1e-4 * seconds; ++i) {
    const double x2 = t == t0 ? x1 : x1 + (seconds - t) * (x1 - x0) / (t - t0);
    x0 = x1;
    t0 = t;
    x1 = std::clamp(x2, static_cast<double>(per), static_cast<double>(limit));
    const Bytes next = std::max<Bytes>(per, static_cast<Bytes>(x1) / per * per);
    if (next == best) break;
    best = next;
    t = time_of(best);
  }
  if (std::abs(t - seconds) > 0.01 * seconds) {
    fail(at + "/gradient_bytes", "no gradient size makes the all-reduce take " + std::to_string(seconds) + " s (closest: " +
                                     std::to_string(t) + " s)");
  }
  char buf[512];
  std::snprintf(buf, sizeof buf, "derived: a plain %s all-reduce of %.4g GB of %s gradients takes %.4g s (the reported %.4g s) on %s",
                r.algorithm.c_str(), static_cast<double>(best) / 1e9, dtype_name(r.dtype).c_str(), t, seconds,
                r.topology.description.c_str());
  derivation = buf;
  derived_[key] = {best, derivation};
  return best;
}

std::unique_ptr<RunResult> Runs::simulate(const Spec& spec) {
  auto out = std::make_unique<RunResult>();
  const auto t0 = std::chrono::steady_clock::now();
  if (spec.reduction) {
    const std::string at = spec.path + "/reduction";
    json config = spec.config;
    const json& bytes = config["gradient_bytes"];
    if (bytes.is_object()) {
      check_keys(bytes, at + "/gradient_bytes", {"for_time_s"});
      const double seconds = read_number(required(bytes, at + "/gradient_bytes", "for_time_s"), at + "/gradient_bytes/for_time_s", "seconds > 0");
      if (seconds <= 0) fail(at + "/gradient_bytes/for_time_s", "expected seconds > 0");
      config["gradient_bytes"] = derive_bytes(spec, seconds, out->derivation);
    }
    const double b = read_number(config["gradient_bytes"], at + "/gradient_bytes", "bytes >= 1");
    if (!(b >= 1 && b < 1e16)) fail(at + "/gradient_bytes", "expected a byte count in [1, 1e16)");
    const Reduction r = parse_reduction(config, spec.base_dir, at);
    out->reduction = true;
    out->gradient_bytes = static_cast<Bytes>(b);
    out->plan = reduction_plan(cluster_shape(r.topology), elements_of(out->gradient_bytes, r.dtype), r.dtype);
    apply_techniques(out->plan, r.techniques);
    validate(out->plan);
    out->experiment.name = spec.name;
    out->experiment.cluster = r.cluster;
    out->experiment.techniques = r.techniques;
    out->experiment.simulation = {r.network, "representative", r.algorithm};
    out->topology = r.topology.description;
    const Trace trace = sim::simulate_plan(out->plan, r.topology, reduction_options(r, true));
    out->report = report(trace, report_inputs(out->plan, r.topology.device(0)));
  } else {
    json config = spec.config;
    if (!config.contains("name")) config["name"] = spec.name;
    out->experiment = experiment_from_json(config, spec.base_dir);
    const Topology topology = build_topology(out->experiment.cluster);
    out->plan = plan_for(out->experiment, topology);
    out->topology = topology.description;
    const Trace trace = sim::simulate_plan(out->plan, topology, sim::plan_sim_options(out->experiment, topology));
    out->report = report(trace, report_inputs(out->plan, topology.device(0)));
  }
  ++simulations_;
  out->wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

const RunResult& Runs::get(const Claim& claim, const std::string& name) {
  const Spec spec = resolve(claim, name, 0);
  // The cache key is the specification resolved as far as it goes without simulating: a run derived
  // from a size stated elsewhere differs from one stating the same fields itself.
  const std::string key = spec.key();
  auto it = cache_.find(key);
  if (it != cache_.end()) return *it->second;
  try {
    auto result = simulate(spec);
    return *cache_.emplace(key, std::move(result)).first->second;
  } catch (const ConfigError& e) {
    // An error inside the run's experiment config gets the run's path in front.
    throw ConfigError(e.path().rfind("/runs", 0) == 0 ? e.path() : spec.path + e.path(), e.message());
  }
}

}  // namespace twinbed::claims
