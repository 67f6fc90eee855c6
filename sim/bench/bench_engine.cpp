// Event core throughput: schedule + pop of the same random events through sim::Engine and through a
// bare std::priority_queue of (time, sequence) keys. The figure of merit is the ratio of the two
// items_per_second in one run (scripts/bench_ratios.py prints it).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

#include "twinbed/sim/engine.hpp"

namespace {

std::vector<std::int64_t> random_times(std::size_t n) {
  std::vector<std::int64_t> t(n);
  std::uint64_t x = 88172645463325252ULL;
  for (auto& v : t) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v = static_cast<std::int64_t>(x >> 24);
  }
  return t;
}

void BM_PriorityQueue(benchmark::State& state) {
  auto times = random_times(static_cast<std::size_t>(state.range(0)));
  using Key = std::pair<std::int64_t, std::uint64_t>;
  std::uint64_t sum = 0;
  for (auto _ : state) {
    std::priority_queue<Key, std::vector<Key>, std::greater<>> q;
    std::uint64_t seq = 0;
    for (auto t : times) q.push({t, seq++});
    while (!q.empty()) {
      sum += q.top().second;
      q.pop();
    }
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void BM_Engine(benchmark::State& state) {
  auto times = random_times(static_cast<std::size_t>(state.range(0)));
  std::uint64_t sum = 0;
  for (auto _ : state) {
    twinbed::sim::Engine engine;
    for (auto t : times) engine.schedule_at(twinbed::Time::ps(t), [&sum] { ++sum; });
    engine.run();
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

BENCHMARK(BM_PriorityQueue)->Arg(1 << 10)->Arg(1 << 16)->Arg(1 << 20);
BENCHMARK(BM_Engine)->Arg(1 << 10)->Arg(1 << 16)->Arg(1 << 20);

}  // namespace
