// Micro-benchmarks for calibration on the current device: a cuBLAS GEMM, a device-to-device copy, and
// the executor's add kernel exposed for its CPU twin test. Contracts in cuda_collectives.hpp.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "device.hpp"
#include "device_kernels.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/cuda_check.hpp"
#include "twinbed/real/cuda_collectives.hpp"

namespace twinbed::real {
namespace {

using cuda_detail::CublasHandle;
using cuda_detail::DeviceArray;
using cuda_detail::Event;
using cuda_detail::Stream;

constexpr int kGemmWarmup = 3;  // the first GEMM of a shape also pays cuBLAS's heuristics and module loading
constexpr int kCopyWarmup = 2;

struct GemmTypes {
  cudaDataType_t data;
  cublasComputeType_t compute;
  cuda_kernels::FillType fill;
  std::size_t element_bytes;
};

GemmTypes gemm_types(DType dtype) {
  switch (dtype) {
    case DType::FP32: return {CUDA_R_32F, CUBLAS_COMPUTE_32F, cuda_kernels::FillType::F32, 4};
    case DType::TF32: return {CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, cuda_kernels::FillType::F32, 4};
    case DType::BF16: return {CUDA_R_16BF, CUBLAS_COMPUTE_32F, cuda_kernels::FillType::BF16, 2};
    case DType::FP16: return {CUDA_R_16F, CUBLAS_COMPUTE_32F, cuda_kernels::FillType::F16, 2};
    case DType::FP8: break;
  }
  throw InvalidArgument("time_gemm_cuda: dtype " + dtype_name(dtype) + " is not supported (fp32, tf32, bf16, fp16)");
}

int gemm_dim(const char* name, std::int64_t value) {
  if (value < 1 || value > INT_MAX)
    throw InvalidArgument(std::string("time_gemm_cuda: ") + name + " must be in [1, " + std::to_string(INT_MAX) +
                          "] (got " + std::to_string(value) + ")");
  return static_cast<int>(value);
}

// rows x cols elements, refusing products that do not fit a size_t of bytes.
std::size_t matrix_elements(std::int64_t rows, std::int64_t cols, std::size_t element_bytes) {
  const auto r = static_cast<std::size_t>(rows);
  const auto c = static_cast<std::size_t>(cols);
  if (r > std::numeric_limits<std::size_t>::max() / c / element_bytes)
    throw InvalidArgument("time_gemm_cuda: a " + std::to_string(rows) + " x " + std::to_string(cols) +
                          " matrix does not fit in memory");
  return r * c;
}

void check_iters(const char* what, int iters) {
  if (iters < 1) throw InvalidArgument(std::string(what) + ": iters must be >= 1 (got " + std::to_string(iters) + ")");
}

}  // namespace

double time_gemm_cuda(std::int64_t m, std::int64_t n, std::int64_t k, DType dtype, int iters) {
  const int mi = gemm_dim("m", m);
  const int ni = gemm_dim("n", n);
  const int ki = gemm_dim("k", k);
  check_iters("time_gemm_cuda", iters);
  const GemmTypes types = gemm_types(dtype);
  const std::size_t a_elements = matrix_elements(m, k, types.element_bytes);
  const std::size_t b_elements = matrix_elements(k, n, types.element_bytes);
  const std::size_t c_elements = matrix_elements(m, n, types.element_bytes);
  cuda_detail::require_devices();

  DeviceArray<std::byte> a(a_elements * types.element_bytes);
  DeviceArray<std::byte> b(b_elements * types.element_bytes);
  DeviceArray<std::byte> c(c_elements * types.element_bytes);
  const Stream stream;
  CUDA_CHECK(cuda_kernels::fill_uniform(a.data(), static_cast<std::int64_t>(a_elements), types.fill, 1u, stream.get()));
  CUDA_CHECK(cuda_kernels::fill_uniform(b.data(), static_cast<std::int64_t>(b_elements), types.fill, 2u, stream.get()));
  CUDA_CHECK(cudaMemsetAsync(c.data(), 0, c.bytes(), stream.get()));

  const CublasHandle handle;
  CUBLAS_CHECK(cublasSetStream(handle.get(), stream.get()));
  const float alpha = 1.0f;
  const float beta = 0.0f;
  // Column-major C(m x n) = A(m x k) B(k x n): leading dimensions m, k, m.
  auto gemm = [&] {
    CUBLAS_CHECK(cublasGemmEx(handle.get(), CUBLAS_OP_N, CUBLAS_OP_N, mi, ni, ki, &alpha, a.data(), types.data, mi,
                              b.data(), types.data, ki, &beta, c.data(), types.data, mi, types.compute,
                              CUBLAS_GEMM_DEFAULT));
  };
  for (int i = 0; i < kGemmWarmup; ++i) gemm();
  const Event start;
  const Event stop;
  CUDA_CHECK(cudaEventRecord(start.get(), stream.get()));
  for (int i = 0; i < iters; ++i) gemm();
  CUDA_CHECK(cudaEventRecord(stop.get(), stream.get()));
  return cuda_detail::elapsed_seconds(start, stop) / iters;
}

BytesPerSec copy_bandwidth_cuda(Bytes bytes, int iters) {
  if (bytes < 1) throw InvalidArgument("copy_bandwidth_cuda: bytes must be >= 1 (got " + std::to_string(bytes) + ")");
  check_iters("copy_bandwidth_cuda", iters);
  cuda_detail::require_devices();

  const auto size = static_cast<std::size_t>(bytes);
  DeviceArray<std::byte> src(size);
  DeviceArray<std::byte> dst(size);
  const Stream stream;
  CUDA_CHECK(cudaMemsetAsync(src.data(), 0x5A, size, stream.get()));
  auto copy = [&] {
    CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), size, cudaMemcpyDeviceToDevice, stream.get()));
  };
  for (int i = 0; i < kCopyWarmup; ++i) copy();
  const Event start;
  const Event stop;
  CUDA_CHECK(cudaEventRecord(start.get(), stream.get()));
  for (int i = 0; i < iters; ++i) copy();
  CUDA_CHECK(cudaEventRecord(stop.get(), stream.get()));
  const double seconds = cuda_detail::elapsed_seconds(start, stop) / iters;
  if (seconds <= 0) throw Error("copy_bandwidth_cuda: the copies took no measurable time; use more bytes or iters");
  return static_cast<double>(bytes) / seconds;
}

void add_floats_cuda(std::span<float> dst, std::span<const float> src) {
  if (dst.size() != src.size())
    throw InvalidArgument("add_floats: dst has " + std::to_string(dst.size()) + " floats but src " +
                          std::to_string(src.size()));
  cuda_detail::require_devices();
  if (dst.empty()) return;
  DeviceArray<float> d(dst.size());
  DeviceArray<float> s(src.size());
  const Stream stream;
  CUDA_CHECK(cudaMemcpyAsync(d.data(), dst.data(), d.bytes(), cudaMemcpyHostToDevice, stream.get()));
  CUDA_CHECK(cudaMemcpyAsync(s.data(), src.data(), s.bytes(), cudaMemcpyHostToDevice, stream.get()));
  CUDA_CHECK(cuda_kernels::add_f32(d.data(), s.data(), static_cast<std::int64_t>(d.size()), stream.get()));
  CUDA_CHECK(cudaMemcpyAsync(dst.data(), d.data(), d.bytes(), cudaMemcpyDeviceToHost, stream.get()));
  CUDA_CHECK(cudaStreamSynchronize(stream.get()));
}

}  // namespace twinbed::real
