// The GEMM paths through which DSA's granularities can (or cannot) turn fewer FLOPs into less time:
// dense, block-sparse (BSR, b×b blocks) and 2:4-pruned, all computing Y = X · Wᵀ with
// X: batch × in, W: out × in (a linear layer's weight), Y: batch × out, row-major fp32.
//
// Formats (host-owned by the *Matrix structs; the *View structs borrow, and may point at device
// memory for the CUDA twins):
//  - BSR: rows and cols multiples of `block`; row_ptr has rows/block + 1 entries, col_idx the block
//    column of each stored block (ascending within a block row), values block·block floats per stored
//    block, each block row-major.
//  - 2:4: cols a multiple of 4; in every group of 4 consecutive columns of a row exactly 2 entries are
//    kept: values (rows·cols/2) holds them in column order, and columns (same length) their position
//    0..3 inside the group.
// Costs: dense 2·batch·in·out FLOPs; BSR 2·batch·nnz_blocks·block²; 2:4 batch·in·out. The CPU paths
// are single-threaded; dense and BSR run through Eigen's GEMM kernel, 2:4 through a gather loop (CPUs
// have no 2:4 hardware, so expect little or no speedup there — the benchmark measures it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "twinbed/kernels/common.hpp"
#if TWINBED_KERNELS_HAVE_CUDA
#include "twinbed/kernels/cuda_context.hpp"
#endif

namespace twinbed::kernels {

struct BsrView {
  std::size_t rows = 0, cols = 0, block = 0;
  std::span<const std::uint32_t> row_ptr;
  std::span<const std::uint32_t> col_idx;
  std::span<const float> values;
};

struct BsrMatrix {
  std::size_t rows = 0, cols = 0, block = 0;
  std::vector<std::uint32_t> row_ptr, col_idx;
  std::vector<float> values;
  BsrView view() const { return {rows, cols, block, row_ptr, col_idx, values}; }
  std::size_t nnz_blocks() const { return col_idx.size(); }
};

// Keeps the blocks whose block_mask byte is non-zero (block_mask as produced by cpu::mask_block:
// (rows/block)·(cols/block) bytes, row-major). w is rows·cols.
BsrMatrix bsr_from_dense(std::span<const float> w, std::size_t rows, std::size_t cols, std::size_t block,
                         std::span<const std::uint8_t> block_mask);

struct Sparse24View {
  std::size_t rows = 0, cols = 0;
  std::span<const float> values;
  std::span<const std::uint8_t> columns;
};

struct Sparse24Matrix {
  std::size_t rows = 0, cols = 0;
  std::vector<float> values;
  std::vector<std::uint8_t> columns;
  Sparse24View view() const { return {rows, cols, values, columns}; }
};

// Magnitude pruning to 2:4: keeps the two largest |w| of every group of four (ties: lower column).
Sparse24Matrix prune_24(std::span<const float> w, std::size_t rows, std::size_t cols);
// The pruned matrix back in dense form (zeros where pruned), rows·cols.
std::vector<float> densify_24(const Sparse24View& w);

namespace cpu {
// Dense reference: Y = X·Wᵀ; x is batch·in, w out·in, y batch·out.
void gemm_nt(std::span<const float> x, std::size_t batch, std::size_t in, std::span<const float> w, std::size_t out,
             std::span<float> y);
void bsr_gemm_nt(std::span<const float> x, std::size_t batch, const BsrView& w, std::span<float> y);
void sparse24_gemm_nt(std::span<const float> x, std::size_t batch, const Sparse24View& w, std::span<float> y);
}  // namespace cpu

#if TWINBED_KERNELS_HAVE_CUDA
// CUDA twins: dense through cuBLAS; BSR through a tiled kernel (one 16×16 output tile per thread
// block, looping over the block row's stored blocks; the CUDA twin needs block % 16 == 0);
// 2:4 through a plain gather kernel. The hardware 2:4 path (sparse tensor cores) needs cuSPARSELt,
// which this build does not use — cuda::sparse24_gemm_nt is the correctness twin, not the fast path.
namespace cuda {
void gemm_nt(std::span<const float> x, std::size_t batch, std::size_t in, std::span<const float> w, std::size_t out,
             std::span<float> y, Context& ctx);
void bsr_gemm_nt(std::span<const float> x, std::size_t batch, const BsrView& w, std::span<float> y, Context& ctx);
void sparse24_gemm_nt(std::span<const float> x, std::size_t batch, const Sparse24View& w, std::span<float> y,
                      Context& ctx);
}  // namespace cuda
#endif

}  // namespace twinbed::kernels
