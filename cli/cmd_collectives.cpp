// twinbed collectives: an nccl-tests-style sweep of one collective over sizes, simulated
// (--backend sim) or measured with CPU ranks over MPI (--backend real).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <utility>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "validators.hpp"
#include "topology_options.hpp"
#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/collective_table.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/collectives.hpp"
#include "twinbed/real/launch.hpp"
#include "twinbed/real/mpi.hpp"
#include "twinbed/sim/collective_sim.hpp"
#include "twinbed/sim/group_collectives.hpp"
#include "twinbed/sim/nccl_model.hpp"

namespace twinbed::cli {

namespace {

struct CollectivesOptions {
  std::string backend = "sim";
  TopologyOptions topology;
  std::string op = "allreduce";
  std::string algo;       // default: auto (sim), native (real)
  std::string network = "flow";
  std::string min_bytes = "1K";
  std::string max_bytes;  // default: 1G (sim), 64M (real)
  int factor = 4;
  int root = 0;
  int iters = 20;
  int warmup = 5;
  bool json = false;
  std::string nccl_version;  // empty: NCCL 2.20 (the simulator's default)
  bool nccl_tuning = false;  // print NCCL's tuner table for the ranks instead of the sweep
};

void print_rows(const CollectivesOptions& o, const std::vector<CollectiveRow>& rows) {
  if (o.json) {
    std::cout << collective_rows_to_json(rows).dump(2) << "\n";
  } else {
    std::cout << format_collective_table(rows);
  }
}

std::vector<Bytes> sweep_sizes(const CollectivesOptions& o) {
  Bytes lo, hi;
  try {
    lo = parse_size(o.min_bytes);
  } catch (const InvalidArgument& e) {
    throw ConfigError("--min-bytes", e.what());
  }
  try {
    hi = parse_size(!o.max_bytes.empty() ? o.max_bytes : o.backend == "real" ? "64M" : "1G");
  } catch (const InvalidArgument& e) {
    throw ConfigError("--max-bytes", e.what());
  }
  if (lo < 1) throw ConfigError("--min-bytes", "must be at least 1 byte");
  if (hi < lo) throw ConfigError("--max-bytes", "must be >= --min-bytes");
  std::vector<Bytes> sizes;
  for (Bytes s = lo;; s *= o.factor) {  // sizes are at most 2^50: s·factor cannot overflow before the test
    sizes.push_back(s);
    if (s > hi / o.factor) break;
  }
  return sizes;
}

// NCCL's tuner table for a communicator of every rank of the topology, laid out as NCCL prints it under
// NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=TUNING ("latency/bandwidth", us and GB/s of algorithm bandwidth, per
// op and (algorithm, protocol)), with the graphs behind it, so that a user can set it beside their log.
void print_nccl_tuning(const Topology& topology, int nccl_minor) {
  std::vector<int> ranks(static_cast<std::size_t>(topology.num_ranks()));
  for (int r = 0; r < topology.num_ranks(); ++r) ranks[static_cast<std::size_t>(r)] = r;
  std::optional<sim::NcclFabric> fabric = sim::nccl_fabric(topology, ranks);
  if (!fabric) {
    throw ConfigError("--nccl-tuning", "NCCL's model applies to NVIDIA GPU presets (a100, h100, h200) with as many "
                                       "ranks on every host; " + topology.description + " is not one");
  }
  fabric->nccl_minor = nccl_minor;
  const sim::NcclAlgo algos[] = {sim::NcclAlgo::Tree, sim::NcclAlgo::Ring, sim::NcclAlgo::Nvls, sim::NcclAlgo::NvlsTree,
                                 sim::NcclAlgo::Pat};
  std::printf("# NCCL 2.%d's tuner (twinbed's model): %d ranks, %d node(s), NVLink %.1f GB/s a GPU as NCCL counts "
              "it%s\n",
              nccl_minor, fabric->ranks, fabric->nodes, fabric->nvlink_GBps, fabric->nvswitch ? " (NVSwitch)" : "");
  const std::pair<CollectiveOp, const char*> ops[] = {{CollectiveOp::Broadcast, "Broadcast"},
                                                       {CollectiveOp::Reduce, "Reduce"},
                                                       {CollectiveOp::AllGather, "AllGather"},
                                                       {CollectiveOp::ReduceScatter, "ReduceScatter"},
                                                       {CollectiveOp::AllReduce, "AllReduce"}};
  std::vector<sim::NcclTable> tables;
  for (const auto& op : ops) tables.push_back(sim::nccl_table(op.first, *fabric));
  for (sim::NcclAlgo a : algos) {  // the graphs of the algorithms some op runs
    const bool used = std::any_of(tables.begin(), tables.end(), [&](const sim::NcclTable& t) {
      const auto& bw = t.bandwidth_GBps[static_cast<std::size_t>(a)];
      return std::any_of(bw.begin(), bw.end(), [](double b) { return b > 0; });
    });
    if (used) {
      const sim::NcclGraph g = sim::nccl_graph(*fabric, a);
      std::printf("# graph %-8s %2d channels, bw %.1f/%.1f GB/s (intra/inter)\n", sim::to_string(a).c_str(), g.channels,
                  g.bw_intra, g.bw_inter);
    }
  }
  std::printf("%14s |", "Algorithm");
  for (sim::NcclAlgo a : algos) std::printf(" %-44s |", sim::to_string(a).c_str());
  std::printf("\n%14s |", "Protocol");
  for (std::size_t i = 0; i < std::size(algos); ++i) {
    for (sim::NcclProto p : {sim::NcclProto::LL, sim::NcclProto::LL128, sim::NcclProto::Simple}) {
      std::printf(" %14s", sim::to_string(p).c_str());
    }
    std::printf(" |");
  }
  std::printf("\n");
  for (std::size_t i = 0; i < std::size(ops); ++i) {
    const sim::NcclTable& t = tables[i];
    std::printf("%14s |", ops[i].second);
    for (sim::NcclAlgo a : algos) {
      for (int p = 0; p < sim::kNcclProtos; ++p) {
        const auto ai = static_cast<std::size_t>(a);
        const auto pi = static_cast<std::size_t>(p);
        const bool on = t.bandwidth_GBps[ai][pi] > 0;  // NCCL prints 0.0/0.0 for a pair it has not
        std::printf(" %6.1f/%7.1f", on ? t.latency_us[ai][pi] : 0.0, t.bandwidth_GBps[ai][pi]);
      }
      std::printf(" |");
    }
    std::printf("\n");
  }
}

void run_simulated(CollectivesOptions o) {
  if (o.algo.empty()) o.algo = "auto";
  CollectiveOp op = parse_collective_op(o.op);
  auto algorithms = collective_algorithms();
  if (o.algo != "auto") {
    const CollectiveAlgorithm& a = algorithms.get(o.algo);
    if (!a.ops.count(op)) throw ConfigError("--algo", json_read::quoted(o.algo) + " does not implement " + o.op);
  }
  sim::network_models().get(o.network);  // fail on an unknown model before any work
  const int nccl_minor = o.nccl_version.empty() ? kNcclOldestMinor : parse_nccl_version(o.nccl_version, "--nccl-version");
  Topology topology = o.topology.build();
  if (o.nccl_tuning) {
    print_nccl_tuning(topology, nccl_minor);
    return;
  }
  std::vector<Bytes> sizes = sweep_sizes(o);
  const int ranks = topology.num_ranks();
  if (o.root < 0 || o.root >= ranks) {
    throw ConfigError("--root", "must be a rank in [0, " + std::to_string(ranks - 1) + "]");
  }

  const bool progress = isatty(STDERR_FILENO);
  sim::CollectiveSimulator simulator(topology, o.network);
  std::vector<CollectiveRow> rows;
  std::vector<int> all_ranks(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r) all_ranks[static_cast<std::size_t>(r)] = r;
  auto t0 = std::chrono::steady_clock::now();
  const auto clear_progress = [&] {
    if (progress) std::fprintf(stderr, "\r%60s\r", "");
  };
  try {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      if (progress) std::fprintf(stderr, "\r[%zu/%zu] simulating %s ...", i + 1, sizes.size(), format_size(sizes[i]).c_str());
      CollectiveRequest request{op, ranks, sizes[i], o.root, topology.uniform_ranks_per_host()};
      if (o.algo == "auto") {  // the collective NCCL would run (sim/group_collectives.hpp)
        const sim::GroupTiming t =
            sim::time_group_collective(request, {all_ranks}, "auto", simulator, topology, nccl_minor);
        rows.push_back(make_collective_row(op, ranks, sizes[i], t.max(), t.algorithm));
        continue;
      }
      std::unique_ptr<Schedule> schedule = algorithms.get(o.algo).build(request);
      rows.push_back(make_collective_row(op, ranks, sizes[i], simulator.run(*schedule).time, o.algo));
    }
  } catch (...) {
    clear_progress();  // the error line starts on a clean line
    throw;
  }
  clear_progress();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Printed once every size is timed: a size that fails (a time beyond the clock) leaves no half table.
  if (!o.json) {
    std::printf("# twinbed collectives: %s, algorithm %s, network %s\n", o.op.c_str(), o.algo.c_str(), o.network.c_str());
    std::printf("# %d ranks on %s\n", ranks, topology.description.c_str());
  }
  print_rows(o, rows);
  if (!o.json) std::printf("# simulated %zu sizes in %.3f s wall\n", sizes.size(), wall);
}

// Measured: started by hand, the command relaunches itself under mpirun as --ranks processes; each
// rank then runs the sizes, and rank 0 prints. Any wrong element makes the run fail.
int run_measured(CollectivesOptions o, Invocation& invocation) {
  if (o.algo.empty()) o.algo = real::kNativeAlgorithm;
  for (auto [set, flag] : {std::pair{o.topology.topology != "switch", "--topology"},
                           {o.topology.gpus_per_node.has_value(), "--gpus-per-node"},
                           {o.topology.bandwidth_GBps.has_value(), "--bandwidth-GBps"},
                           {o.topology.latency_us.has_value(), "--latency-us"},
                           {o.topology.intra_bandwidth_GBps.has_value(), "--intra-bandwidth-GBps"},
                           {o.topology.intra_latency_us.has_value(), "--intra-latency-us"},
                           {o.topology.oversubscription.has_value(), "--oversubscription"},
                           {o.topology.dims.has_value(), "--dims"},
                           {o.topology.device.has_value(), "--device"},
                           {!o.nccl_version.empty(), "--nccl-version"},
                           {o.nccl_tuning, "--nccl-tuning"}}) {
    if (set) throw ConfigError(flag, "describes a simulated cluster; --backend real measures this machine");
  }
  CollectiveOp op = parse_collective_op(o.op);
  std::vector<Bytes> sizes = sweep_sizes(o);
  if (!real::in_mpi_job()) {
    if (!real::mpi_built()) throw Unavailable("--backend real needs MPI: install libopenmpi-dev openmpi-bin and rebuild");
    return real::relaunch_under_mpirun(o.topology.ranks.value_or(2), invocation.argc, invocation.argv);
  }
  real::MpiSession mpi;
  if (o.topology.ranks && *o.topology.ranks != mpi.size() && mpi.rank() == 0) {
    std::fprintf(stderr, "twinbed: note: running on the job's %d ranks, not --ranks %d\n", mpi.size(), *o.topology.ranks);
  }
  if (o.root < 0 || o.root >= mpi.size()) {
    if (mpi.rank() == 0) std::fprintf(stderr, "twinbed: error: --root: must be a rank in [0, %d]\n", mpi.size() - 1);
    return 1;
  }
  // Like nccl-tests, align sizes to whole floats, the same number per rank where the op splits the
  // buffer into per-rank blocks.
  for (Bytes& s : sizes) s = real::round_down_to_unit(op, mpi.size(), s);
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  try {
    if (mpi.rank() == 0 && !o.json) {
      std::printf("# twinbed collectives: %s, algorithm %s, measured on %d MPI ranks (CPU, fp32)\n", o.op.c_str(),
                  o.algo.c_str(), mpi.size());
      std::fflush(stdout);
    }
    auto rows = real::measure_collectives(op, o.algo, sizes, o.root, 0, {o.warmup, o.iters, true});
    bool wrong = false;
    for (const auto& r : rows) wrong |= r.wrong.value_or(0) > 0;
    if (mpi.rank() == 0) {
      print_rows(o, rows);
      if (wrong) std::fprintf(stderr, "twinbed: error: the collective produced wrong data (see #wrong)\n");
    }
    return wrong ? 1 : 0;
  } catch (const InvalidArgument& e) {  // thrown alike on every rank, before any communication
    if (mpi.rank() == 0) std::fprintf(stderr, "twinbed: error: %s\n", json_read::one_line(e.what()).c_str());
    return 1;
  } catch (const std::exception& e) {  // possibly on one rank only: end the whole job
    std::fprintf(stderr, "twinbed: error on rank %d: %s\n", mpi.rank(), json_read::one_line(e.what()).c_str());
    mpi.abort_job(1);
  }
}

}  // namespace

void add_collectives_command(CLI::App& app, Invocation& invocation) {
  auto opts = std::make_shared<CollectivesOptions>();
  CLI::App* cmd = app.add_subcommand(
      "collectives",
      "Sweep one collective over message sizes, simulated or measured (nccl-tests-style table)");
  cmd->add_option("--backend", opts->backend,
                  "sim (simulated cluster) or real (CPU ranks over MPI on this machine; relaunches itself under "
                  "mpirun as --ranks processes, default 2, unless already started by mpirun/srun)")
      ->check(one_of({"sim", "real"}))
      ->capture_default_str();
  cmd->add_option("--op", opts->op, "allreduce, reducescatter, allgather, broadcast, reduce, alltoall")
      ->capture_default_str();
  cmd->add_option("--algo", opts->algo,
                  "ring, tree, rhd, direct, hierarchical; auto (sim, default: the algorithm and protocol NCCL's tuner picks, "
                  "timed as it prices them, on NVIDIA GPU presets; elsewhere the cheapest schedule by the cost model; see README); "
                  "native (real, default: MPI's own collective)");
  cmd->add_option("--network", opts->network, "flow (max-min fair sharing) or analytical (contention-free)")
      ->capture_default_str();
  cmd->add_option("--min-bytes", opts->min_bytes, "Smallest size (K, M, G suffixes are binary)")->capture_default_str();
  cmd->add_option("--max-bytes", opts->max_bytes, "Largest size (default 1G simulated, 64M measured)");
  cmd->add_option("--factor", opts->factor, "Size multiplier between rows")->transform(in_range(2, kMaxCount, true))->capture_default_str();
  cmd->add_option("--root", opts->root, "Root rank of broadcast and reduce")
      ->transform(in_range(0, kMaxCount - 1, true))
      ->capture_default_str();
  cmd->add_option("--iters", opts->iters, "Measured: timed iterations per size")->transform(in_range(1, kMaxCount, true))->capture_default_str();
  cmd->add_option("--warmup", opts->warmup, "Measured: untimed iterations first")->transform(in_range(0, kMaxCount, true))->capture_default_str();
  cmd->add_flag("--json", opts->json, "Print the rows as a JSON array instead of the table");
  cmd->add_option("--nccl-version", opts->nccl_version,
                  "Simulated, --algo auto: the NCCL release whose tuner is modelled, 2.20 to 2.28 (\"2.24\" or \"2.24.3\"; "
                  "default 2.20: NCCL 2.20.3's tables). From 2.23 PAT runs all-gather and reduce-scatter where every "
                  "rank has a node of its own");
  cmd->add_flag("--nccl-tuning", opts->nccl_tuning,
                "Simulated: print NCCL's tuner table for a communicator of every rank (latency us / algorithm "
                "bandwidth GB/s per op, algorithm and protocol, as NCCL_DEBUG_SUBSYS=TUNING prints it, and the "
                "graphs behind it) with --nccl-version's tables, instead of the sweep");
  opts->topology.add_to(*cmd);
  cmd->callback([opts, &invocation] {
    if (opts->backend == "real") {
      invocation.exit_code = run_measured(*opts, invocation);
    } else {
      run_simulated(*opts);
    }
  });
}

}  // namespace twinbed::cli
