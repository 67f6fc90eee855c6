// Each row through the simulator, and the error arithmetic.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "twinbed/core/collective_table.hpp"
#include "twinbed/core/device.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/report.hpp"
#include "twinbed/core/topology_json.hpp"
#include "twinbed/sim/collective_sim.hpp"
#include "twinbed/sim/compute_model.hpp"
#include "twinbed/sim/group_collectives.hpp"
#include "twinbed/sim/nccl_model.hpp"
#include "twinbed/sim/plan_sim.hpp"
#include "twinbed/validate/validate.hpp"

namespace twinbed::validation {

namespace {

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// NCCL under NCCL_ALGO=<algo>: its tuner's choice among the protocols of that one algorithm.
sim::NcclChoice forced(const CollectiveRequest& request, const sim::NcclFabric& fabric, const std::string& algo) {
  const sim::NcclAlgo a = algo == "Ring" ? sim::NcclAlgo::Ring : algo == "Tree" ? sim::NcclAlgo::Tree : sim::NcclAlgo::Nvls;
  try {
    return sim::nccl_choose(request, fabric, a);
  } catch (const InvalidArgument&) {
    throw InvalidArgument("NCCL's model has no " + algo + " for " + to_string(request.op) + " on this machine");
  }
}

// The judged rows of `set` that `keep` accepts: how many, their mean and max |error|, the max's row.
template <class Keep>
Aggregate error_stats(const std::vector<RowResult>& rows, Set set, Keep keep) {
  Aggregate a;
  a.set = set;
  double sum = 0;
  for (const RowResult& r : rows) {
    if (r.set != set || !r.judged || !keep(r)) continue;
    const double e = std::fabs(r.error);
    ++a.rows;
    sum += e;
    if (a.rows == 1 || e > a.max_abs_error) {
      a.max_abs_error = e;
      a.max_row = r.id;
    }
  }
  if (a.rows > 0) a.mean_abs_error = sum / a.rows;
  return a;
}

// The algorithm and protocol a collective row ran as ("nvlstree/Simple"), without "(forced NVLS)".
std::string collective_algorithm(const RowResult& x) { return x.detail.substr(0, x.detail.find(" (")); }

// The rows grouped by set and by `key_of` (a row's data file, its device), in the order they come:
// each group's label (`label_of(set, key)`) and its judged rows' count, mean and max |error|.
template <class KeyOf, class LabelOf>
std::vector<std::pair<std::string, Aggregate>> groups(const std::vector<RowResult>& rows, KeyOf key_of, LabelOf label_of) {
  std::vector<std::pair<Set, std::string>> keys;
  for (const RowResult& x : rows) {
    std::pair<Set, std::string> key{x.set, key_of(x)};
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(std::move(key));
  }
  std::vector<std::pair<std::string, Aggregate>> out;
  for (const auto& key : keys) {
    const Aggregate a = error_stats(rows, key.first, [&](const RowResult& x) { return key_of(x) == key.second; });
    if (a.rows > 0) out.emplace_back(label_of(key.first, key.second), a);
  }
  return out;
}

}  // namespace

double relative_error(double simulated, double published) {
  if (!(published > 0)) throw InvalidArgument("a published figure must be > 0 to compute an error");
  return (simulated - published) / published;
}

RowResult simulate(const CollectiveCase& c) {
  const Topology topology = topology_from_json(c.topology);
  // Every rank of the machine, or, on a one-server machine, its first `ranks` GPUs: nccl-tests run on a
  // subset of a server's GPUs (-g n, or CUDA_VISIBLE_DEVICES).
  const bool subset_of_one_server = c.ranks < topology.num_ranks() && topology.num_hosts() == 1;
  if (c.ranks != topology.num_ranks() && !subset_of_one_server) {
    throw ConfigError("/rows", "row " + c.id + ": " + std::to_string(c.ranks) + " ranks on a topology of " +
                                   std::to_string(topology.num_ranks()) + " (fewer only on one server; in " + c.provenance.file + ")");
  }
  std::vector<int> all(static_cast<std::size_t>(c.ranks));
  for (int r = 0; r < c.ranks; ++r) all[static_cast<std::size_t>(r)] = r;
  const CollectiveRequest request{c.op, c.ranks, c.size, 0, subset_of_one_server ? c.ranks : topology.uniform_ranks_per_host()};
  Time time;
  std::string algorithm;
  const int nccl_minor = nearest_modelled_nccl_minor(c.nccl_minor.value_or(kNcclOldestMinor));
  if (!c.nccl_algo) {  // NCCL's own choice: what `twinbed collectives` times as auto
    sim::CollectiveSimulator simulator(topology, "flow");
    const sim::GroupTiming t = sim::time_group_collective(request, {all}, "auto", simulator, topology, nccl_minor);
    time = t.max();
    algorithm = t.algorithm;
  } else {
    std::optional<sim::NcclFabric> fabric = sim::nccl_fabric(topology, all);
    if (!fabric) throw ConfigError("/rows", "row " + c.id + ": nccl_algo needs NCCL's model, which does not apply to " + topology.description);
    fabric->nccl_minor = nccl_minor;
    sim::NcclChoice choice;
    try {
      choice = forced(request, *fabric, *c.nccl_algo);
    } catch (const InvalidArgument& e) {
      throw ConfigError("/rows", "row " + c.id + ": nccl_algo \"" + *c.nccl_algo + "\": " + e.what() + " (in " + c.provenance.file + ")");
    }
    time = choice.time;
    algorithm = choice.name() + " (forced " + *c.nccl_algo + ")";
  }
  const CollectiveRow row = make_collective_row(c.op, c.ranks, c.size, time, algorithm);
  RowResult r;
  r.id = c.id;
  r.set = Set::Collectives;
  r.label = to_string(c.op) + " " + std::to_string(c.ranks) + " ranks " + format_size(c.size) + " " +
            (c.nccl_algo ? "NCCL_ALGO=" + *c.nccl_algo : "NCCL's choice") +
            (c.nccl_minor ? ", NCCL 2." + std::to_string(*c.nccl_minor) : "") +
            (c.nccl_minor && *c.nccl_minor != nccl_minor ? " (2." + std::to_string(nccl_minor) + "'s tables)" : "");
  r.metric = c.busbw_GBps ? "busbw_GBps" : "time_us";
  r.published = c.busbw_GBps ? *c.busbw_GBps : *c.time_us;
  r.simulated = c.busbw_GBps ? row.busbw_GBps : time.microseconds();
  r.error = relative_error(r.simulated, r.published);
  r.judged = c.size >= kJudgedMinCollectiveBytes;
  r.detail = algorithm;
  r.device = topology.device(0).name;
  r.size = c.size;
  r.provenance = c.provenance;
  return r;
}

void check_profiles(const std::map<std::string, std::string>& profiles) {
  for (const auto& [device, file] : profiles) {
    DeviceSpec spec;
    try {
      spec = device_preset(device);
    } catch (const UnknownName&) {
      std::string names;
      for (const std::string& n : device_preset_names()) names += (names.empty() ? "" : ", ") + n;
      throw ConfigError("--profile", "'" + device + "=" + file + "': no device preset '" + device + "'; accepted: " + names);
    }
    try {
      static_cast<void>(sim::load_profile(file, spec));
    } catch (const Error& err) {
      throw ConfigError("--profile", "'" + device + "=" + file + "': " + err.what());
    }
  }
}

Experiment row_experiment(const TrainingCase& c, const std::map<std::string, std::string>& profiles) {
  Experiment e = c.experiment;
  const auto measured = profiles.find(build_topology(e.cluster).device(0).name);
  if (measured != profiles.end()) e.cluster.profile = measured->second;
  return e;
}

RowResult simulate(const TrainingCase& c, const std::map<std::string, std::string>& profiles) {
  const Experiment e = row_experiment(c, profiles);
  const Topology topology = build_topology(e.cluster);
  const Plan plan = plan_for(e, topology);
  // Spans recorded (the representative ranks'): the row's step breakdown is read from them.
  const Trace trace = sim::simulate_plan(plan, topology, sim::plan_sim_options(e, topology, true));
  const double step_s = trace.step_time.seconds();
  if (!(step_s > 0)) throw Error("row " + c.id + ": the simulated iteration took no time");
  const int gpus = e.layout.world_size();
  const double flops = c.flops == FlopsBasis::Model ? training_flops(e.model, e.layout.global_batch, Recompute::None)
                                                    : training_flops(e.model, e.layout);
  const double tflops = flops / step_s / gpus / 1e12;
  const ReportInputs inputs = report_inputs(plan, topology.device(0));
  const double peak = inputs.peak_flops;
  const Report rep = report(trace, inputs);
  RowResult r;
  r.id = c.id;
  r.set = Set::Training;
  r.label = c.run;
  r.metric = to_string(c.metric);
  r.published = c.published;
  const double tokens = static_cast<double>(e.layout.global_batch) * static_cast<double>(e.model.seq_len);
  switch (c.metric) {
    case Metric::Mfu: r.simulated = tflops * 1e12 / peak; break;
    case Metric::TokensPerGpu: r.simulated = tokens / step_s / gpus; break;
    case Metric::TflopsPerGpu: r.simulated = tflops; break;
  }
  r.error = relative_error(r.simulated, r.published);
  r.detail = "step " + fixed(step_s, 2) + " s, " + std::to_string(gpus) + " GPUs";
  if (c.metric != Metric::TokensPerGpu) r.detail += ", " + to_string(c.flops) + " FLOPs";
  r.device = topology.device(0).name;
  // A run its source made that the model says cannot fit is worth seeing beside its error.
  if (rep.memory_recorded && !rep.memory_fits) {
    constexpr double kGiB = 1024.0 * 1024 * 1024;
    r.detail += "; peak memory " + fixed(static_cast<double>(rep.peak_memory) / kGiB, 1) + " GiB of " +
                fixed(static_cast<double>(inputs.device_memory) / kGiB, 1) + ": does not fit";
  }
  RowResult::Breakdown b;
  b.compute = rep.compute_fraction;
  b.exposed_communication = rep.exposed_comm_fraction;
  b.bubble = rep.bubble_fraction;
  for (const OpKindRow& k : rep.op_kinds) b.op_kinds.emplace_back(to_string(k.kind), k.share);
  r.breakdown = b;
  r.profile = e.cluster.profile;
  if (!r.profile.empty()) r.detail += "; measured profile " + r.profile;
  r.assumed = c.assumed;
  r.provenance = c.provenance;
  return r;
}

std::vector<Aggregate> aggregate(const std::vector<RowResult>& rows) {
  std::vector<Aggregate> out;
  for (Set set : {Set::Collectives, Set::Training}) {
    Aggregate a = error_stats(rows, set, [](const RowResult&) { return true; });
    if (a.rows == 0) continue;
    if (set == Set::Collectives) {
      a.target = "|error| <= 10% at every size >= 1 MiB";
      a.target_met = a.max_abs_error <= kCollectiveMaxError;
    } else {
      a.target = "mean |error| <= 5%, max |error| <= 10%";
      a.target_met = a.mean_abs_error <= kTrainingMeanError && a.max_abs_error <= kTrainingMaxError;
    }
    out.push_back(a);
  }
  return out;
}

Results run(const Dataset& data, const Options& options) {
  check_profiles(options.profiles);
  Results results;
  std::size_t total = 0;
  const bool collectives = !options.only || *options.only == Set::Collectives;
  const bool training = !options.only || *options.only == Set::Training;
  std::vector<const TrainingCase*> train;
  if (training) {
    for (const TrainingCase& c : data.training) {
      if (options.cheap_only && !cheap(c)) ++results.skipped_expensive;
      else train.push_back(&c);
    }
  }
  total = (collectives ? data.collectives.size() : 0) + train.size();
  std::size_t i = 0;
  const auto progress = [&](const std::string& set, const std::string& id) {
    ++i;
    if (options.progress) options.progress("[" + std::to_string(i) + "/" + std::to_string(total) + "] " + set + " " + id);
  };
  if (collectives) {
    for (const CollectiveCase& c : data.collectives) {
      progress("collectives", c.id);
      results.rows.push_back(simulate(c));
    }
  }
  for (const TrainingCase* c : train) {
    progress("training", c->id);
    results.rows.push_back(simulate(*c, options.profiles));
  }
  results.aggregates = aggregate(results.rows);
  return results;
}

nlohmann::json to_json(const Results& r) {
  using nlohmann::json;
  json rows = json::array();
  for (const RowResult& x : r.rows) {
    json step = nullptr;
    if (x.breakdown) {
      json kinds = json::object();
      for (const auto& [kind, share] : x.breakdown->op_kinds) kinds[kind] = share;
      step = {{"compute", x.breakdown->compute},
              {"exposed_communication", x.breakdown->exposed_communication},
              {"bubble", x.breakdown->bubble},
              {"op_kind_shares", kinds}};
    }
    rows.push_back({{"id", x.id},
                    {"set", to_string(x.set)},
                    {"label", x.label},
                    {"metric", x.metric},
                    {"published", x.published},
                    {"simulated", x.simulated},
                    {"error", x.error},
                    {"judged", x.judged},
                    {"detail", x.detail},
                    {"device", x.device},
                    {"size_bytes", x.size ? json(*x.size) : json(nullptr)},
                    {"step_breakdown", step},
                    {"profile", x.profile.empty() ? json(nullptr) : json(x.profile)},
                    {"assumed", x.assumed},
                    {"file", x.provenance.file},
                    {"source", x.provenance.source},
                    {"where", x.provenance.where}});
  }
  json aggs = json::array();
  for (const Aggregate& a : r.aggregates) {
    aggs.push_back({{"set", to_string(a.set)},
                    {"rows", a.rows},
                    {"mean_abs_error", a.mean_abs_error},
                    {"max_abs_error", a.max_abs_error},
                    {"max_row", a.max_row},
                    {"target", a.target},
                    {"target_met", a.target_met}});
  }
  return {{"format", "twinbed-validate-1"}, {"rows", rows}, {"aggregates", aggs}, {"skipped_expensive", r.skipped_expensive}};
}

std::string table(const Results& r) {
  std::ostringstream o;
  std::size_t w = 2;
  for (const RowResult& x : r.rows) w = std::max(w, x.id.size());
  char buf[512];
  std::snprintf(buf, sizeof buf, "%-*s  %-14s %11s %11s %8s  %s\n", static_cast<int>(w), "id", "metric", "published",
                "simulated", "error", "simulated as");
  o << buf;
  for (const RowResult& x : r.rows) {
    const int digits = x.metric == "mfu" ? 3 : 1;
    std::snprintf(buf, sizeof buf, "%-*s  %-14s %11s %11s %+7.1f%%%s %s%s\n", static_cast<int>(w), x.id.c_str(),
                  x.metric.c_str(), fixed(x.published, digits).c_str(), fixed(x.simulated, digits).c_str(), 100 * x.error,
                  x.judged ? " " : "*", x.detail.c_str(), x.assumed.empty() ? "" : " [assumed inputs]");
    o << buf;
  }
  o << "\n";
  // Per data file (a machine's sweep, a group of runs): where in a set the error sits; then per set and
  // device: a model that holds on one GPU and not on another shows there.
  auto lines = groups(r.rows, [](const RowResult& x) { return x.provenance.file; },
                      [](Set, const std::string& file) { return file; });
  const auto by_device = groups(r.rows, [](const RowResult& x) { return x.device; }, [](Set set, const std::string& device) {
    std::string label = to_string(set);
    return label + std::string(label.size() < 11 ? 11 - label.size() : 0, ' ') + " on " + device;
  });
  lines.insert(lines.end(), by_device.begin(), by_device.end());
  std::size_t fw = 4;
  for (const auto& [label, a] : lines) fw = std::max(fw, label.size());
  for (const auto& [label, a] : lines) {
    std::snprintf(buf, sizeof buf, "  %-*s %3d rows  mean |error| %5.1f%%  max |error| %6.1f%% (%s)\n", static_cast<int>(fw),
                  label.c_str(), a.rows, 100 * a.mean_abs_error, 100 * a.max_abs_error, a.max_row.c_str());
    o << buf;
  }
  // Per algorithm the model ran (collectives): where in the NCCL model the error sits, across machines.
  std::vector<std::string> algorithms;
  for (const RowResult& x : r.rows) {
    const std::string a = collective_algorithm(x);
    if (x.set == Set::Collectives && std::find(algorithms.begin(), algorithms.end(), a) == algorithms.end()) algorithms.push_back(a);
  }
  std::sort(algorithms.begin(), algorithms.end());
  for (const std::string& algorithm : algorithms) {
    const Aggregate a = error_stats(r.rows, Set::Collectives, [&](const RowResult& x) { return collective_algorithm(x) == algorithm; });
    if (a.rows == 0) continue;
    std::snprintf(buf, sizeof buf, "  simulated as %-*s %3d rows  mean |error| %5.1f%%  max |error| %6.1f%% (%s)\n",
                  static_cast<int>(std::max<std::size_t>(fw, 13) - 13), algorithm.c_str(), a.rows, 100 * a.mean_abs_error,
                  100 * a.max_abs_error, a.max_row.c_str());
    o << buf;
  }
  o << "\n";
  for (const Aggregate& a : r.aggregates) {
    std::snprintf(buf, sizeof buf, "%-12s %3d rows  mean |error| %5.1f%%  max |error| %5.1f%% (%s)  target %s: %s\n",
                  to_string(a.set).c_str(), a.rows, 100 * a.mean_abs_error, 100 * a.max_abs_error, a.max_row.c_str(),
                  a.target.c_str(), a.target_met ? "met" : "NOT met");
    o << buf;
  }
  bool unjudged = false;
  for (const RowResult& x : r.rows) unjudged |= !x.judged;
  if (unjudged) o << "* below 1 MiB: reported, not judged against the target\n";
  if (r.skipped_expensive > 0) o << "# " << r.skipped_expensive << " expensive training rows skipped (--cheap)\n";
  return o.str();
}

}  // namespace twinbed::validation
