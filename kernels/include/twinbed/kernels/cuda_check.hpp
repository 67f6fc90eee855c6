// The one family of checks on CUDA runtime, NCCL and cuBLAS calls, for every twinbed library that makes
// them (the kernels' CUDA twins here, the real backend's CUDA + NCCL executor in real/): a failed call
// becomes an exception whose message names the call, the file and line, the library, its code name and
// its own message — "<file>:<line>: <call> failed: <library> <code name>: <message>" — and nothing
// aborts or exits.
//
// Each check is written once here, with the thrower as a parameter, because the kernels depend on
// nothing else of twinbed and throw their own error type (kernels::CudaError, a std::runtime_error)
// while the real backend throws twinbed::Error: each library binds the family to its thrower in one line
// (cuda_context.hpp: TWINBED_CUDA_CHECK; real/cuda_check.hpp: CUDA_CHECK, NCCL_CHECK, CUBLAS_CHECK).
// A thrower is any callable `[[noreturn]] void(const char* library, const char* call, const char* file,
// int line, const char* code_name, const std::string& message)`; library_failure_text() gives it the
// message.
//
// This header includes no CUDA header: a check is usable where its library's header is included
// (<cuda_runtime_api.h>, <nccl.h>, <cublas_v2.h>). C++17, so nvcc's default dialect compiles it too.
// For kernel launches: check cudaGetLastError() right after the launch (configuration errors);
// execution errors surface at the next synchronising call.
#pragma once

#include <string>

namespace twinbed::kernels {

// "<file>:<line>: <call> failed: <library> <code name>[: <message>]" (code name "error" when null).
inline std::string library_failure_text(const char* library, const char* call, const char* file, int line,
                                        const char* code_name, const std::string& message) {
  std::string text = std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " + library + " " +
                     (code_name != nullptr ? code_name : "error");
  if (!message.empty()) text += ": " + message;
  return text;
}

}  // namespace twinbed::kernels

// cudaError_t: the code's name and string.
#define TWINBED_CHECK_CUDA(thrower, call)                                                              \
  do {                                                                                                 \
    const ::cudaError_t twinbed_cuda_status_ = (call);                                                 \
    if (twinbed_cuda_status_ != ::cudaSuccess)                                                         \
      thrower("CUDA", #call, __FILE__, __LINE__, ::cudaGetErrorName(twinbed_cuda_status_),             \
              ::std::string(::cudaGetErrorString(twinbed_cuda_status_)));                              \
  } while (0)

// ncclResult_t: the message adds ncclGetLastError's text, which says what NCCL found wrong
// (ncclGetErrorString alone only names the class of error).
#define TWINBED_CHECK_NCCL(thrower, call)                                                              \
  do {                                                                                                 \
    const ::ncclResult_t twinbed_nccl_status_ = (call);                                                \
    if (twinbed_nccl_status_ != ::ncclSuccess)                                                         \
      thrower("NCCL", #call, __FILE__, __LINE__, ::ncclGetErrorString(twinbed_nccl_status_),           \
              ::std::string(::ncclGetLastError(nullptr) ? ::ncclGetLastError(nullptr) : ""));          \
  } while (0)

// cublasStatus_t: the status's name and string.
#define TWINBED_CHECK_CUBLAS(thrower, call)                                                            \
  do {                                                                                                 \
    const ::cublasStatus_t twinbed_cublas_status_ = (call);                                            \
    if (twinbed_cublas_status_ != ::CUBLAS_STATUS_SUCCESS)                                             \
      thrower("cuBLAS", #call, __FILE__, __LINE__, ::cublasGetStatusName(twinbed_cublas_status_),      \
              ::std::string(::cublasGetStatusString(twinbed_cublas_status_)));                         \
  } while (0)
