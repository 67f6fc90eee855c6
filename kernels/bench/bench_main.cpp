// bench_kernels: Google Benchmark over the technique kernels, reported against this machine's own
// memory bandwidth measured at start-up (printed first, and as the BM_memcpy / BM_triad rows).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "bench_common.hpp"

namespace twinbed::kernels::bench {
namespace {

template <class F>
double best_seconds(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
  }
  return best;
}

void triad(float* __restrict a, const float* __restrict b, const float* __restrict c, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) a[i] = b[i] + 3.0f * c[i];
}

float read_pass(const float* __restrict x, std::size_t n) {
  // Integer max of the magnitudes: vectorises like the kernels' own scans (a float sum would not).
  std::uint32_t m = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t u;
    std::memcpy(&u, x + i, sizeof u);
    u &= 0x7fffffffU;
    m = u > m ? u : m;
  }
  float f;
  std::memcpy(&f, &m, sizeof f);
  return f;
}

Baseline measure() {
  const std::size_t n = kStreamElems;
  std::vector<float> a(n, 1.0f), b(n, 2.0f), c(n, 3.0f);
  Baseline bl;
  bl.memcpy_Bps = 2.0 * 4.0 * static_cast<double>(n) /
                  best_seconds(8, [&] { std::memcpy(a.data(), b.data(), n * sizeof(float)); benchmark::ClobberMemory(); });
  bl.triad_Bps = 12.0 * static_cast<double>(n) /
                 best_seconds(8, [&] { triad(a.data(), b.data(), c.data(), n); benchmark::ClobberMemory(); });
  bl.read_Bps = 4.0 * static_cast<double>(n) / best_seconds(8, [&] {
                  float r = read_pass(a.data(), n);
                  benchmark::DoNotOptimize(r);
                });
  return bl;
}

void BM_memcpy(benchmark::State& state) {
  const std::size_t n = kStreamElems;
  std::vector<float> a(n, 1.0f), b(n, 2.0f);
  for (auto _ : state) {
    std::memcpy(a.data(), b.data(), n * sizeof(float));
    benchmark::ClobberMemory();
  }
  report_bandwidth(state, 8.0 * static_cast<double>(n));
}
BENCHMARK(BM_memcpy)->UseRealTime();

void BM_triad(benchmark::State& state) {
  const std::size_t n = kStreamElems;
  std::vector<float> a(n, 1.0f), b(n, 2.0f), c(n, 3.0f);
  for (auto _ : state) {
    triad(a.data(), b.data(), c.data(), n);
    benchmark::ClobberMemory();
  }
  report_bandwidth(state, 12.0 * static_cast<double>(n));
}
BENCHMARK(BM_triad)->UseRealTime();

void BM_read_pass(benchmark::State& state) {
  const std::vector<float> x = gaussian_like(kStreamElems, 1);
  for (auto _ : state) {
    float r = read_pass(x.data(), x.size());
    benchmark::DoNotOptimize(r);
  }
  report_bandwidth(state, 4.0 * static_cast<double>(x.size()));
}
BENCHMARK(BM_read_pass)->UseRealTime();

}  // namespace

const Baseline& baseline() {
  static const Baseline bl = measure();
  return bl;
}

void report_bandwidth(benchmark::State& state, double bytes_per_iter) {
  const auto iters = static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes_per_iter * iters));
  const Baseline& bl = baseline();
  state.counters["frac_of_triad"] = benchmark::Counter(bytes_per_iter * iters / bl.triad_Bps, benchmark::Counter::kIsRate);
  state.counters["frac_of_memcpy"] =
      benchmark::Counter(bytes_per_iter * iters / bl.memcpy_Bps, benchmark::Counter::kIsRate);
  state.counters["frac_of_read"] = benchmark::Counter(bytes_per_iter * iters / bl.read_Bps, benchmark::Counter::kIsRate);
}

}  // namespace twinbed::kernels::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const auto& bl = twinbed::kernels::bench::baseline();
  std::printf("baseline (64 MiB fp32 buffers, single thread): memcpy %.2f GB/s, triad %.2f GB/s, read pass %.2f GB/s\n",
              bl.memcpy_Bps / 1e9, bl.triad_Bps / 1e9, bl.read_Bps / 1e9);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
