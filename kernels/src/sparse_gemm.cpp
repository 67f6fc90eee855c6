// Dense, block-sparse and 2:4 GEMMs on the CPU. Dense and BSR both go through Eigen's GEMM kernel
// (same ISA, same blocking), so their ratio measures what skipping blocks buys; 2:4 has no hardware
// support on CPUs and runs as a gather loop over a transposed X.
#include "twinbed/kernels/sparse_gemm.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <string>

#include "quant_math.hpp"
#include "validate.hpp"

namespace twinbed::kernels {
namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using CMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using MMap = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
using Idx = Eigen::Index;
Idx ix(std::size_t v) { return static_cast<Idx>(v); }
}  // namespace

BsrMatrix bsr_from_dense(std::span<const float> w, std::size_t rows, std::size_t cols, std::size_t block,
                         std::span<const std::uint8_t> block_mask) {
  if (block == 0 || rows % block != 0 || cols % block != 0)
    detail::fail("bsr_from_dense", "rows and cols must be multiples of block");
  detail::require_size("bsr_from_dense", "w", w.size(), "rows·cols", rows * cols);
  const std::size_t br = rows / block, bc = cols / block;
  detail::require_size("bsr_from_dense", "block_mask", block_mask.size(), "(rows/b)·(cols/b)", br * bc);
  BsrMatrix m{rows, cols, block, {}, {}, {}};
  m.row_ptr.push_back(0);
  for (std::size_t i = 0; i < br; ++i) {
    for (std::size_t j = 0; j < bc; ++j) {
      if (block_mask[i * bc + j] == 0) continue;
      m.col_idx.push_back(static_cast<std::uint32_t>(j));
      for (std::size_t r = 0; r < block; ++r)
        for (std::size_t c = 0; c < block; ++c) m.values.push_back(w[(i * block + r) * cols + j * block + c]);
    }
    m.row_ptr.push_back(static_cast<std::uint32_t>(m.col_idx.size()));
  }
  return m;
}

Sparse24Matrix prune_24(std::span<const float> w, std::size_t rows, std::size_t cols) {
  if (cols % 4 != 0) detail::fail("prune_24", "cols must be a multiple of 4, got " + std::to_string(cols));
  detail::require_size("prune_24", "w", w.size(), "rows·cols", rows * cols);
  Sparse24Matrix m{rows, cols, {}, {}};
  m.values.reserve(rows * cols / 2);
  m.columns.reserve(rows * cols / 2);
  for (std::size_t g = 0; g < rows * cols; g += 4) {
    // Same rule as cpu::mask_nm: keep an entry that fewer than two entries of its group beat.
    for (std::size_t i = 0; i < 4; ++i) {
      const std::uint32_t ki = detail::magnitude_key(w[g + i]);
      int beaten_by = 0;
      for (std::size_t j = 0; j < 4; ++j) {
        const std::uint32_t kj = detail::magnitude_key(w[g + j]);
        beaten_by += (kj > ki || (kj == ki && j < i)) ? 1 : 0;
      }
      if (beaten_by < 2) {
        m.values.push_back(w[g + i]);
        m.columns.push_back(static_cast<std::uint8_t>(i));
      }
    }
  }
  return m;
}

std::vector<float> densify_24(const Sparse24View& w) {
  std::vector<float> d(w.rows * w.cols, 0.0f);
  for (std::size_t p = 0; p < w.values.size(); ++p) d[(p / 2) * 4 + w.columns[p]] = w.values[p];
  return d;
}

namespace cpu {

void gemm_nt(std::span<const float> x, std::size_t batch, std::size_t in, std::span<const float> w, std::size_t out,
             std::span<float> y) {
  detail::check_gemm_args("gemm_nt", x.size(), batch, in, w.size(), out, y.size());
  CMap X(x.data(), ix(batch), ix(in), Eigen::OuterStride<>(ix(in)));
  CMap W(w.data(), ix(out), ix(in), Eigen::OuterStride<>(ix(in)));
  MMap Y(y.data(), ix(batch), ix(out), Eigen::OuterStride<>(ix(out)));
  Y.noalias() = X * W.transpose();
}

void bsr_gemm_nt(std::span<const float> x, std::size_t batch, const BsrView& w, std::span<float> y) {
  detail::check_bsr_args("bsr_gemm_nt", x.size(), batch, w, y.size());
  const std::size_t b = w.block;
  const Idx ld_x = ix(w.cols), ld_y = ix(w.rows);
  for (std::size_t i = 0; i + 1 < w.row_ptr.size(); ++i) {
    // Y[:, block row i] = Σ over the stored blocks (i, j) of X[:, block col j] · W_ijᵀ.
    MMap Yi(y.data() + i * b, ix(batch), ix(b), Eigen::OuterStride<>(ld_y));
    Yi.setZero();
    for (std::uint32_t p = w.row_ptr[i]; p < w.row_ptr[i + 1]; ++p) {
      CMap Xj(x.data() + std::size_t{w.col_idx[p]} * b, ix(batch), ix(b), Eigen::OuterStride<>(ld_x));
      CMap Wij(w.values.data() + std::size_t{p} * b * b, ix(b), ix(b), Eigen::OuterStride<>(ix(b)));
      Yi.noalias() += Xj * Wij.transpose();
    }
  }
}

void sparse24_gemm_nt(std::span<const float> x, std::size_t batch, const Sparse24View& w, std::span<float> y) {
  detail::check_24_args("sparse24_gemm_nt", x.size(), batch, w, y.size());
  const std::size_t in = w.cols, out = w.rows, kept = in / 2;
  // Xᵀ (in × batch) makes the batch dimension contiguous: each kept weight then scales one
  // contiguous row segment (an axpy the compiler vectorises). Tiles of 16 batch columns keep the
  // accumulators in registers.
  RowMat Xt = CMap(x.data(), ix(batch), ix(in), Eigen::OuterStride<>(ix(in))).transpose();
  constexpr std::size_t T = 16;
  std::vector<float> col_buf(T);
  for (std::size_t t0 = 0; t0 < batch; t0 += T) {
    const std::size_t tw = std::min(T, batch - t0);
    for (std::size_t o = 0; o < out; ++o) {
      const float* v = w.values.data() + o * kept;
      const std::uint8_t* c = w.columns.data() + o * kept;
      float acc[T] = {};
      for (std::size_t p = 0; p < kept; ++p) {
        const float* xr = Xt.data() + ((p / 2) * 4 + c[p]) * batch + t0;
        const float vp = v[p];
        if (tw == T) {
          for (std::size_t t = 0; t < T; ++t) acc[t] += vp * xr[t];
        } else {
          for (std::size_t t = 0; t < tw; ++t) acc[t] += vp * xr[t];
        }
      }
      for (std::size_t t = 0; t < tw; ++t) y[(t0 + t) * out + o] = acc[t];
    }
  }
}

}  // namespace cpu
}  // namespace twinbed::kernels
