// TGC sparsification and error feedback, CUDA twin. Selection uses CUB's stable primitives (radix
// sort, flagged select), which keep index order and so reproduce the CPU's tie rule and output order.
#include <cub/device/device_select.cuh>

#include <algorithm>
#include <bit>
#include <functional>
#include <vector>

#include "cuda_util.cuh"
#include "quant_math.hpp"
#include "twinbed/kernels/rng.hpp"
#include "twinbed/kernels/tgc.hpp"
#include "validate.hpp"

namespace twinbed::kernels {
namespace {

using cuda_detail::grid_for;
using cuda_detail::kThreads;

#define TWINBED_GRID_STRIDE(i, n)                                                                  \
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < (n);  \
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)

__global__ void gather_kernel(const float* __restrict__ x, const std::uint32_t* __restrict__ idx, std::size_t k,
                              float* __restrict__ val) {
  TWINBED_GRID_STRIDE(j, k) val[j] = x[idx[j]];
}

__global__ void gather_and_clear_kernel(float* __restrict__ e, const std::uint32_t* __restrict__ idx, std::size_t k,
                                        float* __restrict__ val) {
  TWINBED_GRID_STRIDE(j, k) {
    val[j] = e[idx[j]];
    e[idx[j]] = 0.0f;
  }
}

__global__ void flag_kernel(const float* __restrict__ x, std::size_t n, std::uint32_t tkey,
                            std::uint8_t* __restrict__ flags, std::uint32_t* __restrict__ iota) {
  TWINBED_GRID_STRIDE(i, n) {
    flags[i] = detail::magnitude_key(x[i]) >= tkey ? 1 : 0;
    iota[i] = static_cast<std::uint32_t>(i);
  }
}

__global__ void accumulate_kernel(const float* __restrict__ g, float* __restrict__ e, std::size_t n) {
  TWINBED_GRID_STRIDE(i, n) e[i] = detail::add_rn(e[i], g[i]);
}

__global__ void scatter_add_kernel(const std::uint32_t* __restrict__ idx, const float* __restrict__ val, std::size_t k,
                                   float* __restrict__ out, std::size_t n) {
  TWINBED_GRID_STRIDE(j, k) {
    if (idx[j] < n) atomicAdd(out + idx[j], val[j]);
  }
}

__global__ void clear_kernel(const std::uint32_t* __restrict__ idx, std::size_t k, float* __restrict__ e, std::size_t n) {
  TWINBED_GRID_STRIDE(j, k) {
    if (idx[j] < n) e[idx[j]] = 0.0f;
  }
}

__global__ void sample_kernel(const float* __restrict__ x, std::size_t n, std::size_t s, std::uint32_t key,
                              std::uint32_t* __restrict__ out) {
  TWINBED_GRID_STRIDE(j, s) {
    const std::size_t lo = j * n / s, hi = (j + 1) * n / s;  // the stratum of sample j (select.cpp)
    out[j] = detail::magnitude_key(x[lo + rng::bits(key, j) % (hi - lo)]);
  }
}

// Indices (ascending) of all entries with key >= tkey into a device buffer of n; returns the count.
std::size_t select_ge(const float* x, std::size_t n, std::uint32_t tkey, cuda::DeviceBuffer<std::uint32_t>& selected,
                      cuda::Context& ctx) {
  const int ni = cuda_detail::as_int("sparsify_threshold", n);
  cuda::DeviceBuffer<std::uint8_t> flags(n);
  cuda::DeviceBuffer<std::uint32_t> iota(n);
  cuda::DeviceBuffer<int> d_count(1);
  flag_kernel<<<grid_for(n), kThreads, 0, ctx.stream()>>>(x, n, tkey, flags.data(), iota.data());
  TWINBED_CUDA_CHECK_LAUNCH();
  std::size_t temp_bytes = 0;
  TWINBED_CUDA_CHECK(cub::DeviceSelect::Flagged(nullptr, temp_bytes, iota.data(), flags.data(), selected.data(),
                                                d_count.data(), ni, ctx.stream()));
  cuda::DeviceBuffer<unsigned char> temp(temp_bytes);
  TWINBED_CUDA_CHECK(cub::DeviceSelect::Flagged(temp.data(), temp_bytes, iota.data(), flags.data(), selected.data(),
                                                d_count.data(), ni, ctx.stream()));
  int count = 0;
  TWINBED_CUDA_CHECK(cudaMemcpyAsync(&count, d_count.data(), sizeof count, cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.synchronize();
  return static_cast<std::size_t>(count);
}

}  // namespace

namespace cuda {

std::size_t topk(std::span<const float> x, std::size_t k, std::span<std::uint32_t> indices, std::span<float> values,
                 Context& ctx) {
  detail::check_topk_args("topk", x.size(), k, indices.size(), values.size());
  if (k == 0) return 0;
  cuda_detail::select_topk(x.data(), x.size(), k, indices.data(), ctx);
  gather_kernel<<<grid_for(k), kThreads, 0, ctx.stream()>>>(x.data(), indices.data(), k, values.data());
  TWINBED_CUDA_CHECK_LAUNCH();
  ctx.synchronize();
  return k;
}

float estimate_topk_threshold(std::span<const float> x, std::size_t k, std::size_t samples, std::uint64_t seed,
                              Context& ctx) {
  const std::size_t n = x.size();
  if (k == 0 || k > n)
    detail::fail("estimate_topk_threshold", "k must be in [1, n = " + std::to_string(n) + "], got " + std::to_string(k));
  if (samples == 0) detail::fail("estimate_topk_threshold", "samples must be at least 1");
  const std::size_t s = std::min(samples, n);
  DeviceBuffer<std::uint32_t> d_keys(s);
  sample_kernel<<<grid_for(s), kThreads, 0, ctx.stream()>>>(x.data(), n, s, rng::key(seed, 0), d_keys.data());
  TWINBED_CUDA_CHECK_LAUNCH();
  std::vector<std::uint32_t> keys(s);
  TWINBED_CUDA_CHECK(cudaMemcpyAsync(keys.data(), d_keys.data(), s * sizeof(std::uint32_t), cudaMemcpyDeviceToHost,
                                     ctx.stream()));
  ctx.synchronize();
  // The order statistic of a small sample is picked on the host, exactly as the CPU twin does.
  const std::size_t rank = std::clamp<std::size_t>((k * s + n - 1) / n, 1, s);
  std::nth_element(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(rank - 1), keys.end(), std::greater<>());
  return std::bit_cast<float>(keys[rank - 1]);
}

std::size_t sparsify_threshold(std::span<const float> x, float threshold, std::span<std::uint32_t> indices,
                               std::span<float> values, Context& ctx) {
  detail::check_index_range("sparsify_threshold", x.size());
  detail::check_threshold("sparsify_threshold", threshold);
  detail::require_size("sparsify_threshold", "indices", indices.size(), "values", values.size());
  if (x.empty()) return 0;
  DeviceBuffer<std::uint32_t> selected(x.size());
  const std::size_t count = select_ge(x.data(), x.size(), detail::magnitude_key(threshold), selected, ctx);
  const std::size_t written = std::min(count, indices.size());
  if (written > 0) {
    TWINBED_CUDA_CHECK(cudaMemcpyAsync(indices.data(), selected.data(), written * sizeof(std::uint32_t),
                                       cudaMemcpyDeviceToDevice, ctx.stream()));
    gather_kernel<<<grid_for(written), kThreads, 0, ctx.stream()>>>(x.data(), indices.data(), written, values.data());
    TWINBED_CUDA_CHECK_LAUNCH();
  }
  ctx.synchronize();
  return count;
}

void scatter_add(std::span<const std::uint32_t> indices, std::span<const float> values, std::span<float> out,
                 Context& ctx) {
  detail::require_size("scatter_add", "indices", indices.size(), "values", values.size());
  if (indices.empty()) return;
  scatter_add_kernel<<<grid_for(indices.size()), kThreads, 0, ctx.stream()>>>(indices.data(), values.data(),
                                                                             indices.size(), out.data(), out.size());
  TWINBED_CUDA_CHECK_LAUNCH();
}

void ef_accumulate(std::span<const float> g, std::span<float> e, Context& ctx) {
  detail::require_size("ef_accumulate", "g", g.size(), "e", e.size());
  if (g.empty()) return;
  accumulate_kernel<<<grid_for(g.size()), kThreads, 0, ctx.stream()>>>(g.data(), e.data(), g.size());
  TWINBED_CUDA_CHECK_LAUNCH();
}

void ef_clear_sent(std::span<const std::uint32_t> indices, std::span<float> e, Context& ctx) {
  if (indices.empty()) return;
  clear_kernel<<<grid_for(indices.size()), kThreads, 0, ctx.stream()>>>(indices.data(), indices.size(), e.data(),
                                                                       e.size());
  TWINBED_CUDA_CHECK_LAUNCH();
}

std::size_t ef_sparsify_threshold(std::span<const float> g, std::span<float> e, float threshold,
                                  std::span<std::uint32_t> indices, std::span<float> values, Context& ctx) {
  detail::require_size("ef_sparsify_threshold", "g", g.size(), "e", e.size());
  detail::check_index_range("ef_sparsify_threshold", g.size());
  detail::check_threshold("ef_sparsify_threshold", threshold);
  detail::require_size("ef_sparsify_threshold", "indices", indices.size(), "values", values.size());
  if (g.empty()) return 0;
  ef_accumulate(g, e, ctx);
  DeviceBuffer<std::uint32_t> selected(g.size());
  const std::size_t count = select_ge(e.data(), e.size(), detail::magnitude_key(threshold), selected, ctx);
  const std::size_t written = std::min(count, indices.size());
  if (written > 0) {
    TWINBED_CUDA_CHECK(cudaMemcpyAsync(indices.data(), selected.data(), written * sizeof(std::uint32_t),
                                       cudaMemcpyDeviceToDevice, ctx.stream()));
    gather_and_clear_kernel<<<grid_for(written), kThreads, 0, ctx.stream()>>>(e.data(), indices.data(), written,
                                                                            values.data());
    TWINBED_CUDA_CHECK_LAUNCH();
  }
  ctx.synchronize();
  return count;
}

}  // namespace cuda
}  // namespace twinbed::kernels
