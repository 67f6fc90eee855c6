// twinbed run: one experiment on the simulator, a one-screen summary, and the results folder.
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
#include "twinbed/core/export.hpp"

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

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

void check_choice(const std::string& flag, const std::string& value, const std::vector<std::string>& accepted) {
  if (std::find(accepted.begin(), accepted.end(), value) == accepted.end()) {
    throw ConfigError(flag, "unknown value '" + value + "'; accepted: " + join(accepted));
  }
}

void run_command(const RunOptions& o) {
  // Flags are checked before any work, so a typo fails fast.
  if (o.backend) {
    if (*o.backend == "real") throw Unavailable("--backend real: the real backend cannot run experiments yet; use --backend sim");
    check_choice("--backend", *o.backend, {"sim"});
  }
  if (o.fidelity) check_choice("--fidelity", *o.fidelity, accepted_fidelities());
  if (o.network) check_choice("--network", *o.network, accepted_networks());

  const nlohmann::json config = read_config_file(o.experiment);
  Experiment e = load_experiment(o.experiment);
  if (o.fidelity) e.simulation.fidelity = *o.fidelity;
  if (o.network) e.simulation.network = *o.network;
  if (o.out) e.output = *o.out;
  if (config.contains("sweep")) {
    std::fprintf(stderr, "twinbed: note: %s has a sweep; `run` runs the config as written (use `twinbed sweep`)\n",
                 o.experiment.c_str());
  }
  for (const std::string& w : e.warnings) std::fprintf(stderr, "twinbed: warning: %s\n", w.c_str());

  const SimRun run = run_on_simulator(e);

  // Files first, each written atomically, so a printed summary always has its files beside it.
  const fs::path dir(e.output);
  RunProvenance provenance = make_provenance(resolved(e), git_revision(), twinbed_version());
  provenance.extra = run.details;
  write_file_atomic(dir / "config.json", resolved(e).dump(2) + "\n");
  write_file_atomic(dir / "sim.json", results_json(run.report, provenance).dump(2) + "\n");
  write_file_atomic(dir / "sim_ops.csv", op_kinds_csv(run.report));
  write_file_atomic(dir / "sim_ranks.csv", ranks_csv(run.report));
  if (!o.no_trace) {
    write_file_atomic(dir / "trace.json", [&](std::ostream& out) { write_chrome_trace(out, {&run.trace}); });
  } else {
    std::error_code ec;
    fs::remove(dir / "trace.json", ec);  // a stale timeline of an earlier run must not sit beside these results
  }

  if (o.json) {
    nlohmann::json j = report_to_json(run.report);
    j["experiment"] = e.name;
    j["output"] = dir.string();
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("# twinbed run: %s — %s, %d ranks on %s\n", e.name.c_str(), e.model.name.c_str(), run.report.world_size,
              run.details["topology"].get<std::string>().c_str());
  std::printf("# layout dp %d, tp %d, pp %d, ep %d, %s, micro-batch %d, global batch %d; %s network, %s fidelity\n",
              e.layout.dp, e.layout.tp, e.layout.pp, e.layout.ep, schedule_name(e.layout.schedule).c_str(),
              e.layout.micro_batch, e.layout.global_batch, e.simulation.network.c_str(),
              run.details["fidelity_used"].get<std::string>().c_str());
  std::cout << format_summary(run.report) << "\n";
  std::printf("# simulated in %.3f s wall; wrote %s/{config.json, sim.json, sim_ops.csv, sim_ranks.csv%s}\n", run.wall_s,
              dir.string().c_str(), o.no_trace ? "" : ", trace.json");
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto opts = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Run one experiment config on the simulator: summary + results folder");
  cmd->add_option("experiment", opts->experiment, "Experiment config (JSON); see README, \"Experiments\"")->required();
  cmd->add_option("--backend", opts->backend, "sim (real: not available for experiments yet)");
  cmd->add_option("--out", opts->out, "Results folder (default: the config's \"output\", else results/<name>)");
  cmd->add_option("--fidelity", opts->fidelity, "full, representative or coarse (overrides the config)");
  cmd->add_option("--network", opts->network, "flow or analytical (overrides the config)");
  cmd->add_flag("--json", opts->json, "Print the report as JSON instead of the summary");
  cmd->add_flag("--no-trace", opts->no_trace, "Do not write trace.json (large for big clusters: ~150 MB for GPT-3 on 1,024 GPUs)");
  cmd->callback([opts] { run_command(*opts); });
}

}  // namespace twinbed::cli
