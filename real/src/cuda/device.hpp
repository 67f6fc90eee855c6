// Private RAII owners of CUDA resources for the CUDA backend, and the GPU presence check. Every
// constructor checks its call (CUDA_CHECK throws); destructors release without throwing.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "twinbed/real/cuda_check.hpp"

namespace twinbed::real::cuda_detail {

// The number of visible devices (>= 1); throws Unavailable(cuda_unavailable_reason()) when there are
// none. Call it before any other CUDA call: it never crashes on a machine without a GPU or driver.
int require_devices();

// Device memory for `size` elements of T on the current device; owns it, movable, not copyable.
// Size 0 allocates nothing (data() is nullptr). Contents are uninitialised.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(std::size_t size) : size_(size) {
    if (size == 0) return;
    void* raw = nullptr;
    CUDA_CHECK(cudaMalloc(&raw, size * sizeof(T)));
    data_ = static_cast<T*>(raw);
  }
  ~DeviceArray() { release(); }
  DeviceArray(DeviceArray&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceArray& operator=(DeviceArray&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::size_t bytes() const { return size_ * sizeof(T); }

 private:
  void release() noexcept {
    if (data_ != nullptr) (void)cudaFree(data_);  // cannot throw from here
    data_ = nullptr;
  }
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

// A stream of the current device that does not synchronise with the legacy default stream.
class Stream {
 public:
  Stream() { CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~Stream() { (void)cudaStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// A timing event.
class Event {
 public:
  Event() { CUDA_CHECK(cudaEventCreate(&event_)); }
  ~Event() { (void)cudaEventDestroy(event_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// Seconds from `start` to `stop` (both recorded); waits for `stop` first. Resolution about 0.5 us.
double elapsed_seconds(const Event& start, const Event& stop);

// A cuBLAS handle on the current device; owns it, not copyable.
class CublasHandle {
 public:
  CublasHandle() { CUBLAS_CHECK(cublasCreate(&handle_)); }
  ~CublasHandle() { (void)cublasDestroy(handle_); }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

}  // namespace twinbed::real::cuda_detail
