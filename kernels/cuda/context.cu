// Context, error reporting, device probing and the shared device helpers.
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <optional>
#include <string>

#include "cuda_util.cuh"
#include "quant_math.hpp"

namespace twinbed::kernels {

void throw_library_error(const char* library, const char* call, const char* file, int line, const char* code_name,
                         const std::string& message) {
  throw CudaError(library_failure_text(library, call, file, line, code_name, message));
}

// The one CUDA availability probe of twinbed (common.hpp); the real backend asks it too.
std::optional<std::string> cuda_unavailable_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // leave no error behind for the next runtime call to report
    return std::string("no CUDA device: ") + cudaGetErrorString(status) + " (" + cudaGetErrorName(status) + ")";
  }
  if (count == 0) return std::string("no CUDA device: the CUDA runtime sees 0 devices");
  return std::nullopt;
}

bool cuda_available() noexcept {
  try {
    return !cuda_unavailable_reason();
  } catch (...) {
    return false;
  }
}

namespace cuda {

Context::Context(cudaStream_t stream) : stream_(stream) {
  cublasHandle_t h = nullptr;
  TWINBED_CUBLAS_CHECK(cublasCreate(&h));
  cublas_ = h;
  const cublasStatus_t st = cublasSetStream(h, stream_);
  if (st != CUBLAS_STATUS_SUCCESS) {
    cublasDestroy(h);
    throw_library_error("cuBLAS", "cublasSetStream(h, stream_)", __FILE__, __LINE__, cublasGetStatusName(st),
                        cublasGetStatusString(st));
  }
}

Context::~Context() {
  if (cublas_ != nullptr) cublasDestroy(cublas_);
}

void Context::synchronize() const { TWINBED_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace cuda

namespace cuda_detail {

void gemm_rm(cuda::Context& ctx, bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
             const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc) {
  if (m == 0 || n == 0) return;
  // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, and a row-major matrix read as
  // column-major is its transpose: so swap the operands and keep each one's transpose flag.
  TWINBED_CUBLAS_CHECK(cublasSgemm(ctx.cublas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, as_int("gemm", n), as_int("gemm", m),
                                   as_int("gemm", k), &alpha, b, as_int("gemm", ldb), a, as_int("gemm", lda), &beta,
                                   c, as_int("gemm", ldc)));
}

namespace {
__global__ void keys_and_iota(const float* __restrict__ x, std::uint32_t n, std::uint32_t* __restrict__ keys,
                              std::uint32_t* __restrict__ idx) {
  for (std::uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    keys[i] = detail::magnitude_key(x[i]);
    idx[i] = i;
  }
}
}  // namespace

void select_topk(const float* x, std::size_t n, std::size_t k, std::uint32_t* out_idx, cuda::Context& ctx) {
  if (k == 0) return;
  const int ni = as_int("topk", n);
  const int ki = as_int("topk", k);
  cuda::DeviceBuffer<std::uint32_t> keys(n), keys_sorted(n), idx(n), idx_sorted(n);
  keys_and_iota<<<grid_for(n), kThreads, 0, ctx.stream()>>>(x, static_cast<std::uint32_t>(n), keys.data(), idx.data());
  TWINBED_CUDA_CHECK_LAUNCH();
  // A stable descending radix sort of (key, index) puts equal keys in ascending index order: exactly
  // the CPU's tie rule. Then the first k indices are sorted ascending.
  std::size_t temp_bytes = 0;
  TWINBED_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, temp_bytes, keys.data(), keys_sorted.data(),
                                                               idx.data(), idx_sorted.data(), ni, 0, 32, ctx.stream()));
  std::size_t temp2 = 0;
  TWINBED_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(nullptr, temp2, idx_sorted.data(), out_idx, ki, 0, 32, ctx.stream()));
  cuda::DeviceBuffer<unsigned char> temp(std::max(temp_bytes, temp2));
  TWINBED_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(temp.data(), temp_bytes, keys.data(), keys_sorted.data(),
                                                               idx.data(), idx_sorted.data(), ni, 0, 32, ctx.stream()));
  TWINBED_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(temp.data(), temp2, idx_sorted.data(), out_idx, ki, 0, 32, ctx.stream()));
  ctx.synchronize();  // the scratch buffers are freed on return
}

}  // namespace cuda_detail
}  // namespace twinbed::kernels
