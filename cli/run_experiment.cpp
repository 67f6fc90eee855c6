#include "run_experiment.hpp"

#include <chrono>

#include "twinbed/core/error.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/sim/compute_model.hpp"
#include "twinbed/sim/plan_sim.hpp"

#ifndef TWINBED_GIT_REVISION
#define TWINBED_GIT_REVISION "unknown"
#endif

namespace twinbed::cli {

std::string git_revision() { return TWINBED_GIT_REVISION; }
std::string twinbed_version() { return TWINBED_VERSION; }

SimRun run_on_simulator(const Experiment& e, bool record_spans) {
  const auto t0 = std::chrono::steady_clock::now();
  const Topology topology = build_topology(e.cluster);
  const Plan plan = plan_for(e, topology);

  sim::SimBackend backend(topology, sim::plan_sim_options(e, topology, record_spans));
  SimRun run;
  run.trace = backend.run(plan);
  const sim::PlanSimStats& stats = backend.stats();
  run.report = report(run.trace, report_inputs(plan, topology.device(0)));
  run.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  run.details = {{"topology", topology.description},
                 {"device", topology.device(0).name},
                 {"ranks", topology.num_ranks()},
                 {"ranks_per_host", topology.uniform_ranks_per_host()},
                 {"plan_programs", plan.programs.size()},
                 {"plan_total_ops", plan.total_ops()},
                 {"fidelity_used", sim::to_string(stats.fidelity_used)},
                 {"simulated_ranks", stats.simulated_ranks},
                 {"ops_executed", stats.ops_executed},
                 {"events", stats.events},
                 {"collective_timings", stats.collective_timings},
                 {"fallback_reason", stats.fallback_reason},
                 {"warnings", e.warnings},
                 {"wall_s", run.wall_s}};
  return run;
}

}  // namespace twinbed::cli
