// CUDA_CHECK, NCCL_CHECK and CUBLAS_CHECK: a failed call becomes a twinbed::Error that names the call,
// the file and line, and the library's own message; nothing aborts or exits.
//
// This header includes no CUDA header, so anyone may include it; a macro is usable where its library's
// header is included (<cuda_runtime.h>, <nccl.h>, <cublas_v2.h>), as MPI_CHECK is with <mpi.h>.
// throw_library_error exists in every build.
#pragma once

#include <string>

#include "twinbed/core/error.hpp"

namespace twinbed::real {

// Throws Error("<file>:<line>: <call> failed: <library> <code name>: <message>").
[[noreturn]] void throw_library_error(const char* library, const char* call, const char* file, int line,
                                      const char* code_name, const std::string& message);

}  // namespace twinbed::real

// CUDA_CHECK(cudaMalloc(&p, n)). For kernel launches: CUDA_CHECK(cudaGetLastError()) right after the
// launch reports configuration errors; execution errors surface at the next synchronising call.
#ifndef CUDA_CHECK
#define CUDA_CHECK(call)                                                                               \
  do {                                                                                                 \
    const ::cudaError_t twinbed_cuda_status_ = (call);                                                 \
    if (twinbed_cuda_status_ != ::cudaSuccess)                                                         \
      ::twinbed::real::throw_library_error("CUDA", #call, __FILE__, __LINE__,                          \
                                           ::cudaGetErrorName(twinbed_cuda_status_),                   \
                                           ::cudaGetErrorString(twinbed_cuda_status_));                \
  } while (0)
#endif

// NCCL_CHECK(ncclAllReduce(...)). The message adds ncclGetLastError's text, which says what NCCL
// found wrong (ncclGetErrorString alone only names the class of error).
#ifndef NCCL_CHECK
#define NCCL_CHECK(call)                                                                               \
  do {                                                                                                 \
    const ::ncclResult_t twinbed_nccl_status_ = (call);                                                \
    if (twinbed_nccl_status_ != ::ncclSuccess)                                                         \
      ::twinbed::real::throw_library_error(                                                            \
          "NCCL", #call, __FILE__, __LINE__, ::ncclGetErrorString(twinbed_nccl_status_),               \
          ::std::string(::ncclGetLastError(nullptr) ? ::ncclGetLastError(nullptr) : ""));              \
  } while (0)
#endif

// CUBLAS_CHECK(cublasGemmEx(...)).
#ifndef CUBLAS_CHECK
#define CUBLAS_CHECK(call)                                                                             \
  do {                                                                                                 \
    const ::cublasStatus_t twinbed_cublas_status_ = (call);                                            \
    if (twinbed_cublas_status_ != ::CUBLAS_STATUS_SUCCESS)                                             \
      ::twinbed::real::throw_library_error("cuBLAS", #call, __FILE__, __LINE__,                        \
                                           ::cublasGetStatusName(twinbed_cublas_status_),              \
                                           ::cublasGetStatusString(twinbed_cublas_status_));           \
  } while (0)
#endif
