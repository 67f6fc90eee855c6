// CUDA plumbing for the twins: the error type, the check macro, an owning device buffer and the
// Context every cuda:: kernel takes last. Only usable when TWINBED_KERNELS_HAVE_CUDA == 1.
#pragma once

#include "twinbed/kernels/common.hpp"
#include "twinbed/kernels/cuda_check.hpp"

#if TWINBED_KERNELS_HAVE_CUDA

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

struct cublasContext;  // cuBLAS handle type, so that this header does not need cublas_v2.h

namespace twinbed::kernels {

// A failed CUDA runtime / cuBLAS call: what() = library_failure_text (cuda_check.hpp),
// "file:line: call failed: <library> <code name>: <library message>".
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The kernels' thrower for the shared checks (cuda_check.hpp): throws CudaError.
[[noreturn]] void throw_library_error(const char* library, const char* call, const char* file, int line,
                                      const char* code_name, const std::string& message);

// Checks a cudaError_t (cuda_check.hpp's TWINBED_CHECK_CUDA); throws CudaError.
#define TWINBED_CUDA_CHECK(call) TWINBED_CHECK_CUDA(::twinbed::kernels::throw_library_error, call)

namespace cuda {

// Owns n elements of device memory (cudaMalloc/cudaFree). Move-only. size() in elements.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    if (n == 0) return;
    void* p = nullptr;
    TWINBED_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
    ptr_.reset(static_cast<T*>(p));
  }
  T* data() { return ptr_.get(); }
  const T* data() const { return ptr_.get(); }
  std::size_t size() const { return n_; }
  std::span<T> span() { return {ptr_.get(), n_}; }
  std::span<const T> span() const { return {ptr_.get(), n_}; }

 private:
  struct Free {
    void operator()(T* p) const noexcept { cudaFree(p); }
  };
  std::unique_ptr<T, Free> ptr_;
  std::size_t n_ = 0;
};

// What every cuda:: kernel runs on: a stream (borrowed; the default stream when none is given) and
// a cuBLAS handle bound to it (owned, created on construction). Kernels are asynchronous on the
// stream unless their contract says they return a host value (those synchronise the stream).
// Not thread-safe: one Context per host thread.
class Context {
 public:
  explicit Context(cudaStream_t stream = nullptr);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  cudaStream_t stream() const { return stream_; }
  cublasContext* cublas() const { return cublas_; }
  void synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
  cublasContext* cublas_ = nullptr;
};

// Host <-> device copies for tests and callers (synchronous, checked).
template <class T>
void copy_to_device(std::span<const T> host, std::span<T> device) {
  if (host.size() != device.size()) throw std::invalid_argument("copy_to_device: sizes differ");
  if (!host.empty())
    TWINBED_CUDA_CHECK(cudaMemcpy(device.data(), host.data(), host.size_bytes(), cudaMemcpyHostToDevice));
}
template <class T>
void copy_to_host(std::span<const T> device, std::span<T> host) {
  if (host.size() != device.size()) throw std::invalid_argument("copy_to_host: sizes differ");
  if (!host.empty())
    TWINBED_CUDA_CHECK(cudaMemcpy(host.data(), device.data(), host.size_bytes(), cudaMemcpyDeviceToHost));
}

}  // namespace cuda
}  // namespace twinbed::kernels

#endif  // TWINBED_KERNELS_HAVE_CUDA
