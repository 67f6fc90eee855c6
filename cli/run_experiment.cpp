#include "run_experiment.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "twinbed/core/error.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/passes/zrdf.hpp"
#include "twinbed/core/revision.hpp"
#include "twinbed/real/cpu_backend.hpp"
#include "twinbed/sim/compute_model.hpp"
#include "twinbed/sim/plan_sim.hpp"

extern char** environ;  // POSIX: the process environment, handed unchanged to the plot scripts

namespace twinbed::cli {

const std::string& out_folder(const std::string& value) {
  if (value.empty()) throw ConfigError("--out", "expected a folder path, got an empty string");
  return value;
}

std::string git_revision() { return built_revision(); }
std::string twinbed_version() { return TWINBED_VERSION; }

BackendRegistry plan_backends() {
  BackendRegistry registry("backend");
  sim::add_sim_backend(registry);
  real::add_real_backends(registry);
  return registry;
}

std::string registered_backend(const std::string& config_name) {
  return config_name == "real" ? "real-cpu" : config_name;
}

SimRun run_on_simulator(const Experiment& e, bool record_spans) {
  const auto t0 = std::chrono::steady_clock::now();
  const Topology topology = build_topology(e.cluster);
  const Plan plan = plan_for(e, topology);

  const std::unique_ptr<Backend> backend = plan_backends().get("sim")(BackendSetup{&e, &topology, record_spans});
  SimRun run;
  run.trace = backend->run(plan);
  // The simulator's own counters go into the results' details.
  const sim::PlanSimStats& stats = dynamic_cast<const sim::SimBackend&>(*backend).stats();
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

namespace {
namespace fs = std::filesystem;

// The plotting interpreter: Debian's, which scripts/install-deps.sh gives matplotlib.
constexpr const char* kPython = "/usr/bin/python3";

// Runs `argv` (argv[0] the executable's path; no shell, so no argument is ever read as a command) with
// stdin and stdout on /dev/null and returns what stopped it: "" when it exited 0, else why, with the
// last line it wrote to stderr.
std::string run_quietly(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));  // posix_spawn's signature
  args.push_back(nullptr);
  int err[2];
  if (::pipe2(err, O_CLOEXEC) != 0) return std::string("cannot make a pipe: ") + std::strerror(errno);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);  // dup2 clears O_CLOEXEC on the child's stderr
  pid_t pid = 0;
  const int spawned = ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(err[1]);
  if (spawned != 0) {
    ::close(err[0]);
    return "cannot start " + argv[0] + ": " + std::strerror(spawned);
  }
  // Read stderr to its end before waiting (a full pipe would stall the child), keeping its tail.
  std::string tail;
  char buf[4096];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    tail.append(buf, static_cast<std::size_t>(n));
    if (tail.size() > 8192) tail.erase(0, tail.size() - 8192);
  }
  ::close(err[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return std::string("waiting for it failed: ") + std::strerror(errno);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  const std::string last = tail.substr(tail.rfind('\n') == std::string::npos ? 0 : tail.rfind('\n') + 1);
  const std::string said = last.empty() ? "" : ": " + last;
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status)) + said;
  // 77: the plot scripts' "matplotlib is not installed".
  if (WEXITSTATUS(status) == 77) return "no matplotlib for " + argv[0] + " (scripts/install-deps.sh)";
  return "exit status " + std::to_string(WEXITSTATUS(status)) + said;
}

}  // namespace

std::string draw_plot(const std::string& script_name, const fs::path& json, const fs::path& png) {
  const std::string script = std::string(TWINBED_SOURCE_DIR) + "/notebooks/" + script_name;
  if (!fs::is_regular_file(script)) return "the plot script " + script + " is missing";
  if (::access(kPython, X_OK) != 0) return std::string("no ") + kPython + " to run " + script;
  const std::string why = run_quietly({kPython, script, json.string(), png.string()});
  return why.empty() ? "" : script_name + " failed: " + why;
}

}  // namespace twinbed::cli
