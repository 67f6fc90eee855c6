// Running an experiment on the simulator: what `twinbed run` and `twinbed sweep` share. Throws
// twinbed::Error on bad input (ConfigError naming the field), never prints.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "twinbed/core/backend.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/core/report.hpp"
#include "twinbed/core/trace.hpp"

namespace twinbed::cli {

struct SimRun {
  Trace trace;
  Report report;
  nlohmann::json details;   // topology, plan and simulator counters, wall time: provenance "extra"
  double wall_s = 0;        // plan build + simulation + report
};

// The backends a Plan runs on, found by name (core/backend.hpp): "sim" and "real-cpu". A new backend is
// one add_* call in plan_backends().
BackendRegistry plan_backends();
// The registered name of a backend as an experiment's "backends" and --backend name it: "sim" is the
// simulator, "real" the real backend of this machine ("real-cpu": CPU ranks over MPI).
std::string registered_backend(const std::string& config_name);

// Builds the topology, the plan and runs the simulator ("sim" from plan_backends()) with the
// experiment's simulation options (and its measured profile, if any), then report(). `record_spans` false keeps only step time and memory
// (sweeps): the op-kind table is then empty.
SimRun run_on_simulator(const Experiment& e, bool record_spans = true);

// The value of an --out flag naming a results folder: an empty one is a ConfigError naming --out (it
// would write into the working folder). The one check of every command's --out.
const std::string& out_folder(const std::string& value);

// The git revision the CLI was built from ("unknown" when not built from a checkout) and its version.
std::string git_revision();
std::string twinbed_version();

// Draws `png` from the results file `json` with notebooks/<script_name> (which writes it atomically),
// run by Debian's /usr/bin/python3 (the interpreter scripts/install-deps.sh gives matplotlib), without a
// shell, stdout discarded. Returns "" when drawn, else why not (with the script's last stderr line).
std::string draw_plot(const std::string& script_name, const std::filesystem::path& json, const std::filesystem::path& png);

}  // namespace twinbed::cli
