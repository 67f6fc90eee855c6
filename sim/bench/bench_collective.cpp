// Wall time to simulate a 1 GiB ring all-reduce with the flow-level network on a two-level cluster
// (8 GPUs per node on NVSwitch, one NIC per GPU into a non-blocking leaf-spine fat-tree: the
// "fat-tree" preset). Counters: the simulated time, the rounds that went through the network (the
// rest were replayed), and the process's peak resident memory.
#include <benchmark/benchmark.h>

#include <sys/resource.h>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/sim/collective_sim.hpp"

namespace {

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is KiB on Linux
}

void BM_RingAllReduce1GiB(benchmark::State& state) {
  const int ranks = static_cast<int>(state.range(0));
  twinbed::topo::PresetParams params;
  params.ranks = ranks;
  params.gpus_per_node = 8;
  twinbed::Topology topology = twinbed::topo::topology_presets().get("fat-tree")(params);
  twinbed::CollectiveRequest request{twinbed::CollectiveOp::AllReduce, ranks, twinbed::GiB, 0, 8};
  twinbed::sim::CollectiveTiming timing;
  for (auto _ : state) {
    // A fresh simulator each time: nothing (routes, memo) carries over between iterations.
    twinbed::sim::CollectiveSimulator sim(topology, "flow");
    timing = sim.run(*twinbed::build_schedule("ring", request));
  }
  state.counters["sim_time_ms"] = timing.time.seconds() * 1e3;
  state.counters["rounds"] = timing.rounds;
  state.counters["rounds_simulated"] = timing.rounds_simulated;
  state.counters["peak_rss_MiB"] = peak_rss_mib();
}

BENCHMARK(BM_RingAllReduce1GiB)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
