// bench_kernels_cuda: the CUDA twins' bandwidth fractions — each streaming twin's bytes per second as a
// fraction of the GPU's device-to-device copy, measured in the same run (issue 10's GPU check). A plain
// program, not a Google Benchmark target: the GPU machines it runs on carry no benchmark library. Byte
// convention as bench_kernels' (STREAM's): bytes read + bytes written, no write-allocate traffic; a copy
// of b bytes counts 2b. Times from CUDA events around `iters` back-to-back calls, best of 3 repetitions.
// Without a GPU it says why and exits 0.
//
//   bench_kernels_cuda [elements]     (default 2^26: 256 MiB per fp32 buffer, well above any L2)
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "gaussian_like.hpp"
#include "twinbed/kernels/cuda_context.hpp"
#include "twinbed/kernels/dsa.hpp"
#include "twinbed/kernels/payload.hpp"
#include "twinbed/kernels/tgc.hpp"

namespace tk = twinbed::kernels;
namespace kcu = twinbed::kernels::cuda;

namespace {

constexpr int kIters = 20;

// Seconds per call of `body` (enqueued on ctx's stream), the best of 3 timed runs of kIters calls.
double seconds_per_call(const std::function<void()>& body, tk::cuda::Context& ctx) {
  cudaEvent_t start = nullptr, stop = nullptr;
  TWINBED_CUDA_CHECK(cudaEventCreate(&start));
  TWINBED_CUDA_CHECK(cudaEventCreate(&stop));
  body();  // warm-up
  ctx.synchronize();
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    TWINBED_CUDA_CHECK(cudaEventRecord(start, ctx.stream()));
    for (int i = 0; i < kIters; ++i) body();
    TWINBED_CUDA_CHECK(cudaEventRecord(stop, ctx.stream()));
    TWINBED_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    TWINBED_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    const double s = static_cast<double>(ms) * 1e-3 / kIters;
    best = rep == 0 ? s : std::min(best, s);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

// A device buffer of n floats holding bench_kernels' N(0,1)-like inputs.
kcu::DeviceBuffer<float> gaussian_like(std::size_t n, std::uint64_t seed) {
  const std::vector<float> host = twinbed::kernels::bench::gaussian_like(n, seed);
  kcu::DeviceBuffer<float> d(n);
  TWINBED_CUDA_CHECK(cudaMemcpy(d.data(), host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&devices); e != cudaSuccess || devices == 0) {
    std::printf("no GPU: skipped (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device");
    return 0;
  }
  const std::size_t n = argc > 1 ? static_cast<std::size_t>(std::strtoull(argv[1], nullptr, 10)) : std::size_t{1} << 26;
  if (n < 1024) {
    std::fprintf(stderr, "bench_kernels_cuda: elements must be at least 1024, got %s\n", argv[1]);
    return 2;
  }
  try {
    tk::cuda::Context ctx;
    cudaDeviceProp prop{};
    TWINBED_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const double fp32 = 4.0 * static_cast<double>(n);

    kcu::DeviceBuffer<float> a = gaussian_like(n, 1), b(n);
    const double copy_s = seconds_per_call(
        [&] { TWINBED_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), n * sizeof(float), cudaMemcpyDeviceToDevice, ctx.stream())); },
        ctx);
    const double copy_Bps = 2.0 * fp32 / copy_s;
    std::printf("# bench_kernels_cuda on %s, %zu elements (%.0f MiB per fp32 buffer), best of 3 x %d calls\n", prop.name, n,
                fp32 / (1 << 20), kIters);
    std::printf("%-28s %10s %10s %14s\n", "kernel", "us", "GB/s", "frac_of_copy");
    auto row = [&](const std::string& name, double seconds, double bytes) {
      std::printf("%-28s %10.1f %10.1f %14.3f\n", name.c_str(), seconds * 1e6, bytes / seconds / 1e9, bytes / seconds / copy_Bps);
    };
    row("copy (device to device)", copy_s, 2.0 * fp32);

    kcu::DeviceBuffer<float> g = gaussian_like(n, 2), e = gaussian_like(n, 3), m = gaussian_like(n, 4);
    for (int bits : {4, 8}) {
      const tk::QuantSpec spec{bits, 256, tk::Rounding::nearest, 0};
      kcu::DeviceBuffer<std::uint8_t> codes(tk::quant_code_bytes(n, bits));
      kcu::DeviceBuffer<float> scales(tk::quant_num_blocks(n, spec));
      const double bytes = fp32 + static_cast<double>(tk::quant_payload_bytes(n, spec));
      row("quantize int" + std::to_string(bits), seconds_per_call([&] { kcu::quantize(g.span(), spec, codes.span(), scales.span(), ctx); }, ctx), bytes);
      row("dequantize int" + std::to_string(bits),
          seconds_per_call([&] { kcu::dequantize(codes.span(), scales.span(), spec, b.span(), ctx); }, ctx), bytes);
      row("ef_quantize int" + std::to_string(bits),
          seconds_per_call([&] { kcu::ef_quantize(g.span(), e.span(), spec, codes.span(), scales.span(), ctx); }, ctx),
          3.0 * fp32 + static_cast<double>(tk::quant_payload_bytes(n, spec)));
    }
    row("ef_accumulate", seconds_per_call([&] { kcu::ef_accumulate(g.span(), e.span(), ctx); }, ctx), 3.0 * fp32);
    {
      const std::size_t k = n / 100;  // top-1%: reads the input, writes k indices and values
      kcu::DeviceBuffer<std::uint32_t> idx(k);
      kcu::DeviceBuffer<float> val(k);
      row("topk 1%", seconds_per_call([&] { static_cast<void>(kcu::topk(g.span(), k, idx.span(), val.span(), ctx)); }, ctx),
          fp32 + 8.0 * static_cast<double>(k));
    }
    row("importance", seconds_per_call([&] { kcu::importance(g.span(), m.span(), 0.5f, b.span(), ctx); }, ctx), 3.0 * fp32);
    {
      std::vector<std::uint8_t> host_mask(n);
      for (std::size_t i = 0; i < n; ++i) host_mask[i] = (i * 7919) % 1000 < 300 ? 1 : 0;  // density 0.3
      kcu::DeviceBuffer<std::uint8_t> mask(n);
      TWINBED_CUDA_CHECK(cudaMemcpy(mask.data(), host_mask.data(), n, cudaMemcpyHostToDevice));
      kcu::DeviceBuffer<float> p = gaussian_like(n, 5), v(n);
      TWINBED_CUDA_CHECK(cudaMemset(v.data(), 0, n * sizeof(float)));
      int step = 0;
      // Bytes: read p, g, m, v and the mask, write p, m and v (as bench_kernels' masked_adam).
      row("masked_adam (density 0.3)",
          seconds_per_call([&] { kcu::masked_adam(p.span(), g.span(), m.span(), v.span(), mask.span(), tk::AdamSpec{}, ++step, ctx); }, ctx),
          29.0 * static_cast<double>(n));
    }
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "bench_kernels_cuda: %s\n", ex.what());
    return 1;
  }
  return 0;
}
