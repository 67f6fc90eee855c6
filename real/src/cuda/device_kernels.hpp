// The CUDA backend's own device code, behind a small C-style interface: device_kernels.cu is the only
// file nvcc compiles for it, and it includes no twinbed header, so it needs no C++20 (the project's
// CUDA dialect is C++17). Each function enqueues on `stream` and returns the launch status
// (cudaGetLastError after the launch; cudaSuccess without a launch when n == 0): callers wrap it in
// CUDA_CHECK. Execution errors surface at the next synchronising call.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace twinbed::real::cuda_kernels {

// dst[i] += src[i] for i in [0, n), fp32, one rounding per element (the same result as the CPU's
// float add, add_floats_cpu). dst and src must not overlap.
cudaError_t add_f32(float* dst, const float* src, std::int64_t n, cudaStream_t stream);

// y[i] = a·x[i] + b for i in [0, n), fp32: one streaming pass reading n floats and writing n, the
// memory-bound ops of the Plan backend. 16-byte accesses where x and y are 16-byte aligned (cudaMalloc'd
// bases and offsets that are multiples of 4 floats), else scalar; x and y must not overlap.
cudaError_t stream_f32(float* y, const float* x, std::int64_t n, float a, float b, cudaStream_t stream);

// Loss scaling's unscale with the overflow check (GradScaler's, as the CPU backend's unscale_checked):
// out[i] = in[i]·inv for i in [0, n); *overflow is set to 1 (never cleared) when some in[i] is inf or NaN.
// in and out must not overlap; overflow is one device int.
cudaError_t unscale_f32(float* out, const float* in, std::int64_t n, float inv, int* overflow, cudaStream_t stream);

// The adaptive precision rule's statistics over x[0, n): out[0] = max|x|, out[1] = Σx² (fp32, in an
// order of additions that depends on the launch). out is two device floats, overwritten.
cudaError_t absmax_sumsq_f32(const float* x, std::int64_t n, float* out, cudaStream_t stream);

enum class FillType : int { F32 = 0, BF16 = 1, F16 = 2 };

// Fills n elements of `type` at `data` with pseudo-random values in [-1, 1), a function of (index, seed)
// only, for GEMM inputs.
cudaError_t fill_uniform(void* data, std::int64_t n, FillType type, std::uint32_t seed, cudaStream_t stream);

}  // namespace twinbed::real::cuda_kernels
