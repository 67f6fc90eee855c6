// Dense vs block-sparse vs 2:4 GEMM (Y = X·Wᵀ, batch 512, 2048 × 2048 weight): the real speedup of
// each DSA granularity on this CPU, reported as measured even where it is below 1.
// speedup_vs_dense = (dense time, measured once in the same process) / (this kernel's time).
#include <chrono>
#include <vector>

#include "bench_common.hpp"
#include "twinbed/kernels/dsa.hpp"
#include "twinbed/kernels/sparse_gemm.hpp"

namespace twinbed::kernels::bench {
namespace {

constexpr std::size_t kBatch = 512, kIn = 2048, kOut = 2048;

struct Operands {
  std::vector<float> x = gaussian_like(kBatch * kIn, 21);
  std::vector<float> w = gaussian_like(kOut * kIn, 22);
};

const Operands& operands() {
  static const Operands o;
  return o;
}

double dense_seconds() {
  static const double t = [] {
    const Operands& o = operands();
    std::vector<float> y(kBatch * kOut);
    double best = 1e30;
    for (int r = 0; r < 3; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      cpu::gemm_nt(o.x, kBatch, kIn, o.w, kOut, y);
      benchmark::ClobberMemory();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  }();
  return t;
}

void report_gemm(benchmark::State& state, double useful_flops) {
  state.counters["GFLOPs_done"] = benchmark::Counter(useful_flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["speedup_vs_dense"] = benchmark::Counter(dense_seconds(), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_gemm_dense(benchmark::State& state) {
  const Operands& o = operands();
  std::vector<float> y(kBatch * kOut);
  for (auto _ : state) {
    cpu::gemm_nt(o.x, kBatch, kIn, o.w, kOut, y);
    benchmark::ClobberMemory();
  }
  report_gemm(state, 2.0 * kBatch * kIn * kOut);
}
BENCHMARK(BM_gemm_dense)->UseRealTime()->Unit(benchmark::kMillisecond);

// range(0): sparsity in percent; range(1): block size.
void BM_gemm_block_sparse(benchmark::State& state) {
  const Operands& o = operands();
  const double density = 1.0 - static_cast<double>(state.range(0)) / 100.0;
  const auto b = static_cast<std::size_t>(state.range(1));
  std::vector<float> score(o.w);
  for (auto& v : score) v = v < 0 ? -v : v;
  std::vector<std::uint8_t> bm((kOut / b) * (kIn / b)), mask(kOut * kIn);
  cpu::mask_block(score, kOut, kIn, b, density, bm, mask);
  const BsrMatrix bsr = bsr_from_dense(o.w, kOut, kIn, b, bm);
  std::vector<float> y(kBatch * kOut);
  for (auto _ : state) {
    cpu::bsr_gemm_nt(o.x, kBatch, bsr.view(), y);
    benchmark::ClobberMemory();
  }
  report_gemm(state, 2.0 * kBatch * static_cast<double>(bsr.nnz_blocks() * b * b));
}
BENCHMARK(BM_gemm_block_sparse)->UseRealTime()
    ->ArgNames({"sparsity_pct", "block"})
    ->ArgsProduct({{50, 70, 90}, {32, 64}})
    ->Unit(benchmark::kMillisecond);

void BM_gemm_2of4(benchmark::State& state) {
  const Operands& o = operands();
  const Sparse24Matrix sp = prune_24(o.w, kOut, kIn);
  std::vector<float> y(kBatch * kOut);
  for (auto _ : state) {
    cpu::sparse24_gemm_nt(o.x, kBatch, sp.view(), y);
    benchmark::ClobberMemory();
  }
  report_gemm(state, 1.0 * kBatch * kIn * kOut);
}
BENCHMARK(BM_gemm_2of4)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace twinbed::kernels::bench
