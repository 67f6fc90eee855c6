// Dense (cuBLAS), block-sparse (tiled kernel) and 2:4 (gather kernel) GEMMs, CUDA twins.
#include "cuda_util.cuh"
#include "twinbed/kernels/sparse_gemm.hpp"
#include "validate.hpp"

namespace twinbed::kernels {
namespace {

constexpr unsigned kTile = 16;

// One 16×16 tile of Y per thread block. A tile's 16 outputs lie in one BSR block row (block is a
// multiple of 16), so every thread walks the same list of stored blocks; X and W sub-tiles are staged
// through shared memory 16 columns at a time.
__global__ void bsr_kernel(const float* __restrict__ x, std::size_t batch, std::size_t in, std::size_t out,
                           std::size_t b, const std::uint32_t* __restrict__ row_ptr,
                           const std::uint32_t* __restrict__ col_idx, const float* __restrict__ values,
                           float* __restrict__ y) {
  __shared__ float xs[kTile][kTile + 1];
  __shared__ float ws[kTile][kTile + 1];
  const std::size_t o0 = static_cast<std::size_t>(blockIdx.x) * kTile;
  const std::size_t r0 = static_cast<std::size_t>(blockIdx.y) * kTile;
  const unsigned tx = threadIdx.x, ty = threadIdx.y;
  const std::size_t brow = o0 / b, local = o0 % b;
  const bool row_ok = r0 + ty < batch;
  float acc = 0.0f;
  for (std::uint32_t p = row_ptr[brow]; p < row_ptr[brow + 1]; ++p) {
    const std::size_t c0 = static_cast<std::size_t>(col_idx[p]) * b;
    const float* wb = values + static_cast<std::size_t>(p) * b * b;
    for (std::size_t kk = 0; kk < b; kk += kTile) {
      xs[ty][tx] = row_ok ? x[(r0 + ty) * in + c0 + kk + tx] : 0.0f;
      ws[ty][tx] = wb[(local + ty) * b + kk + tx];  // row (output local+ty), column kk+tx
      __syncthreads();
#pragma unroll
      for (unsigned t = 0; t < kTile; ++t) acc += xs[ty][t] * ws[tx][t];
      __syncthreads();
    }
  }
  if (row_ok) y[(r0 + ty) * out + o0 + tx] = acc;
}

__global__ void sparse24_kernel(const float* __restrict__ x, std::size_t batch, std::size_t in, std::size_t out,
                                const float* __restrict__ values, const std::uint8_t* __restrict__ columns,
                                float* __restrict__ y) {
  const std::size_t kept = in / 2;
  for (std::size_t q = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; q < batch * out;
       q += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t r = q / out, o = q % out;
    const float* v = values + o * kept;
    const std::uint8_t* c = columns + o * kept;
    const float* xr = x + r * in;
    float acc = 0.0f;
    for (std::size_t p = 0; p < kept; ++p) acc += v[p] * xr[(p / 2) * 4 + c[p]];
    y[q] = acc;
  }
}

}  // namespace

namespace cuda {

void gemm_nt(std::span<const float> x, std::size_t batch, std::size_t in, std::span<const float> w, std::size_t out,
             std::span<float> y, Context& ctx) {
  detail::check_gemm_args("gemm_nt", x.size(), batch, in, w.size(), out, y.size());
  cuda_detail::gemm_rm(ctx, false, true, batch, out, in, 1.0f, x.data(), in, w.data(), in, 0.0f, y.data(), out);
}

void bsr_gemm_nt(std::span<const float> x, std::size_t batch, const BsrView& w, std::span<float> y, Context& ctx) {
  detail::check_bsr_args("bsr_gemm_nt", x.size(), batch, w, y.size());
  if (w.block % kTile != 0)
    detail::fail("bsr_gemm_nt", "the CUDA twin needs block to be a multiple of 16, got " + std::to_string(w.block));
  if (batch == 0 || w.rows == 0) return;
  const dim3 grid(static_cast<unsigned>(w.rows / kTile), static_cast<unsigned>((batch + kTile - 1) / kTile));
  bsr_kernel<<<grid, dim3(kTile, kTile), 0, ctx.stream()>>>(x.data(), batch, w.cols, w.rows, w.block, w.row_ptr.data(),
                                                            w.col_idx.data(), w.values.data(), y.data());
  TWINBED_CUDA_CHECK_LAUNCH();
}

void sparse24_gemm_nt(std::span<const float> x, std::size_t batch, const Sparse24View& w, std::span<float> y,
                      Context& ctx) {
  detail::check_24_args("sparse24_gemm_nt", x.size(), batch, w, y.size());
  if (batch * w.rows == 0) return;
  sparse24_kernel<<<cuda_detail::grid_for(batch * w.rows), cuda_detail::kThreads, 0, ctx.stream()>>>(
      x.data(), batch, w.cols, w.rows, w.values.data(), w.columns.data(), y.data());
  TWINBED_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace twinbed::kernels
