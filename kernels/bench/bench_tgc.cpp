// TGC kernels: the streaming ones against the bandwidth baseline; exact top-k against one read pass.
#include <vector>

#include "bench_common.hpp"
#include "twinbed/kernels/tgc.hpp"

namespace twinbed::kernels::bench {
namespace {

void BM_quantize(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const QuantSpec spec{bits, 256, state.range(1) ? Rounding::stochastic : Rounding::nearest, 1};
  const std::vector<float> x = gaussian_like(kStreamElems, 2);
  std::vector<std::uint8_t> codes(quant_code_bytes(x.size(), bits));
  std::vector<float> scales(quant_num_blocks(x.size(), spec));
  for (auto _ : state) {
    cpu::quantize(x, spec, codes, scales);
    benchmark::ClobberMemory();
  }
  report_bandwidth(state, 4.0 * static_cast<double>(x.size()) + static_cast<double>(quant_payload_bytes(x.size(), spec)));
}
BENCHMARK(BM_quantize)->UseRealTime()->ArgNames({"bits", "stochastic"})->ArgsProduct({{4, 8, 16}, {0, 1}});

void BM_dequantize(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const QuantSpec spec{bits, 256, Rounding::nearest, 1};
  const std::vector<float> x = gaussian_like(kStreamElems, 3);
  std::vector<std::uint8_t> codes(quant_code_bytes(x.size(), bits));
  std::vector<float> scales(quant_num_blocks(x.size(), spec)), back(x.size());
  cpu::quantize(x, spec, codes, scales);
  for (auto _ : state) {
    cpu::dequantize(codes, scales, spec, back);
    benchmark::ClobberMemory();
  }
  report_bandwidth(state, 4.0 * static_cast<double>(x.size()) + static_cast<double>(quant_payload_bytes(x.size(), spec)));
}
BENCHMARK(BM_dequantize)->UseRealTime()->ArgName("bits")->Arg(4)->Arg(8)->Arg(16);

// Threshold at the estimated k-th magnitude for a density of range(0) per mille.
void BM_sparsify_threshold(benchmark::State& state) {
  const std::vector<float> x = gaussian_like(kStreamElems, 4);
  const std::size_t k = x.size() * static_cast<std::size_t>(state.range(0)) / 1000;
  const float thr = cpu::estimate_topk_threshold(x, k, 8192, 1);
  std::vector<std::uint32_t> idx(2 * k);
  std::vector<float> val(2 * k);
  std::size_t count = 0;
  for (auto _ : state) {
    count = cpu::sparsify_threshold(x, thr, idx, val);
    benchmark::ClobberMemory();
  }
  state.counters["selected"] = static_cast<double>(count);
  report_bandwidth(state, 4.0 * static_cast<double>(x.size()) + 8.0 * static_cast<double>(count));
}
BENCHMARK(BM_sparsify_threshold)->UseRealTime()->ArgName("permille")->Arg(1)->Arg(10)->Arg(100);

void BM_ef_accumulate(benchmark::State& state) {
  const std::vector<float> g = gaussian_like(kStreamElems, 5);
  std::vector<float> e(g.size(), 0.0f);
  for (auto _ : state) {
    cpu::ef_accumulate(g, e);
    benchmark::ClobberMemory();
  }
  report_bandwidth(state, 12.0 * static_cast<double>(g.size()));
}
BENCHMARK(BM_ef_accumulate)->UseRealTime();

void BM_ef_quantize(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const QuantSpec spec{bits, 256, Rounding::stochastic, 1};
  const std::vector<float> g = gaussian_like(kStreamElems, 6);
  std::vector<float> e(g.size(), 0.0f);
  std::vector<std::uint8_t> codes(quant_code_bytes(g.size(), bits));
  std::vector<float> scales(quant_num_blocks(g.size(), spec));
  for (auto _ : state) {
    cpu::ef_quantize(g, e, spec, codes, scales);
    benchmark::ClobberMemory();
  }
  report_bandwidth(state, 12.0 * static_cast<double>(g.size()) + static_cast<double>(quant_payload_bytes(g.size(), spec)));
}
BENCHMARK(BM_ef_quantize)->UseRealTime()->ArgName("bits")->Arg(4)->Arg(8);

void BM_ef_sparsify_threshold(benchmark::State& state) {
  const std::vector<float> g = gaussian_like(kStreamElems, 7);
  std::vector<float> e(g.size(), 0.0f);
  const std::size_t k = g.size() / 100;
  const float thr = cpu::estimate_topk_threshold(g, k, 8192, 1);
  std::vector<std::uint32_t> idx(2 * k);
  std::vector<float> val(2 * k);
  std::size_t count = 0;
  for (auto _ : state) {
    count = cpu::ef_sparsify_threshold(g, e, thr, idx, val);
    benchmark::ClobberMemory();
  }
  report_bandwidth(state, 12.0 * static_cast<double>(g.size()) + 8.0 * static_cast<double>(std::min(count, idx.size())));
}
BENCHMARK(BM_ef_sparsify_threshold)->UseRealTime();

// Exact top-k; over_read_pass = time / (time of one read pass over the input at the measured
// read bandwidth), the "within 3× of a streaming pass" target.
void BM_topk(benchmark::State& state) {
  const std::vector<float> x = gaussian_like(kStreamElems, 8);
  const std::size_t k = x.size() * static_cast<std::size_t>(state.range(0)) / 1000;
  std::vector<std::uint32_t> idx(k);
  std::vector<float> val(k);
  for (auto _ : state) {
    cpu::topk(x, k, idx, val);
    benchmark::ClobberMemory();
  }
  const double pass_s = 4.0 * static_cast<double>(x.size()) / baseline().read_Bps;
  state.counters["over_read_pass"] =
      benchmark::Counter(pass_s, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  report_bandwidth(state, 4.0 * static_cast<double>(x.size()) + 8.0 * static_cast<double>(k));
}
BENCHMARK(BM_topk)->UseRealTime()->ArgName("permille")->Arg(1)->Arg(10)->Arg(100);

}  // namespace
}  // namespace twinbed::kernels::bench
