#include "run_experiment.hpp"

#include <chrono>

#include "twinbed/core/error.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/passes/zrdf.hpp"
#include "twinbed/sim/compute_model.hpp"
#include "twinbed/sim/plan_sim.hpp"

#ifndef TWINBED_GIT_REVISION
#define TWINBED_GIT_REVISION "unknown"
#endif

namespace twinbed::cli {

const std::string& out_folder(const std::string& value) {
  if (value.empty()) throw ConfigError("--out", "expected a folder path, got an empty string");
  return value;
}

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
                 {"passes", plan.passes},
                 {"wall_s", run.wall_s}};
  // Planned arenas (zrdf): the figures of the rank with the largest one.
  const Program* largest = nullptr;
  for (const Program& p : plan.programs) {
    if (!p.arena.empty() && (!largest || p.arena.size > largest->arena.size)) largest = &p;
  }
  if (largest) {
    const Arena& a = largest->arena;
    run.details["memory_plan"] = {{"planner", a.planner},          {"arena_bytes", a.size},
                                  {"lower_bound_bytes", a.lower_bound}, {"no_reuse_bytes", a.no_reuse},
                                  {"caching_allocator_bytes", a.caching_allocator}, {"reuse_pct", 100 * zrdf_reuse_ratio(a)}};
  }
  return run;
}

}  // namespace twinbed::cli
