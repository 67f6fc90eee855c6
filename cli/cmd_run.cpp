// twinbed run: one experiment on the simulator and/or a real backend (CPU ranks over MPI, or GPUs with
// real-cuda), a one-screen summary per
// backend, and the results folder. Both backends run the same Plan through the Backend seam.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "run_experiment.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/export.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/profile.hpp"
#include "twinbed/real/launch.hpp"
#include "twinbed/real/mpi.hpp"

namespace twinbed::cli {

namespace {

namespace fs = std::filesystem;

struct RunOptions {
  std::string experiment;
  std::optional<std::string> backend;
  std::optional<std::string> out;
  std::optional<std::string> fidelity;
  std::optional<std::string> network;
  bool json = false;
  bool no_trace = false;
};

void check_choice(const std::string& flag, const std::string& value, const std::vector<std::string>& accepted) {
  if (std::find(accepted.begin(), accepted.end(), value) == accepted.end()) {
    throw ConfigError(flag, "unknown value " + json_read::quoted(value) + "; accepted: " + json_read::join(accepted));
  }
}

// Which backends run: --backend (sim, real, real-cpu, real-cuda or both) over the config's "backends".
std::vector<std::string> chosen_backends(const RunOptions& o, const Experiment& e) {
  if (!o.backend) return e.backends;
  if (*o.backend == "both") return {"sim", "real"};
  return {*o.backend};
}

// The real backend among them ("real", "real-cpu", "real-cuda"), or "" when none measures.
std::string real_backend_of(const std::vector<std::string>& backends) {
  for (const std::string& b : backends)
    if (b.rfind("real", 0) == 0) return b;
  return "";
}

void write_backend_files(const fs::path& dir, const std::string& backend, const Report& r, const RunProvenance& p) {
  write_file_atomic(dir / (backend + ".json"), results_json(r, p).dump(2) + "\n");
  write_file_atomic(dir / (backend + "_ops.csv"), op_kinds_csv(r));
  write_file_atomic(dir / (backend + "_ranks.csv"), ranks_csv(r));
}

// A real backend (`name`: real, real-cpu, real-cuda) on every rank of the job — the MPI job's, or this
// process alone (one GPU, no mpi); the full Trace comes back on rank 0, with the report inputs of the plan.
struct CpuRun {
  Trace trace;
  ReportInputs inputs;
};
CpuRun run_on_real_ranks(const Experiment& e, const std::string& name, const real::MpiSession* mpi) {
  const Topology topology = build_topology(e.cluster);
  const Plan plan = plan_for(e, topology);
  try {
    const std::unique_ptr<Backend> backend = plan_backends().get(registered_backend(name))(BackendSetup{&e, &topology});
    return {backend->run(plan), report_inputs(plan, topology.device(0))};
  } catch (const InvalidArgument&) {
    throw;  // thrown alike on every rank before any communication: main reports it
  } catch (const Unavailable&) {
    throw;  // agreed on every rank (no GPU): main reports it
  } catch (const std::exception& err) {
    if (mpi == nullptr) throw;
    std::fprintf(stderr, "twinbed: error on rank %d: %s\n", mpi->rank(), json_read::one_line(err.what()).c_str());
    mpi->abort_job(1);
  }
}

void run_command(const RunOptions& o, Invocation& invocation) {
  // Flags are checked before any work, so a typo fails fast.
  if (o.backend) check_choice("--backend", *o.backend, {"sim", "real", "real-cpu", "real-cuda", "both"});
  if (o.fidelity) check_choice("--fidelity", *o.fidelity, accepted_fidelities());
  if (o.network) check_choice("--network", *o.network, accepted_networks());

  const nlohmann::json config = read_config_file(o.experiment);
  Experiment e = load_experiment(o.experiment);
  if (o.fidelity) e.simulation.fidelity = *o.fidelity;
  if (o.network) e.simulation.network = *o.network;
  if (o.out) e.output = out_folder(*o.out);
  const std::vector<std::string> backends = chosen_backends(o, e);
  const std::string real_name = real_backend_of(backends);
  const bool with_real = !real_name.empty();
  const bool with_sim = std::find(backends.begin(), backends.end(), "sim") != backends.end();
  // One GPU is a job of one process: no launcher needed.
  const bool alone = real_name == "real-cuda" && e.layout.world_size() == 1 && !real::in_mpi_job();

  // The real backend is one MPI process per rank: started by hand, become the plan's ranks.
  if (with_real && !alone && !real::in_mpi_job()) {
    if (!real::mpi_built()) throw Unavailable("--backend " + real_name + " needs MPI: install libopenmpi-dev openmpi-bin and rebuild");
    invocation.exit_code = real::relaunch_under_mpirun(e.layout.world_size(), invocation.argc, invocation.argv);
    return;
  }
  std::optional<real::MpiSession> mpi;
  if (with_real && !alone) mpi.emplace();
  const bool leader = !mpi || mpi->rank() == 0;
  if (leader) {
    if (config.contains("sweep")) {
      std::fprintf(stderr, "twinbed: note: %s has a sweep; `run` runs the config as written (use `twinbed sweep`)\n",
                   json_read::one_line(o.experiment).c_str());
    }
    for (const std::string& w : e.warnings) std::fprintf(stderr, "twinbed: warning: %s\n", json_read::one_line(w).c_str());
  }

  std::optional<CpuRun> measured;
  if (with_real) measured = run_on_real_ranks(e, real_name, mpi ? &*mpi : nullptr);
  if (!leader) return;
  std::optional<SimRun> simulated;
  if (with_sim) simulated = run_on_simulator(e);

  // Files first, each written atomically and all under the folder's lock, so a printed summary always
  // has its own files beside it.
  const fs::path dir(e.output);
  const ResultsFolderLock lock(dir);
  RunProvenance provenance = make_provenance(resolved(e), git_revision(), twinbed_version());
  write_file_atomic(dir / "config.json", resolved(e).dump(2) + "\n");
  std::vector<const Trace*> traces;
  std::optional<Report> measured_report;
  if (simulated) {
    provenance.extra = simulated->details;
    write_backend_files(dir, "sim", simulated->report, provenance);
    traces.push_back(&simulated->trace);
  }
  if (measured) {
    // Peak FLOP/s of a CPU rank is unknown unless calibrated: MFU is against the profile's best GEMM
    // rate when the cluster names one, else not computed (0).
    ReportInputs inputs = measured->inputs;
    inputs.peak_flops = 0;
    if (!e.cluster.profile.empty()) {
      const MachineProfile p = load_profile(e.cluster.profile, MachineProfile{}, DeviceSpec{});
      for (const auto& [dtype, rate] : p.gemm_rate) inputs.peak_flops = std::max(inputs.peak_flops, rate);
    }
    measured_report = report(measured->trace, inputs);
    provenance.extra = {{"backend", registered_backend(real_name)}, {"ranks", mpi ? mpi->size() : 1}};
    write_backend_files(dir, "real", *measured_report, provenance);
    traces.push_back(&measured->trace);
  }
  if (!o.no_trace) {
    write_file_atomic(dir / "trace.json", [&](std::ostream& out) { write_chrome_trace(out, traces); });
  } else {
    std::error_code ec;
    fs::remove(dir / "trace.json", ec);  // a stale timeline of an earlier run must not sit beside these results
  }

  if (o.json) {
    nlohmann::json j = {{"experiment", e.name}, {"output", dir.string()}};
    if (simulated) j["sim"] = report_to_json(simulated->report);
    if (measured_report) j["real"] = report_to_json(*measured_report);
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::string zero;
  if (e.layout.zero_stage > 0) zero = ", ZeRO-" + std::to_string(e.layout.zero_stage);
  if (e.layout.zero_replicas() > 1) zero += " in shard groups of " + std::to_string(e.layout.zero_shards());
  std::printf("# twinbed run: %s — %s; layout dp %d, tp %d, pp %d, ep %d%s%s, %s, micro-batch %d, global batch %d\n",
              e.name.c_str(), e.model.name.c_str(), e.layout.dp, e.layout.tp, e.layout.pp, e.layout.ep,
              e.layout.cp > 1 ? (", cp " + std::to_string(e.layout.cp)).c_str() : "", zero.c_str(),
              schedule_name(e.layout.schedule).c_str(), e.layout.micro_batch, e.layout.global_batch);
  if (!e.techniques.empty()) {
    std::string list;
    for (const TechniqueConfig& t : e.techniques) list += (list.empty() ? "" : ", ") + t.pass + " " + t.params.dump();
    std::printf("# techniques: %s\n", list.c_str());
  }
  if (simulated) {
    std::printf("# simulated: %d ranks on %s; %s network, %s fidelity; %.3f s wall\n", simulated->report.world_size,
                simulated->details["topology"].get<std::string>().c_str(), e.simulation.network.c_str(),
                simulated->details["fidelity_used"].get<std::string>().c_str(), simulated->wall_s);
    // Why every rank was simulated where one per program was asked for: the cost a user sees in wall time.
    const std::string fell_back = simulated->details["fallback_reason"].get<std::string>();
    if (!fell_back.empty()) std::printf("# %s fidelity fell back to full: %s\n", e.simulation.fidelity.c_str(), fell_back.c_str());
    std::cout << format_summary(simulated->report) << "\n";
    if (simulated->details.contains("memory_plan")) {
      const nlohmann::json& m = simulated->details["memory_plan"];
      const auto gib = [&](const char* key) { return m[key].get<double>() / static_cast<double>(GiB); };
      std::printf("memory plan      arena %.2f GiB (%s) on the largest rank: live-bytes bound %.2f, caching allocator %.2f, "
                  "no reuse %.2f GiB; reuse %.1f%%\n",
                  gib("arena_bytes"), m["planner"].get<std::string>().c_str(), gib("lower_bound_bytes"),
                  gib("caching_allocator_bytes"), gib("no_reuse_bytes"), m["reuse_pct"].get<double>());
    }
  }
  if (measured_report) {
    if (real_name == "real-cuda") {
      std::printf("# measured: %d GPU rank(s) on this machine (cuBLAS, NCCL; technique kernels as streaming stand-ins)\n",
                  measured_report->world_size);
    } else {
      std::printf("# measured: %d CPU ranks over MPI on this machine (compute in fp32)\n", measured_report->world_size);
    }
    std::cout << format_summary(*measured_report) << "\n";
  }
  std::string files = "config.json";
  for (const auto& backend : backends) {
    const std::string b = backend == "sim" ? "sim" : "real";  // the files' names (write_backend_files)
    files += ", " + b + ".json, " + b + "_ops.csv, " + b + "_ranks.csv";
  }
  std::printf("# wrote %s/{%s%s}\n", dir.string().c_str(), files.c_str(), o.no_trace ? "" : ", trace.json");
}

}  // namespace

void add_run_command(CLI::App& app, Invocation& invocation) {
  auto opts = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run", "Run one experiment config on the simulator and/or a real backend (CPU ranks over MPI, or GPUs): summary + results folder");
  cmd->add_option("experiment", opts->experiment, "Experiment config (JSON); see README, \"Experiments\"")->required();
  cmd->add_option("--backend", opts->backend,
                  "sim, real / real-cpu (CPU ranks over MPI: relaunches under mpirun as the layout's ranks), real-cuda "
                  "(one process per GPU; one GPU runs without mpirun) or both (sim and real-cpu); "
                  "default: the config's \"backends\"");
  cmd->add_option("--out", opts->out, "Results folder (default: the config's \"output\", else results/<name>)");
  cmd->add_option("--fidelity", opts->fidelity, "full, representative or coarse (overrides the config)");
  cmd->add_option("--network", opts->network, "flow or analytical (overrides the config)");
  cmd->add_flag("--json", opts->json, "Print the report as JSON instead of the summary");
  cmd->add_flag("--no-trace", opts->no_trace, "Do not write trace.json (large for big clusters: ~100-200 MB for GPT-3 on 1,024 GPUs)");
  cmd->callback([opts, &invocation] { run_command(*opts, invocation); });
}

}  // namespace twinbed::cli
