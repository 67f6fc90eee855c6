// twinbed collectives: an nccl-tests-style sweep of one collective over sizes, simulated.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "topology_options.hpp"
#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/collective_table.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/sim/collective_sim.hpp"

namespace twinbed::cli {

namespace {

struct CollectivesOptions {
  TopologyOptions topology;
  std::string op = "allreduce";
  std::string algo = "auto";
  std::string network = "flow";
  std::string min_bytes = "1K";
  std::string max_bytes = "1G";
  int factor = 4;
  int root = 0;
  bool json = false;
};

std::vector<Bytes> sweep_sizes(const CollectivesOptions& o) {
  Bytes lo, hi;
  try {
    lo = parse_size(o.min_bytes);
  } catch (const InvalidArgument& e) {
    throw ConfigError("--min-bytes", e.what());
  }
  try {
    hi = parse_size(o.max_bytes);
  } catch (const InvalidArgument& e) {
    throw ConfigError("--max-bytes", e.what());
  }
  if (lo < 1) throw ConfigError("--min-bytes", "must be at least 1 byte");
  if (hi < lo) throw ConfigError("--max-bytes", "must be >= --min-bytes");
  std::vector<Bytes> sizes;
  for (Bytes s = lo; s <= hi; s *= o.factor) sizes.push_back(s);
  return sizes;
}

void run_collectives(const CollectivesOptions& o) {
  CollectiveOp op = parse_collective_op(o.op);
  auto algorithms = collective_algorithms();
  if (o.algo != "auto") {
    const CollectiveAlgorithm& a = algorithms.get(o.algo);
    if (!a.ops.count(op)) throw ConfigError("--algo", "'" + o.algo + "' does not implement " + o.op);
  }
  sim::network_models().get(o.network);  // fail on an unknown model before any work
  std::vector<Bytes> sizes = sweep_sizes(o);
  Topology topology = o.topology.build();
  const int ranks = topology.num_ranks();
  if (o.root < 0 || o.root >= ranks) {
    throw ConfigError("--root", "must be a rank in [0, " + std::to_string(ranks - 1) + "]");
  }

  if (!o.json) {
    std::printf("# twinbed collectives: %s, algorithm %s, network %s\n", o.op.c_str(), o.algo.c_str(), o.network.c_str());
    std::printf("# %d ranks on %s\n", ranks, topology.description.c_str());
  }
  const bool progress = isatty(STDERR_FILENO);
  sim::CollectiveSimulator simulator(topology, o.network);
  std::vector<CollectiveRow> rows;
  auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (progress) std::fprintf(stderr, "\r[%zu/%zu] simulating %s ...", i + 1, sizes.size(), format_size(sizes[i]).c_str());
    CollectiveRequest request{op, ranks, sizes[i], o.root, topology.uniform_ranks_per_host()};
    std::string algo = o.algo == "auto" ? sim::choose_algorithm(request, topology, o.network) : o.algo;
    std::unique_ptr<Schedule> schedule = algorithms.get(algo).build(request);
    rows.push_back(make_collective_row(op, ranks, sizes[i], simulator.run(*schedule).time, algo));
  }
  if (progress) std::fprintf(stderr, "\r%60s\r", "");
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (o.json) {
    std::cout << collective_rows_to_json(rows).dump(2) << "\n";
  } else {
    std::cout << format_collective_table(rows);
    std::printf("# simulated %zu sizes in %.3f s wall\n", sizes.size(), wall);
  }
}

}  // namespace

void add_collectives_command(CLI::App& app) {
  auto opts = std::make_shared<CollectivesOptions>();
  CLI::App* cmd = app.add_subcommand(
      "collectives", "Sweep one collective over message sizes on a simulated cluster (nccl-tests-style table)");
  cmd->add_option("--op", opts->op, "allreduce, reducescatter, allgather, broadcast, reduce, alltoall")
      ->capture_default_str();
  cmd->add_option("--algo", opts->algo, "ring, tree, rhd, direct, hierarchical, or auto (the fastest as timed by this simulator)")
      ->capture_default_str();
  cmd->add_option("--network", opts->network, "flow (max-min fair sharing) or analytical (contention-free)")
      ->capture_default_str();
  cmd->add_option("--min-bytes", opts->min_bytes, "Smallest size (K, M, G suffixes are binary)")->capture_default_str();
  cmd->add_option("--max-bytes", opts->max_bytes, "Largest size")->capture_default_str();
  cmd->add_option("--factor", opts->factor, "Size multiplier between rows")->check(CLI::Range(2, 1 << 20))->capture_default_str();
  cmd->add_option("--root", opts->root, "Root rank of broadcast and reduce")->capture_default_str();
  cmd->add_flag("--json", opts->json, "Print the rows as a JSON array instead of the table");
  opts->topology.add_to(*cmd);
  cmd->callback([opts] { run_collectives(*opts); });
}

}  // namespace twinbed::cli
