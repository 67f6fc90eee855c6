// twinbed compare: the same work simulated (with this machine's calibrated profile) and measured on
// CPU ranks over MPI (or GPUs, --backend real-cuda), side by side with the error of the model.
//   twinbed compare EXPERIMENT.json --profile P    one iteration of the experiment's Plan on both; with
//                                                  techniques, also without them: the ops they add and
//                                                  their effect (with / without) measured and simulated
//   twinbed compare --collectives --profile P ...  one collective over sizes on both
// Started by hand it relaunches itself under mpirun (the Plan's world size, or --ranks), except a
// one-GPU real-cuda experiment, which runs alone; rank 0 prints.
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "validators.hpp"
#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/compare.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/core/export.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/profile.hpp"
#include "twinbed/core/report.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/calibrate.hpp"
#include "twinbed/real/collectives.hpp"
#include "twinbed/real/cpu_backend.hpp"
#include "twinbed/real/cuda_backend.hpp"
#include "twinbed/real/launch.hpp"
#include "twinbed/real/mpi.hpp"
#include "twinbed/sim/collective_sim.hpp"
#include "twinbed/sim/compute_model.hpp"
#include "twinbed/sim/plan_sim.hpp"

namespace twinbed::cli {

namespace {

struct CompareOptions {
  std::string experiment;
  bool collectives = false;
  std::string profile = "profiles/this-machine.json";
  std::string algo = "ring";
  std::string op = "allreduce";
  std::string min_bytes = "1M";
  std::string max_bytes = "64M";
  int ranks = 2;
  int iters = 10;
  int repeats = 3;
  std::string out;
  bool no_trace = false;
  std::string backend = "real-cpu";  // what measures an experiment: real-cpu or real-cuda
};

MachineProfile load_required_profile(const std::string& file) {
  std::error_code ec;
  if (std::filesystem::status(file, ec).type() == std::filesystem::file_type::not_found) {
    throw ConfigError("--profile", "no profile at " + json_read::quoted(file, std::string::npos) + ": run `twinbed calibrate --ranks N --out " + file +
                                       "` first (compare simulates this machine from it)");
  }
  return load_profile(file, MachineProfile{}, DeviceSpec{});
}

int compare_collectives(const CompareOptions& o, const real::MpiSession& mpi) {
  const MachineProfile profile = load_required_profile(o.profile);
  const CollectiveOp op = parse_collective_op(o.op);
  std::vector<Bytes> sizes;
  const Bytes lo = parse_size(o.min_bytes), hi = parse_size(o.max_bytes);
  for (Bytes s = lo; s <= hi; s *= 2) sizes.push_back(real::round_down_to_unit(op, mpi.size(), s));
  auto rows = real::measure_collectives(op, o.algo, sizes, 0, 0, {2, o.iters, true});
  if (mpi.rank() != 0) return 0;

  const Topology machine = topo::this_machine(profile, mpi.size());
  sim::CollectiveSimulator simulator(machine, "flow");
  const std::string sim_algo = o.algo == real::kNativeAlgorithm ? "auto" : o.algo;
  std::printf("# twinbed compare: %s, algorithm %s, %d ranks; simulated on %s\n", o.op.c_str(), o.algo.c_str(),
              mpi.size(), machine.description.c_str());
  std::printf("%14s %14s %14s %9s %7s\n", "size(B)", "measured(us)", "simulated(us)", "error(%)", "#wrong");
  std::vector<double> errors;
  bool wrong = false;
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : rows) {
    CollectiveRequest request{op, mpi.size(), row.size_bytes, 0, 0};
    const std::string algo = sim_algo == "auto" ? sim::choose_algorithm(request, machine) : sim_algo;
    const double sim_us = simulator.run(*build_schedule(algo, request)).time.microseconds();
    const double err = error_pct(sim_us, row.time_us);
    if (row.size_bytes >= MiB) errors.push_back(std::abs(err));
    wrong |= row.wrong.value_or(0) > 0;
    std::printf("%14lld %14.1f %14.1f %9.1f %7lld\n", static_cast<long long>(row.size_bytes), row.time_us, sim_us, err,
                static_cast<long long>(row.wrong.value_or(0)));
    out.push_back({{"size_bytes", row.size_bytes}, {"measured_us", row.time_us}, {"simulated_us", sim_us}, {"error_pct", err}});
  }
  std::printf("# median |error| over sizes >= 1 MiB: %.1f%% (%zu sizes)\n", median(errors), errors.size());
  if (!o.out.empty()) write_file_atomic(o.out, out.dump(2) + "\n");
  return wrong ? 1 : 0;
}

// printf into a string (a line's parts built in a loop).
__attribute__((format(printf, 1, 2))) std::string formatted(const char* f, ...) {
  char buf[256];
  va_list args;
  va_start(args, f);
  std::vsnprintf(buf, sizeof buf, f, args);
  va_end(args);
  return buf;
}

// A spread over the runs, scaled: its range as JSON [min, max], and as text by a format that takes the
// median, min and max.
nlohmann::json range(const Spread& s, double scale) { return nlohmann::json::array({s.min * scale, s.max * scale}); }
std::string text(const Spread& s, double scale, const char* format) {
  return formatted(format, s.median * scale, s.min * scale, s.max * scale);
}

// How fast the CPU ranks compute now against when the profile was calibrated: the profile's speed
// probe sample (speed_probe_sample) timed again as calibrate times it, before the first measured run and
// after every run. A machine that drifted since `calibrate` moves every measured compute time by about
// that ratio, which the spread over the runs does not show, and one that drifts during them moves each run
// by its own. Each run lies between two probes; where those agree and the ranks ran alike in each, the
// machine held one speed through that run, and compare simulates it again with the GEMM rates scaled by
// that speed (with_gemm_speed) and prints those errors too, over the runs that held.
struct MachineSpeed {
  GemmSample sample;                    // as calibrated
  std::vector<real::GemmRates> probes;  // probes[r] before run r, probes[r + 1] after it
};

// One measured run as the probes either side of it saw the machine: the speed against the calibration's
// (their geometric mean) where it held, else why it did not.
struct RunSpeed {
  double factor = 0;   // 0 where the run is left out
  std::string left_out;
};

RunSpeed run_speed(const MachineSpeed& speed, std::size_t run) {
  const double rate = speed.sample.rate;
  const real::GemmRates &before = speed.probes.at(run), &after = speed.probes.at(run + 1);
  // How far apart the ranks ran: the fastest over the slowest, less 1.
  const auto apart = [](const real::GemmRates& r) {
    const auto [lo, hi] = std::minmax_element(r.ranks.begin(), r.ranks.end());
    return *hi / *lo - 1;
  };
  if (const double moved = after.median / before.median - 1; std::abs(moved) > kSpeedDriftTolerance)
    return {0, formatted("the probe moved by %+.0f%% across it", moved * 100)};
  if (const double a = std::max(apart(before), apart(after)); a > kSpeedDriftTolerance)
    return {0, formatted("the ranks ran %.0f%% apart in the probe (something shares some of their cores)", a * 100)};
  return {std::sqrt(before.median / rate * after.median / rate), ""};
}

// The machine's speed as the probes read it (printed), and the runs it held one speed through compared
// again with the GEMM rates at that speed: compare.json's "machine_speed".
nlohmann::json report_machine_speed(const MachineSpeed& speed, const std::vector<Report>& measured_reports, const Plan& plan,
                                    const Topology& machine, const sim::PlanSimOptions& sim_options,
                                    const MachineProfile& profile, const ReportInputs& inputs) {
  const GemmSample& g = speed.sample;
  std::vector<double> ratios;
  nlohmann::json ranks_ratios = nlohmann::json::array();
  double slowest = HUGE_VAL, fastest = 0;
  for (const real::GemmRates& p : speed.probes) {
    ratios.push_back(p.median / g.rate);
    std::vector<double> ranks;
    for (FlopsPerSec x : p.ranks) ranks.push_back(x / g.rate);
    slowest = std::min(slowest, *std::min_element(ranks.begin(), ranks.end()));
    fastest = std::max(fastest, *std::max_element(ranks.begin(), ranks.end()));
    ranks_ratios.push_back(ranks);
  }
  std::string after_each;
  for (std::size_t i = 1; i < ratios.size(); ++i) after_each += (i > 1 ? " " : "") + formatted("x%.2f", ratios[i]);
  std::printf("# machine speed: the profile's %lldx%lldx%lld fp32 GEMM ran at x%.2f of its calibrated rate before the "
              "measured runs and %s after each (a rank at x%.2f-%.2f)\n",
              static_cast<long long>(g.m), static_cast<long long>(g.n), static_cast<long long>(g.k), ratios.front(),
              after_each.c_str(), slowest, fastest);
  if (std::any_of(ratios.begin(), ratios.end(), [](double x) { return std::abs(x - 1) > kSpeedDriftTolerance; }))
    std::printf("# the machine has drifted since `calibrate`: compute errors of about that size are the drift, not the "
                "model; calibrate again and compare\n");
  nlohmann::json machine_speed = {{"probe", {{"m", g.m}, {"n", g.n}, {"k", g.k}, {"dtype", "fp32"}}},
                                  {"calibrated_flops_per_s", g.rate},
                                  {"ratios", ratios},
                                  {"ranks_ratios", ranks_ratios},
                                  {"corrected", nullptr}};
  // The drift corrected, run by run: the runs the machine ran through at one speed, alike on every rank,
  // each against a simulation with every GEMM rate scaled by that speed. Where it moved during a run,
  // or ran the ranks at different speeds (a process sharing one rank's core), no one factor describes
  // the run, and it is left out.
  std::vector<Report> corrected_sims, corrected_runs;
  nlohmann::json runs = nlohmann::json::array(), factors = nlohmann::json::array(), left_out = nlohmann::json::array();
  std::string factor_text, left_out_text;
  for (std::size_t r = 0; r < measured_reports.size(); ++r) {
    const RunSpeed rs = run_speed(speed, r);
    if (rs.factor == 0) {
      left_out.push_back({{"run", r + 1}, {"reason", rs.left_out}});
      left_out_text += formatted("; run %zu left out: %s", r + 1, rs.left_out.c_str());
      continue;
    }
    sim::PlanSimOptions corrected_options = sim_options;
    corrected_options.profile = with_gemm_speed(profile, rs.factor);
    corrected_sims.push_back(report(sim::simulate_plan(plan, machine, corrected_options), inputs));
    corrected_runs.push_back(measured_reports[r]);
    runs.push_back(r + 1);
    factors.push_back(rs.factor);
    factor_text += formatted("%sx%.2f", factor_text.empty() ? "" : " ", rs.factor);
  }
  machine_speed["left_out"] = left_out;
  if (corrected_runs.empty()) {
    std::printf("# no speed correction: no run held one speed%s\n", left_out_text.c_str());
  } else {
    const RepeatedComparison cc = compare_repeated(corrected_sims, corrected_runs);
    const auto gemm = std::find_if(cc.per_op.begin(), cc.per_op.end(), [](const RepeatedOps& x) { return x.kind == SpanKind::Gemm; });
    std::printf("# speed-corrected, each run's GEMM rates scaled by the probes either side of it (%s): step error %s%%",
                factor_text.c_str(), text(cc.step_error_pct, 1, "%.1f [%.1f, %.1f]").c_str());
    if (gemm != cc.per_op.end()) std::printf(", gemm median |error| per op %s%%", text(gemm->median_abs_error_pct, 1, "%.1f [%.1f, %.1f]").c_str());
    std::printf(" (%zu of %zu runs%s)\n", corrected_runs.size(), measured_reports.size(), left_out_text.c_str());
    machine_speed["corrected"] = {{"runs", runs},
                                  {"gemm_rate_factors", factors},
                                  {"step_simulated_s", cc.step_simulated_s},
                                  {"step_error_pct", cc.step_error_pct.median},
                                  {"step_error_range_pct", range(cc.step_error_pct, 1)}};
    if (gemm != cc.per_op.end()) {
      machine_speed["corrected"]["gemm_median_abs_error_pct"] = gemm->median_abs_error_pct.median;
      machine_speed["corrected"]["gemm_median_abs_error_range_pct"] = range(gemm->median_abs_error_pct, 1);
    }
  }
  return machine_speed;
}

real::GemmRates time_probe(const real::MpiSession& mpi, const GemmSample& s) {
  return real::measure_gemm_rates(mpi, s.m, s.n, s.k, real::CalibrateOptions{}.seconds_per_point);
}

// rank and size: this process's place in the job (an MPI job, or one GPU process alone: 0 of 1); `mpi`
// the job's session (null for one GPU process alone).
int compare_plan(const CompareOptions& o, const real::MpiSession* mpi, int rank, int size) {
  const Experiment e = load_experiment(o.experiment);
  const MachineProfile profile = load_required_profile(o.profile);
  const Topology machine = topo::this_machine(profile, size);
  const Plan plan = plan_for(e, machine);
  // With techniques, the same experiment without them too: what a technique changes is a ratio.
  std::optional<Plan> baseline;
  if (!e.techniques.empty()) {
    Experiment without = e;
    without.techniques.clear();
    baseline = plan_for(without, machine);
  }

  std::unique_ptr<Backend> measuring;
  real::CpuBackend* cpu = nullptr;  // the CPU backend also verifies technique payloads
  if (o.backend == "real-cuda") {
    real::CudaBackendOptions cuda_options;
    cuda_options.collective_algorithm = o.algo;
    measuring = std::make_unique<real::CudaBackend>(cuda_options);
  } else {
    real::CpuBackendOptions real_options;
    real_options.collective_algorithm = o.algo;
    auto made = std::make_unique<real::CpuBackend>(real_options);
    cpu = made.get();
    measuring = std::move(made);
  }
  Backend& backend = *measuring;
  // The same Plan measured `repeats` times: one run is one sample of a noisy machine. The baseline's
  // runs are paired with them, back to back.
  std::vector<Trace> measured, measured_baseline;
  std::int64_t payload_floats = 0;
  std::optional<MachineSpeed> speed;
  if (const auto probe = speed_probe_sample(profile); probe && cpu != nullptr && mpi != nullptr) {
    speed = MachineSpeed{*probe, {time_probe(*mpi, *probe)}};
  }
  for (int r = 0; r < o.repeats; ++r) {
    if (baseline) measured_baseline.push_back(backend.run(*baseline));
    measured.push_back(backend.run(plan));
    if (cpu != nullptr) payload_floats += cpu->payload_check().floats;
    if (speed) speed->probes.push_back(time_probe(*mpi, speed->sample));
  }
  if (rank != 0) return 0;

  sim::PlanSimOptions sim_options;
  sim_options.fidelity = sim::Fidelity::Full;
  sim_options.collective_algorithm = o.algo == real::kNativeAlgorithm ? "auto" : o.algo;
  sim_options.profile = profile;
  // The CPU ranks share this machine's cores, as many as calibrate recorded (none recorded: a core each).
  if (cpu != nullptr && profile.provenance) sim_options.shared_cores = profile.provenance->cores;
  sim::PlanSimStats sim_stats;
  const Trace simulated = sim::simulate_plan(plan, machine, sim_options, sim_stats);

  std::printf("# twinbed compare: %s on %d ranks (%s, %s); simulated on %s with %s; measured %d times: median [min, max]\n",
              e.name.c_str(), size, o.backend.c_str(), o.algo.c_str(), machine.description.c_str(), o.profile.c_str(), o.repeats);
  std::printf("%-14s %26s %14s %24s\n", "op kind", "measured(ms)", "simulated(ms)", "error(%)");
  // The comparisons are the core's (compare.hpp), of the reports report() makes of the traces: each
  // measured run against the simulation, summarised as median and range.
  const ReportInputs inputs = report_inputs(plan, machine.device(0));
  std::vector<Report> measured_reports;
  for (const Trace& t : measured) measured_reports.push_back(report(t, inputs));
  const Report simulated_report = report(simulated, inputs);
  const RepeatedComparison rc = compare_repeated(simulated_report, measured_reports);
  // The run whose step is the median one gives the per-op table and the trace.
  std::size_t typical = 0;
  for (std::size_t r = 0; r < measured_reports.size(); ++r)
    if (std::abs(measured_reports[r].step_time.seconds() - rc.step_measured_s.median) <
        std::abs(measured_reports[typical].step_time.seconds() - rc.step_measured_s.median))
      typical = r;
  const Comparison c = compare(simulated_report, measured_reports[typical]);
  nlohmann::json kinds = nlohmann::json::object();
  for (const RepeatedKind& k : rc.kinds) {
    std::printf("%-14s %26s %14.3f %24s\n", to_string(k.kind).c_str(), text(k.measured_s, 1e3, "%.3f [%.3f, %.3f]").c_str(),
                k.simulated_s * 1e3, text(k.error_pct, 1, "%.1f [%.1f, %.1f]").c_str());
    kinds[to_string(k.kind)] = {{"measured_s", k.measured_s.median}, {"measured_range_s", range(k.measured_s, 1)},
                                {"simulated_s", k.simulated_s},      {"error_pct", k.error_pct.median},
                                {"error_range_pct", range(k.error_pct, 1)}};
  }
  const double step_real = rc.step_measured_s.median, step_sim = rc.step_simulated_s;
  std::printf("%-14s %26s %14.3f %24s\n", "step", text(rc.step_measured_s, 1e3, "%.3f [%.3f, %.3f]").c_str(), step_sim * 1e3,
              text(rc.step_error_pct, 1, "%.1f [%.1f, %.1f]").c_str());
  // What the cache model (sim/cache_residency.hpp) put into the simulated memory-bound ops.
  nlohmann::json cache = nullptr;
  if (profile.cache_half_life > Time{}) {
    std::printf("# cache: data a rank leaves there half gone after %.1f ms (the profile's); the simulated memory-bound ops "
                "read %.1f MB from memory rather than cache (all ranks, one step), adding %.3f ms to them\n",
                profile.cache_half_life.seconds() * 1e3, sim_stats.cold_bytes / 1e6, sim_stats.cold_time.seconds() * 1e3);
    cache = {{"half_life_ms", profile.cache_half_life.seconds() * 1e3},
             {"cold_bytes", sim_stats.cold_bytes},
             {"cold_s", sim_stats.cold_time.seconds()}};
  }
  const nlohmann::json machine_speed =
      speed ? report_machine_speed(*speed, measured_reports, plan, machine, sim_options, profile, inputs) : nlohmann::json(nullptr);

  // Peak memory of the largest rank: the plan's (simulated, and as the measured run allocated it) and what
  // the system saw the measured ranks hold (report.hpp's resident peak), over the runs.
  std::vector<double> residents;
  for (const Report& r : measured_reports)
    if (r.resident_measured) residents.push_back(static_cast<double>(r.resident_peak));
  const Spread resident = spread_of(residents.size() == measured_reports.size() ? residents : std::vector<double>{});
  nlohmann::json memory = {{"simulated_peak_bytes", simulated_report.peak_memory},
                           {"measured_plan_peak_bytes", measured_reports[typical].peak_memory},
                           {"measured_resident_peak_bytes", residents.empty() ? nlohmann::json(nullptr) : nlohmann::json(resident.median)},
                           {"measured_resident_range_bytes", residents.empty() ? nlohmann::json(nullptr) : range(resident, 1)}};
  std::printf("# peak memory (largest rank): simulated %.1f MiB (the plan's tensors; measured run allocated %.1f MiB)",
              static_cast<double>(simulated_report.peak_memory) / MiB, static_cast<double>(measured_reports[typical].peak_memory) / MiB);
  if (!residents.empty())
    std::printf(", resident %s MiB as the system measured the ranks", text(resident, 1.0 / MiB, "%.1f [%.1f, %.1f]").c_str());
  std::printf("\n");

  // Per op: the median error over the ops of one kind (each op's mean duration over ranks and
  // micro-batches), the figure issue 4 asks for GEMM-dominated ops and for collectives.
  nlohmann::json per_op = nlohmann::json::object();
  for (const KindOpsComparison& k : c.per_op) {
    nlohmann::json ops = nlohmann::json::array();
    for (const OpComparison& op : k.ops) ops.push_back({{"name", op.name}, {"measured_s", op.measured_s}, {"simulated_s", op.simulated_s}});
    const auto over_runs = std::find_if(rc.per_op.begin(), rc.per_op.end(), [&](const RepeatedOps& x) { return x.kind == k.kind; });
    const Spread s = over_runs == rc.per_op.end() ? Spread{k.median_abs_error_pct, k.median_abs_error_pct, k.median_abs_error_pct}
                                                  : over_runs->median_abs_error_pct;
    std::printf("# %-12s median |error| per op: %s%% over %zu ops\n", to_string(k.kind).c_str(),
                text(s, 1, "%.1f [%.1f, %.1f]").c_str(), k.ops.size());
    per_op[to_string(k.kind)] = {{"median_abs_error_pct", s.median}, {"median_abs_error_range_pct", range(s, 1)}, {"ops", ops}};
  }

  // The ops the technique passes added (technique kernels, DSA's sparse GEMMs), one by one.
  nlohmann::json technique_ops = nlohmann::json::array();
  nlohmann::json effect = nullptr;
  if (baseline) {
    std::set<std::string> added;
    for (const Program& prog : plan.programs)
      for (const PlanOp& op : prog.ops) {
        if (op.kind != OpKind::Compute) continue;
        const OpCost& cost = plan.costs.at(static_cast<std::size_t>(op.cost));
        if (cost.kernel != OpCost::Kernel::None || cost.sparsity == OpCost::Sparsity::Block || cost.sparsity == OpCost::Sparsity::TwoFour)
          added.insert(plan.names.at(op.name));
      }
    std::printf("# technique ops (added or changed by the passes), mean per span:\n");
    std::printf("%-40s %14s %14s %9s\n", "op", "measured(us)", "simulated(us)", "error(%)");
    for (const KindOpsComparison& k : c.per_op)
      for (const OpComparison& op : k.ops) {
        if (!added.contains(op.name)) continue;
        const double err = error_pct(op.simulated_s, op.measured_s);
        std::printf("%-40s %14.1f %14.1f %9.1f\n", op.name.c_str(), op.measured_s * 1e6, op.simulated_s * 1e6, err);
        technique_ops.push_back({{"name", op.name}, {"kind", to_string(k.kind)}, {"measured_s", op.measured_s},
                                 {"simulated_s", op.simulated_s}, {"error_pct", err}});
      }
    if (payload_floats > 0)
      std::printf("# compressed payloads verified: %lld floats, 0 wrong (a wrong one stops the run)\n",
                  static_cast<long long>(payload_floats));

    std::vector<Report> baseline_reports;
    const ReportInputs base_inputs = report_inputs(*baseline, machine.device(0));
    for (const Trace& t : measured_baseline) baseline_reports.push_back(report(t, base_inputs));
    const Report simulated_baseline = report(sim::simulate_plan(*baseline, machine, sim_options), base_inputs);
    const TechniqueEffect te = technique_effect(simulated_baseline, simulated_report, baseline_reports, measured_reports);
    std::printf("# the techniques' effect, with / without them (runs paired): measured median [min, max] vs simulated\n");
    std::printf("%-14s %26s %14s %10s\n", "ratio", "measured", "simulated", "error(%)");
    auto row = [&](const char* what, const RatioComparison& r) {
      std::printf("%-14s %26s %14.3f %10.1f\n", what, text(r.measured, 1, "%.3f [%.3f, %.3f]").c_str(), r.simulated, r.error_pct);
      return nlohmann::json{{"measured", r.measured.median}, {"measured_range", range(r.measured, 1)},
                            {"simulated", r.simulated}, {"error_pct", r.error_pct}};
    };
    std::vector<double> baseline_steps;
    for (const Report& b : baseline_reports) baseline_steps.push_back(b.step_time.seconds());
    effect = {{"step_time", row("step time", te.step)},
              {"peak_memory", row("peak memory", te.peak_memory)},
              {"baseline_step_s", {{"measured", spread_of(baseline_steps).median}, {"simulated", simulated_baseline.step_time.seconds()}}}};
    // The resident peaks, where the backend measured them: the plan's memory ratio checked against the system's.
    if (!std::isnan(te.resident_memory.measured.median)) effect["resident_memory"] = row("resident peak", te.resident_memory);
  }

  const std::string out = o.out.empty() ? "results/" + e.name + "-compare" : o.out;
  nlohmann::json j = {{"experiment", e.name},
                      {"ranks", size},
                      {"backend", o.backend},
                      {"collective_algorithm", o.algo},
                      {"repeats", o.repeats},
                      {"profile", profile_to_json(profile)},
                      {"step", {{"measured_s", step_real}, {"measured_range_s", range(rc.step_measured_s, 1)},
                                {"simulated_s", step_sim}, {"error_pct", rc.step_error_pct.median},
                                {"error_range_pct", range(rc.step_error_pct, 1)}}},
                      {"op_kinds", kinds},
                      {"machine_speed", machine_speed},
                      {"memory", memory},
                      {"cache", cache},
                      {"per_op", per_op}};
  if (baseline) {
    j["technique_ops"] = technique_ops;
    j["technique_effect"] = effect;
    j["payload_floats_verified"] = payload_floats;
  }
  write_file_atomic(out + "/compare.json", j.dump(2) + "\n");
  if (!o.no_trace) {
    write_file_atomic(out + "/trace.json", [&](std::ostream& s) { write_chrome_trace(s, {&simulated, &measured[typical]}); });
  }
  std::printf("# wrote %s/{compare.json%s}\n", out.c_str(), o.no_trace ? "" : ", trace.json");
  return 0;
}

int run_compare(const CompareOptions& o, Invocation& invocation) {
  if (o.collectives == !o.experiment.empty()) {
    throw ConfigError("compare", "give either an experiment file or --collectives");
  }
  if (o.backend != "real-cpu" && o.backend != "real-cuda")
    throw ConfigError("--backend", "unknown value " + json_read::quoted(o.backend) + "; accepted: real-cpu, real-cuda");
  if (o.collectives && o.backend != "real-cpu")
    throw ConfigError("--backend", "--collectives measures CPU ranks over MPI only");
  // One GPU needs no launcher: the process is the job's only rank.
  if (!real::in_mpi_job() && o.backend == "real-cuda" && load_experiment(o.experiment).layout.world_size() == 1) {
    load_required_profile(o.profile);
    return compare_plan(o, nullptr, 0, 1);
  }
  if (!real::in_mpi_job()) {
    if (!real::mpi_built()) throw Unavailable("compare needs MPI: install libopenmpi-dev openmpi-bin and rebuild");
    load_required_profile(o.profile);  // fail before starting ranks
    int ranks = o.ranks;
    if (!o.collectives) {
      const Experiment e = load_experiment(o.experiment);
      ranks = e.layout.world_size();
    }
    return real::relaunch_under_mpirun(ranks, invocation.argc, invocation.argv);
  }
  real::MpiSession mpi;
  try {
    return o.collectives ? compare_collectives(o, mpi) : compare_plan(o, &mpi, mpi.rank(), mpi.size());
  } catch (const InvalidArgument& e) {  // thrown alike on every rank before communicating
    if (mpi.rank() == 0) std::fprintf(stderr, "twinbed: error: %s\n", json_read::one_line(e.what()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinbed: error on rank %d: %s\n", mpi.rank(), json_read::one_line(e.what()).c_str());
    mpi.abort_job(1);
  }
}

}  // namespace

void add_compare_command(CLI::App& app, Invocation& invocation) {
  auto opts = std::make_shared<CompareOptions>();
  CLI::App* cmd = app.add_subcommand(
      "compare",
      "Run the same work simulated (this machine, from a calibrated profile, the CPU ranks sharing its cores) and measured (CPU ranks over MPI, or "
      "GPUs with --backend real-cuda) and print the model's error, per op kind, per op and for the step, the "
      "peak memory (the plan's and the resident peak the system measured) and, on CPU ranks, how fast the machine "
      "runs against when it was calibrated (timed before the runs and after each), with the step and GEMM errors "
      "of the simulation corrected for it over the runs it held one speed through, alike on every rank");
  cmd->add_option("experiment", opts->experiment,
                  "Experiment JSON: one iteration of its Plan on both backends; when it has techniques, its Plan without "
                  "them as well, and the techniques' ops and effect (step time, peak memory and the measured resident peak, with / without) side by side");
  cmd->add_flag("--collectives", opts->collectives, "Compare one collective over sizes instead of an experiment");
  cmd->add_option("--backend", opts->backend,
                  "What measures the experiment: real-cpu (CPU ranks over MPI) or real-cuda (one process per GPU; one GPU "
                  "runs without mpirun)")
      ->capture_default_str();
  cmd->add_option("--profile", opts->profile, "Profile written by `twinbed calibrate`")->capture_default_str();
  cmd->add_option("--algo", opts->algo, "Collective algorithm on both sides (native: MPI's own; simulated as auto)")
      ->capture_default_str();
  cmd->add_option("--op", opts->op, "--collectives: the collective")->capture_default_str();
  cmd->add_option("--min-bytes", opts->min_bytes, "--collectives: smallest size")->capture_default_str();
  cmd->add_option("--max-bytes", opts->max_bytes, "--collectives: largest size (sizes double)")->capture_default_str();
  cmd->add_option("--ranks", opts->ranks, "--collectives: ranks (an experiment uses its layout's)")
      ->transform(in_range(1, kMaxCount, true))
      ->capture_default_str();
  cmd->add_option("--iters", opts->iters, "--collectives: timed iterations per size")->transform(in_range(1, kMaxCount, true))->capture_default_str();
  cmd->add_option("--repeats", opts->repeats,
                  "An experiment: measured runs of its Plan; every figure is printed as median [min, max] over them, so "
                  "model error can be told from run-to-run noise")
      ->transform(in_range(1, 1000, true))
      ->capture_default_str();
  cmd->add_option("--out", opts->out, "Output: a folder for an experiment (default results/<name>-compare), a JSON file for --collectives");
  cmd->add_flag("--no-trace", opts->no_trace, "Do not write the combined Perfetto trace");
  cmd->callback([opts, &invocation] { invocation.exit_code = run_compare(*opts, invocation); });
}

}  // namespace twinbed::cli
