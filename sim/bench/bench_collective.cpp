// Wall time to simulate a 1 GiB ring all-reduce with the flow-level network on two-level clusters of
// 8-GPU NVSwitch nodes, one NIC per GPU: into a non-blocking leaf-spine fat-tree (the "fat-tree"
// preset) and into a rail-optimised fabric (the "dgx-h100" preset), from 1,024 to 65,536 GPUs.
// Counters: the simulated time, the rounds that went through the network, those timed on one period
// of ranks, and the process's peak resident memory.
#include <benchmark/benchmark.h>

#include <string>

#include "bench_support.hpp"
#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/sim/collective_sim.hpp"

namespace {

void ring_all_reduce_1gib(benchmark::State& state, const std::string& preset) {
  const int ranks = static_cast<int>(state.range(0));
  twinbed::topo::PresetParams params;
  params.ranks = ranks;
  params.gpus_per_node = 8;
  twinbed::Topology topology = twinbed::topo::topology_presets().get(preset)(params);
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
  state.counters["rounds_symmetric"] = timing.rounds_symmetric;
  state.counters["peak_rss_MiB"] = twinbed::bench::peak_rss_mib();
}

void BM_RingAllReduce1GiB_FatTree(benchmark::State& state) { ring_all_reduce_1gib(state, "fat-tree"); }
void BM_RingAllReduce1GiB_DgxH100(benchmark::State& state) { ring_all_reduce_1gib(state, "dgx-h100"); }

BENCHMARK(BM_RingAllReduce1GiB_FatTree)->RangeMultiplier(4)->Range(1024, 65536)->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK(BM_RingAllReduce1GiB_DgxH100)->RangeMultiplier(4)->Range(1024, 65536)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace
