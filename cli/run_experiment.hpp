// Running an experiment on the simulator: what `twinbed run` and `twinbed sweep` share. Throws
// twinbed::Error on bad input (ConfigError naming the field), never prints.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

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

// Builds the topology, the plan and runs the simulator with the experiment's simulation options (and
// its measured profile, if any), then report(). `record_spans` false keeps only step time and memory
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
