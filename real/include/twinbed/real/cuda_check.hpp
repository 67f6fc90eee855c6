// CUDA_CHECK, NCCL_CHECK and CUBLAS_CHECK: a failed call becomes a twinbed::Error that names the call,
// the file and line, and the library's own message; nothing aborts or exits. They are twinbed's one
// family of checks (twinbed/kernels/cuda_check.hpp, which the kernels' CUDA twins use too), bound here to
// the real backend's thrower, throw_library_error.
//
// This header includes no CUDA header, so anyone may include it; a macro is usable where its library's
// header is included (<cuda_runtime.h>, <nccl.h>, <cublas_v2.h>), as MPI_CHECK is with <mpi.h>.
// throw_library_error exists in every build.
#pragma once

#include <string>

#include "twinbed/core/error.hpp"
#include "twinbed/kernels/cuda_check.hpp"

namespace twinbed::real {

// Throws Error(kernels::library_failure_text(...)):
// "<file>:<line>: <call> failed: <library> <code name>: <message>".
[[noreturn]] void throw_library_error(const char* library, const char* call, const char* file, int line,
                                      const char* code_name, const std::string& message);

}  // namespace twinbed::real

// CUDA_CHECK(cudaMalloc(&p, n)). For kernel launches: CUDA_CHECK(cudaGetLastError()) right after the
// launch reports configuration errors; execution errors surface at the next synchronising call.
#ifndef CUDA_CHECK
#define CUDA_CHECK(call) TWINBED_CHECK_CUDA(::twinbed::real::throw_library_error, call)
#endif

// NCCL_CHECK(ncclAllReduce(...)). The message adds ncclGetLastError's text, which says what NCCL
// found wrong (ncclGetErrorString alone only names the class of error).
#ifndef NCCL_CHECK
#define NCCL_CHECK(call) TWINBED_CHECK_NCCL(::twinbed::real::throw_library_error, call)
#endif

// CUBLAS_CHECK(cublasGemmEx(...)).
#ifndef CUBLAS_CHECK
#define CUBLAS_CHECK(call) TWINBED_CHECK_CUBLAS(::twinbed::real::throw_library_error, call)
#endif
