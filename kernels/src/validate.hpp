// Argument checks shared by the CPU kernels and their CUDA twins, so both reject the same inputs
// with the same message ("<kernel>: <what>").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "twinbed/kernels/tgc.hpp"

namespace twinbed::kernels::detail {

[[noreturn]] void fail(const char* kernel, const std::string& what);
// Throws "<kernel>: <what_a> has <a> elements but <what_b> has <b>" unless a == b.
void require_size(const char* kernel, const char* what_a, std::size_t a, const char* what_b, std::size_t b);
void check_quantize_args(const char* kernel, std::size_t n, const QuantSpec& spec, std::size_t code_bytes,
                         std::size_t scales);
void check_index_range(const char* kernel, std::size_t n);  // n must fit uint32 indices
void check_topk_args(const char* kernel, std::size_t n, std::size_t k, std::size_t idx, std::size_t val);
void check_threshold(const char* kernel, float threshold);
void check_rel_tol(const char* kernel, std::size_t block, float rel_tol);
// The adaptive rule's decision from the largest crest factor amax/rms over the non-zero blocks.
int bits_for_crest(double max_crest, float rel_tol);
// Number of samples the top-k candidate filter draws, and the rank (1-based, from the top) of the
// sampled key used as the candidates' lower bound; rank > samples means "take every element".
std::size_t topk_sample_count(std::size_t n);
std::size_t topk_sample_rank(std::size_t n, std::size_t k, std::size_t samples);

}  // namespace twinbed::kernels::detail

#include "twinbed/kernels/lora.hpp"
#include "twinbed/kernels/sparse_gemm.hpp"

namespace twinbed::kernels::detail {
void check_gemm_args(const char* kernel, std::size_t x, std::size_t batch, std::size_t in, std::size_t w,
                     std::size_t out, std::size_t y);
void check_bsr_args(const char* kernel, std::size_t x, std::size_t batch, const BsrView& w, std::size_t y);
void check_24_args(const char* kernel, std::size_t x, std::size_t batch, const Sparse24View& w, std::size_t y);
void check_lora_shape(const char* kernel, const LoraShape& s);
}  // namespace twinbed::kernels::detail
