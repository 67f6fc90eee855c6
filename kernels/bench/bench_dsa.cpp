// DSA streaming kernels (score, masked SGD / Adam) against the bandwidth baseline, and the cost of a
// mask refresh (an exact selection over all parameters) against one read pass.
#include <vector>

#include "bench_common.hpp"
#include "twinbed/kernels/dsa.hpp"

namespace twinbed::kernels::bench {
namespace {

std::vector<std::uint8_t> mask_of_density(std::size_t n, double density) {
  std::vector<std::uint8_t> m(n);
  const auto period = static_cast<std::size_t>(1000);
  const auto on = static_cast<std::size_t>(density * 1000.0);
  for (std::size_t i = 0; i < n; ++i) m[i] = ((i * 7919) % period) < on ? 1 : 0;
  return m;
}

void BM_importance(benchmark::State& state) {
  const std::vector<float> g = gaussian_like(kStreamElems, 11), m = gaussian_like(kStreamElems, 12);
  std::vector<float> s(g.size());
  for (auto _ : state) {
    cpu::importance(g, m, 0.5f, s);
    benchmark::ClobberMemory();
  }
  report_bandwidth(state, 12.0 * static_cast<double>(g.size()));
}
BENCHMARK(BM_importance)->UseRealTime();

// Bytes: read p, g, m and the 1-byte mask, write p and m (the blend writes every element).
void BM_masked_sgd(benchmark::State& state) {
  std::vector<float> p = gaussian_like(kStreamElems, 13), m(kStreamElems, 0.0f);
  const std::vector<float> g = gaussian_like(kStreamElems, 14);
  const auto mask = mask_of_density(p.size(), 0.3);
  for (auto _ : state) {
    cpu::masked_sgd(p, g, m, mask, {});
    benchmark::ClobberMemory();
  }
  report_bandwidth(state, 21.0 * static_cast<double>(p.size()));
}
BENCHMARK(BM_masked_sgd)->UseRealTime();

// Bytes: read p, g, m, v and the mask, write p, m and v.
void BM_masked_adam(benchmark::State& state) {
  std::vector<float> p = gaussian_like(kStreamElems, 15), m(kStreamElems, 0.0f), v(kStreamElems, 0.0f);
  const std::vector<float> g = gaussian_like(kStreamElems, 16);
  const auto mask = mask_of_density(p.size(), 0.3);
  int step = 0;
  for (auto _ : state) {
    cpu::masked_adam(p, g, m, v, mask, {}, ++step);
    benchmark::ClobberMemory();
  }
  report_bandwidth(state, 29.0 * static_cast<double>(p.size()));
}
BENCHMARK(BM_masked_adam)->UseRealTime();

void BM_mask_refresh_unstructured(benchmark::State& state) {
  std::vector<float> s = gaussian_like(kStreamElems, 17);
  for (auto& v : s) v = v < 0 ? -v : v;
  std::vector<std::uint8_t> mask(s.size());
  const double density = static_cast<double>(state.range(0)) / 100.0;
  for (auto _ : state) {
    cpu::mask_unstructured(s, density, mask);
    benchmark::ClobberMemory();
  }
  const double pass_s = 4.0 * static_cast<double>(s.size()) / baseline().read_Bps;
  state.counters["over_read_pass"] =
      benchmark::Counter(pass_s, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_mask_refresh_unstructured)->UseRealTime()->ArgName("density_pct")->Arg(10)->Arg(30);

}  // namespace
}  // namespace twinbed::kernels::bench
