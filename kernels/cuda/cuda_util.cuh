// Private helpers of the CUDA twins: cuBLAS checks, launch geometry, a row-major GEMM over cuBLAS
// and the exact device top-k shared by tgc and dsa.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "twinbed/kernels/cuda_context.hpp"

namespace twinbed::kernels::cuda_detail {

// Checks a cublasStatus_t (cuda_check.hpp's TWINBED_CHECK_CUBLAS); throws CudaError.
#define TWINBED_CUBLAS_CHECK(call) TWINBED_CHECK_CUBLAS(::twinbed::kernels::throw_library_error, call)

// Checks the last launch (configuration errors surface here; execution errors at the next sync).
#define TWINBED_CUDA_CHECK_LAUNCH() TWINBED_CUDA_CHECK(cudaGetLastError())

inline constexpr unsigned kThreads = 256;

inline unsigned grid_for(std::size_t n, unsigned threads = kThreads) {
  const std::size_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535u * 32u ? (blocks == 0 ? 1 : blocks) : 65535u * 32u);
}

inline int as_int(const char* kernel, std::size_t n) {
  if (n > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    throw std::invalid_argument(std::string(kernel) + ": the CUDA twin handles at most 2^31 − 1 elements, got " +
                                std::to_string(n));
  return static_cast<int>(n);
}

// C (M×N) = alpha·op(A)·op(B) + beta·C with every matrix row-major (ld = its stored row length).
void gemm_rm(cuda::Context& ctx, bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
             const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc);

// Indices (ascending, device) of the k largest magnitudes of x (device), ties to the lower index.
void select_topk(const float* x, std::size_t n, std::size_t k, std::uint32_t* out_idx, cuda::Context& ctx);

}  // namespace twinbed::kernels::cuda_detail
