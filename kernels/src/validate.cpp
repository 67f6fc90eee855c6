#include "validate.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "quant_math.hpp"

namespace twinbed::kernels::detail {

void fail(const char* kernel, const std::string& what) {
  throw std::invalid_argument(std::string(kernel) + ": " + what);
}

void require_size(const char* kernel, const char* what_a, std::size_t a, const char* what_b, std::size_t b) {
  if (a != b)
    fail(kernel, std::string(what_a) + " has " + std::to_string(a) + " elements but " + what_b + " has " +
                     std::to_string(b));
}

void check_quantize_args(const char* kernel, std::size_t n, const QuantSpec& spec, std::size_t code_bytes,
                         std::size_t scales) {
  check_quant_spec(kernel, spec);
  require_size(kernel, "codes", code_bytes, "quant_code_bytes(n, bits)", quant_code_bytes(n, spec.bits));
  require_size(kernel, "scales", scales, "quant_num_blocks(n, spec)", quant_num_blocks(n, spec));
}

void check_index_range(const char* kernel, std::size_t n) {
  if (n > std::numeric_limits<std::uint32_t>::max())
    fail(kernel, "n = " + std::to_string(n) + " does not fit the uint32 indices of the sparse format");
}

void check_topk_args(const char* kernel, std::size_t n, std::size_t k, std::size_t idx, std::size_t val) {
  check_index_range(kernel, n);
  if (k > n) fail(kernel, "k = " + std::to_string(k) + " exceeds n = " + std::to_string(n));
  require_size(kernel, "indices", idx, "k", k);
  require_size(kernel, "values", val, "k", k);
}

void check_threshold(const char* kernel, float threshold) {
  if (!(threshold > 0.0f) || std::isinf(threshold))
    fail(kernel, "threshold must be positive and finite, got " + std::to_string(threshold));
}

void check_rel_tol(const char* kernel, std::size_t block, float rel_tol) {
  if (block == 0 || block % 8 != 0)
    fail(kernel, "block must be a positive multiple of 8 elements, got " + std::to_string(block));
  if (!(rel_tol > 0.0f)) fail(kernel, "rel_tol must be positive, got " + std::to_string(rel_tol));
}

int bits_for_crest(double max_crest, float rel_tol) {
  const double sqrt12 = std::sqrt(12.0);
  for (int bits : kAdaptiveBits)
    if (max_crest / (sqrt12 * qmax_of(bits)) <= static_cast<double>(rel_tol)) return bits;
  return 16;
}

std::size_t topk_sample_count(std::size_t n) { return n < 8192 ? n : 8192; }

std::size_t topk_sample_rank(std::size_t n, std::size_t k, std::size_t samples) {
  // Expected rank of the k-th largest among `samples` uniform draws is k·s/n; three standard
  // deviations of the binomial count plus a small constant make "fewer than k candidates" rare.
  const double expected = static_cast<double>(k) * static_cast<double>(samples) / static_cast<double>(n);
  return static_cast<std::size_t>(std::ceil(expected + 3.0 * std::sqrt(expected) + 4.0));
}

}  // namespace twinbed::kernels::detail

namespace twinbed::kernels::detail {

void check_gemm_args(const char* kernel, std::size_t x, std::size_t batch, std::size_t in, std::size_t w,
                     std::size_t out, std::size_t y) {
  require_size(kernel, "x", x, "batch·in", batch * in);
  require_size(kernel, "w", w, "out·in", out * in);
  require_size(kernel, "y", y, "batch·out", batch * out);
}

void check_bsr_args(const char* kernel, std::size_t x, std::size_t batch, const BsrView& w, std::size_t y) {
  if (w.block == 0 || w.rows % w.block != 0 || w.cols % w.block != 0)
    fail(kernel, "BSR needs rows (" + std::to_string(w.rows) + ") and cols (" + std::to_string(w.cols) +
                     ") to be multiples of block (" + std::to_string(w.block) + ")");
  require_size(kernel, "row_ptr", w.row_ptr.size(), "rows/block + 1", w.rows / w.block + 1);
  require_size(kernel, "values", w.values.size(), "nnz_blocks·block²", w.col_idx.size() * w.block * w.block);
  require_size(kernel, "x", x, "batch·cols", batch * w.cols);
  require_size(kernel, "y", y, "batch·rows", batch * w.rows);
}

void check_24_args(const char* kernel, std::size_t x, std::size_t batch, const Sparse24View& w, std::size_t y) {
  if (w.cols % 4 != 0) fail(kernel, "2:4 needs cols to be a multiple of 4, got " + std::to_string(w.cols));
  require_size(kernel, "values", w.values.size(), "rows·cols/2", w.rows * w.cols / 2);
  require_size(kernel, "columns", w.columns.size(), "rows·cols/2", w.rows * w.cols / 2);
  require_size(kernel, "x", x, "batch·cols", batch * w.cols);
  require_size(kernel, "y", y, "batch·rows", batch * w.rows);
}

void check_lora_shape(const char* kernel, const LoraShape& s) {
  if (s.rank == 0) fail(kernel, "rank must be positive");
  if (s.rank > s.in || s.rank > s.out)
    fail(kernel, "rank " + std::to_string(s.rank) + " exceeds min(in, out) = " + std::to_string(std::min(s.in, s.out)));
}

}  // namespace twinbed::kernels::detail
