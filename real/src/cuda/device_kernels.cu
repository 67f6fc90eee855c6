// Device code of the CUDA backend (see device_kernels.hpp). Grid-stride loops over int64 indices, so any
// n works with a grid capped at kMaxBlocks.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "device_kernels.hpp"

namespace twinbed::real::cuda_kernels {
namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kMaxBlocks = 8192;  // ~8 waves of 256-thread blocks on an H100's 132 SMs

unsigned blocks_for(std::int64_t n) {
  const std::int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// Scalar accesses: the workspace's chunks start at any float offset, so 16-byte vectors would need an
// alignment split; a warp's 32 consecutive floats are still one coalesced 128-byte access.
__global__ void add_kernel(float* __restrict__ dst, const float* __restrict__ src, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = __fadd_rn(dst[i], src[i]);
}

__global__ void stream_kernel4(float4* __restrict__ y, const float4* __restrict__ x, std::int64_t n4, float a, float b) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += stride) {
    const float4 v = x[i];
    y[i] = make_float4(a * v.x + b, a * v.y + b, a * v.z + b, a * v.w + b);
  }
}

__global__ void stream_kernel(float* __restrict__ y, const float* __restrict__ x, std::int64_t n, float a, float b) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = a * x[i] + b;
}

// A hash of (index, seed) (the murmur3 finaliser) to [-1, 1): 24 random bits scaled by 2^-23, minus 1.
__device__ float uniform_at(std::int64_t i, std::uint32_t seed) {
  const auto u = static_cast<std::uint64_t>(i);
  std::uint32_t x = static_cast<std::uint32_t>(u) * 0x9E3779B1u ^ static_cast<std::uint32_t>(u >> 32) ^ seed;
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return static_cast<float>(x >> 8) * (1.0f / 8388608.0f) - 1.0f;
}

__device__ void store(float* p, float v) { *p = v; }
__device__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }
__device__ void store(__half* p, float v) { *p = __float2half(v); }

template <typename T>
__global__ void fill_kernel(T* data, std::int64_t n, std::uint32_t seed) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    store(data + i, uniform_at(i, seed));
}

__global__ void unscale_kernel(float* __restrict__ out, const float* __restrict__ in, std::int64_t n, float inv,
                               int* overflow) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  unsigned bad = 0;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = in[i];
    bad |= static_cast<unsigned>((__float_as_uint(v) & 0x7f800000u) == 0x7f800000u);  // inf or NaN
    out[i] = v * inv;
  }
  if (__syncthreads_or(static_cast<int>(bad)) && threadIdx.x == 0) *overflow = 1;
}

// Per thread, then per block (shared memory), then one atomic per block: max|x| as the bits of a
// non-negative float (ordered as unsigned ints), Σx² by atomicAdd.
__global__ void absmax_sumsq_kernel(const float* __restrict__ x, std::int64_t n, float* out) {
  __shared__ float amax[kThreads], sq[kThreads];
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  float m = 0, s = 0;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = x[i];
    m = fmaxf(m, fabsf(v));
    s += v * v;
  }
  amax[threadIdx.x] = m;
  sq[threadIdx.x] = s;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      amax[threadIdx.x] = fmaxf(amax[threadIdx.x], amax[threadIdx.x + half]);
      sq[threadIdx.x] += sq[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    atomicMax(reinterpret_cast<unsigned*>(out), __float_as_uint(amax[0]));
    atomicAdd(out + 1, sq[0]);
  }
}

}  // namespace

cudaError_t unscale_f32(float* out, const float* in, std::int64_t n, float inv, int* overflow, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  unscale_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out, in, n, inv, overflow);
  return cudaGetLastError();
}

cudaError_t absmax_sumsq_f32(const float* x, std::int64_t n, float* out, cudaStream_t stream) {
  const cudaError_t zeroed = cudaMemsetAsync(out, 0, 2 * sizeof(float), stream);
  if (zeroed != cudaSuccess || n <= 0) return zeroed;
  absmax_sumsq_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, out);
  return cudaGetLastError();
}

cudaError_t add_f32(float* dst, const float* src, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dst, src, n);
  return cudaGetLastError();
}

cudaError_t stream_f32(float* y, const float* x, std::int64_t n, float a, float b, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const bool aligned = reinterpret_cast<std::uintptr_t>(x) % 16 == 0 && reinterpret_cast<std::uintptr_t>(y) % 16 == 0;
  if (!aligned) {
    stream_kernel<<<blocks_for(n), kThreads, 0, stream>>>(y, x, n, a, b);
    return cudaGetLastError();
  }
  const std::int64_t n4 = n / 4;
  if (n4 > 0)
    stream_kernel4<<<blocks_for(n4), kThreads, 0, stream>>>(reinterpret_cast<float4*>(y), reinterpret_cast<const float4*>(x),
                                                             n4, a, b);
  if (n % 4 != 0) stream_kernel<<<1, kThreads, 0, stream>>>(y + 4 * n4, x + 4 * n4, n % 4, a, b);
  return cudaGetLastError();
}

cudaError_t fill_uniform(void* data, std::int64_t n, FillType type, std::uint32_t seed, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  switch (type) {
    case FillType::F32:
      fill_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<float*>(data), n, seed);
      break;
    case FillType::BF16:
      fill_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(data), n, seed);
      break;
    case FillType::F16:
      fill_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<__half*>(data), n, seed);
      break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace twinbed::real::cuda_kernels
