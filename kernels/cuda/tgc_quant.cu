// TGC quantisation, CUDA twin: one thread block per quantisation block (max |x| by a block
// reduction, then each thread writes whole code bytes), with the element arithmetic of
// src/quant_math.hpp so the codes equal the CPU's bit for bit.
#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <cstring>

#include "cuda_util.cuh"
#include "quant_math.hpp"
#include "twinbed/kernels/rng.hpp"
#include "twinbed/kernels/tgc.hpp"
#include "validate.hpp"

namespace twinbed::kernels {
namespace {

using cuda_detail::kThreads;

template <bool EF>
__device__ inline float source(const float* __restrict__ g, const float* e, std::size_t i) {
  if constexpr (EF) return detail::add_rn(g[i], e[i]);
  return g[i];
}

template <bool EF>
__global__ void quantize_kernel(const float* __restrict__ g, float* e, std::size_t n, int bits, std::size_t block,
                                bool stochastic, std::uint64_t seed, std::uint8_t* __restrict__ codes,
                                float* __restrict__ scales) {
  using Reduce = cub::BlockReduce<std::uint32_t, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ float s_scale, s_inv;
  const std::size_t start = static_cast<std::size_t>(blockIdx.x) * block;
  const std::size_t len = min(block, n - start);
  // Step 1: max |x| of the block as an integer key max (equals the CPU's).
  std::uint32_t m = 0;
  for (std::size_t i = threadIdx.x; i < len; i += blockDim.x) m = max(m, detail::magnitude_key(source<EF>(g, e, start + i)));
  const std::uint32_t amax_key = Reduce(temp).Reduce(m, [](std::uint32_t a, std::uint32_t b) { return a > b ? a : b; });
  const int qmax = detail::qmax_of(bits);
  if (threadIdx.x == 0) {
    const float amax = __uint_as_float(amax_key);
    s_scale = detail::scale_of(amax, qmax);
    s_inv = detail::inv_scale_of(amax, qmax);
    scales[blockIdx.x] = s_scale;
  }
  __syncthreads();
  const float scale = s_scale, inv = s_inv;
  auto code = [&](std::size_t local) -> std::uint32_t {
    const std::size_t i = start + local;
    const float u = stochastic ? rng::uniform(rng::key(seed, i), i) : 0.5f;
    const float v = source<EF>(g, e, i);
    const std::uint32_t c = detail::quant_code(v, inv, qmax, u);
    if constexpr (EF) e[i] = v - detail::dequant_value(c, qmax, scale);
    return c;
  };
  // Step 2: each thread owns whole output bytes of the block.
  std::uint8_t* out = codes + start * static_cast<std::size_t>(bits) / 8;
  if (bits >= 8) {
    for (std::size_t local = threadIdx.x; local < len; local += blockDim.x) {
      const std::uint32_t c = code(local);
      if (bits == 8) {
        out[local] = static_cast<std::uint8_t>(c);
      } else {
        out[2 * local] = static_cast<std::uint8_t>(c & 0xffU);
        out[2 * local + 1] = static_cast<std::uint8_t>(c >> 8);
      }
    }
  } else {
    const std::size_t per = 8 / static_cast<std::size_t>(bits);
    const std::size_t nbytes = (len + per - 1) / per;
    for (std::size_t j = threadIdx.x; j < nbytes; j += blockDim.x) {
      std::uint32_t byte = 0;
      for (std::size_t t = 0; t < per && j * per + t < len; ++t)
        byte |= code(j * per + t) << (static_cast<std::uint32_t>(bits) * t);
      out[j] = static_cast<std::uint8_t>(byte);
    }
  }
}

__global__ void dequantize_kernel(const std::uint8_t* __restrict__ codes, const float* __restrict__ scales,
                                  std::size_t n, int bits, std::size_t block, float* __restrict__ x) {
  const int qmax = detail::qmax_of(bits);
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    std::uint32_t c;
    if (bits == 16) {
      c = static_cast<std::uint32_t>(codes[2 * i]) | (static_cast<std::uint32_t>(codes[2 * i + 1]) << 8);
    } else if (bits == 8) {
      c = codes[i];
    } else {
      const std::size_t bit = i * static_cast<std::size_t>(bits);
      c = (static_cast<std::uint32_t>(codes[bit / 8]) >> (bit % 8)) & ((1U << bits) - 1U);
    }
    x[i] = detail::dequant_value(c, qmax, scales[i / block]);
  }
}

__global__ void crest_kernel(const float* __restrict__ x, std::size_t n, std::size_t block,
                             std::uint32_t* __restrict__ max_crest_bits) {
  using Reduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const std::size_t start = static_cast<std::size_t>(blockIdx.x) * block;
  const std::size_t len = min(block, n - start);
  float amax = 0.0f, sumsq = 0.0f;
  for (std::size_t i = threadIdx.x; i < len; i += blockDim.x) {
    const float v = x[start + i];
    amax = fmaxf(amax, fabsf(v));
    sumsq += v * v;
  }
  amax = Reduce(temp).Reduce(amax, [](float a, float b) { return fmaxf(a, b); });
  __syncthreads();
  sumsq = Reduce(temp).Sum(sumsq);
  if (threadIdx.x == 0 && amax > 0.0f && sumsq > 0.0f) {
    const double crest = static_cast<double>(amax) / sqrt(static_cast<double>(sumsq) / static_cast<double>(len));
    atomicMax(max_crest_bits, __float_as_uint(static_cast<float>(crest)));  // non-negative floats order as uints
  }
}

void launch_quantize(const float* g, float* e, std::size_t n, const QuantSpec& spec, std::uint8_t* codes,
                     float* scales, cuda::Context& ctx) {
  const std::size_t blocks = quant_num_blocks(n, spec);
  if (blocks == 0) return;
  if (blocks > 0x7fffffffULL) detail::fail("quantize", "too many blocks for one CUDA grid");
  const bool st = spec.rounding == Rounding::stochastic;
  if (e == nullptr)
    quantize_kernel<false><<<static_cast<unsigned>(blocks), kThreads, 0, ctx.stream()>>>(g, e, n, spec.bits, spec.block,
                                                                                       st, spec.seed, codes, scales);
  else
    quantize_kernel<true><<<static_cast<unsigned>(blocks), kThreads, 0, ctx.stream()>>>(g, e, n, spec.bits, spec.block,
                                                                                      st, spec.seed, codes, scales);
  TWINBED_CUDA_CHECK_LAUNCH();
}

}  // namespace

namespace cuda {

void quantize(std::span<const float> x, const QuantSpec& spec, std::span<std::uint8_t> codes, std::span<float> scales,
              Context& ctx) {
  detail::check_quantize_args("quantize", x.size(), spec, codes.size(), scales.size());
  launch_quantize(x.data(), nullptr, x.size(), spec, codes.data(), scales.data(), ctx);
}

void dequantize(std::span<const std::uint8_t> codes, std::span<const float> scales, const QuantSpec& spec,
                std::span<float> x, Context& ctx) {
  detail::check_quantize_args("dequantize", x.size(), spec, codes.size(), scales.size());
  if (x.empty()) return;
  dequantize_kernel<<<cuda_detail::grid_for(x.size()), kThreads, 0, ctx.stream()>>>(codes.data(), scales.data(),
                                                                                    x.size(), spec.bits, spec.block,
                                                                                    x.data());
  TWINBED_CUDA_CHECK_LAUNCH();
}

void ef_quantize(std::span<const float> g, std::span<float> e, const QuantSpec& spec, std::span<std::uint8_t> codes,
                 std::span<float> scales, Context& ctx) {
  detail::require_size("ef_quantize", "g", g.size(), "e", e.size());
  detail::check_quantize_args("ef_quantize", g.size(), spec, codes.size(), scales.size());
  if (g.empty()) return;
  launch_quantize(g.data(), e.data(), g.size(), spec, codes.data(), scales.data(), ctx);
}

int choose_bits(std::span<const float> x, std::size_t block, float rel_tol, Context& ctx) {
  detail::check_rel_tol("choose_bits", block, rel_tol);
  if (x.empty()) return kAdaptiveBits[0];
  const std::size_t blocks = (x.size() + block - 1) / block;
  DeviceBuffer<std::uint32_t> d_max(1);
  TWINBED_CUDA_CHECK(cudaMemsetAsync(d_max.data(), 0, sizeof(std::uint32_t), ctx.stream()));
  crest_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, ctx.stream()>>>(x.data(), x.size(), block, d_max.data());
  TWINBED_CUDA_CHECK_LAUNCH();
  std::uint32_t bits = 0;
  TWINBED_CUDA_CHECK(cudaMemcpyAsync(&bits, d_max.data(), sizeof bits, cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.synchronize();
  float crest;
  std::memcpy(&crest, &bits, sizeof crest);
  if (crest == 0.0f) return kAdaptiveBits[0];
  return detail::bits_for_crest(crest, rel_tol);
}

}  // namespace cuda
}  // namespace twinbed::kernels
