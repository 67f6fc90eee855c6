// TGC — three-level gradient compression (seed 004, claim TGC-AR): adaptive-width quantisation,
// sparse transmission of the important entries, and error feedback so that nothing is lost.
//
// All tensors are fp32, flattened; sizes are element counts unless a name ends in `_bytes`.
// Outputs are caller-owned spans that must have exactly the documented size (checked; mismatches
// throw std::invalid_argument naming the kernel and both sizes). Every CPU kernel here is O(n),
// single-threaded and re-entrant; the CUDA twins take device spans and a cuda::Context.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "twinbed/kernels/common.hpp"
#include "twinbed/kernels/payload.hpp"
#if TWINBED_KERNELS_HAVE_CUDA
#include "twinbed/kernels/cuda_context.hpp"
#endif

namespace twinbed::kernels {

// ---- quantisation -------------------------------------------------------------------------------
//
// Format (symmetric, per-block scale). bits b ∈ {2, 4, 8, 16}; qmax = 2^(b-1) − 1 (1, 7, 127, 32767).
// The tensor is cut into blocks of `block` elements (the last may be shorter). For block j with
// amax_j = max |x| over the block: scale_j = amax_j / qmax (fp32, stored), and element i of the
// block becomes q_i = clamp(floor(x_i · (qmax / amax_j) + u_i), −qmax, qmax) with u_i = 0.5
// (nearest, ties towards +inf) or u_i ~ U[0,1) from rng::uniform(rng::key(seed, i), i) (stochastic,
// unbiased). An all-zero block has scale 0 and codes for 0. Stored code c_i = q_i + qmax, packed
// little-endian and LSB-first: element i occupies bits [i·b, i·b + b) of the code stream, so the code
// stream has ceil(n·b / 8) bytes; 16-bit codes are little-endian uint16. `block` must be a positive
// multiple of 8 so that every block starts on a byte boundary.
// Dequantised value: (c_i − qmax) · scale_j.
// Error bound per element: |x − x̂| ≤ scale_j/2 (nearest) and < scale_j (stochastic), plus fp32
// rounding of the two multiplies (a few ulps of amax_j).
// CPU and CUDA produce bit-identical codes and scales (same rounding steps, no FMA contraction).
// Rounding, QuantSpec and the exact payload sizes (quant_num_blocks, quant_code_bytes,
// quant_payload_bytes, sparse_payload_bytes, sparse_quant_payload_bytes) are in payload.hpp: the
// simulator's TGC pass charges them too.

// Adaptive bit-width rule (the seed's "4–16 bit dynamic width"). Signal: each block's crest factor
// c_j = amax_j / rms_j. A uniform quantiser with step s_j = amax_j/qmax adds noise of RMS s_j/√12, i.e.
// a relative error of c_j / (√12 · qmax). The rule returns the smallest b ∈ {4, 8, 16} such that
// every non-zero block meets c_j / (√12 · qmax(b)) ≤ rel_tol, and 16 when none does (all-zero or
// empty input: 4). rel_tol > 0. The CUDA twin agrees except when a block's crest lies within fp32
// rounding of a threshold (its sums are reduced in a different order).
inline constexpr int kAdaptiveBits[] = {4, 8, 16};

namespace cpu {

// codes.size() == quant_code_bytes(x.size(), bits); scales.size() == quant_num_blocks(x.size()).
void quantize(std::span<const float> x, const QuantSpec& spec, std::span<std::uint8_t> codes,
              std::span<float> scales);
// Inverse of quantize: x.size() elements from codes and scales of the same spec.
void dequantize(std::span<const std::uint8_t> codes, std::span<const float> scales, const QuantSpec& spec,
                std::span<float> x);
int choose_bits(std::span<const float> x, std::size_t block, float rel_tol);

}  // namespace cpu

// ---- sparsification -----------------------------------------------------------------------------
//
// Magnitude order: |x| compared as the IEEE bit pattern with the sign cleared (a total order on
// non-NaN values; a NaN ranks above +inf). Ties: at equal magnitude the LOWER index wins.
// Sparse outputs are (index, value) pairs in two parallel arrays, indices ascending, uint32 (so
// n must be < 2^32).
namespace cpu {

// Exact top-k by magnitude: writes the k entries with the largest |x| (ties as above) to
// indices/values (both of size k, ascending index). k ≤ n. Returns k.
// Method: a stratified sample estimates a magnitude that at least k entries reach, one streaming
// pass compacts the candidates above it, and a radix select over the candidates' magnitude bits
// (MSD digits of 11, 11 and 9 bits, no comparison sort) finds the exact k-th magnitude and the
// count above it; one pass over the candidates then keeps those above and the lowest-index ties.
// A too-high estimate falls back to all n as candidates. O(n + k); allocates O(k) scratch
// (O(n) for a tensor whose magnitudes defeat the sample).
std::size_t topk(std::span<const float> x, std::size_t k, std::span<std::uint32_t> indices,
                 std::span<float> values);

// Deep-gradient-compression threshold: the k-th largest magnitude of `samples` entries drawn by
// stratified sampling (one uniformly random entry in each of `samples` equal strata; the draw uses
// rng with `seed`). An estimate: selecting |x| ≥ it keeps about k entries, not exactly k.
// 1 ≤ k ≤ n, 1 ≤ samples; samples > n is clamped to n (then the result is exact).
float estimate_topk_threshold(std::span<const float> x, std::size_t k, std::size_t samples,
                              std::uint64_t seed);

// Threshold selection: every i with |x_i| ≥ threshold (threshold > 0), in index order. Writes the
// first min(count, capacity) of them, capacity = indices.size() == values.size(), and returns the
// total count (a return above capacity means the output was truncated). Slots past the count are
// scratch: the vector path may overwrite up to 7 of them. One streaming pass, branch-free where
// AVX2 is available (see README "Technique kernels"), so its cost hardly depends on the density.
std::size_t sparsify_threshold(std::span<const float> x, float threshold, std::span<std::uint32_t> indices,
                               std::span<float> values);

// out[indices[i]] += values[i]. indices.size() == values.size(); an index ≥ out.size() throws
// std::out_of_range (the CUDA twin cannot throw from the device and skips such entries instead).
void scatter_add(std::span<const std::uint32_t> indices, std::span<const float> values, std::span<float> out);

// ---- error feedback (Seide et al. 2014; Karimireddy et al. 2019) ---------------------------------
// The residual e carries what compression dropped: acc = g + e; transmit C(acc); e ← acc − C(acc).
// Summed over steps, transmitted + final residual equals the sum of the gradients exactly up to
// fp rounding: nothing is lost, only delayed.

// e ← e + g (the first half, for compressors not fused below, e.g. exact top-k). Sizes equal.
void ef_accumulate(std::span<const float> g, std::span<float> e);
// e[indices[i]] ← 0: the second half after a sparse compressor transmitted those entries of e.
void ef_clear_sent(std::span<const std::uint32_t> indices, std::span<float> e);
// Fused quantising step: acc = g + e; codes/scales ← quantize(acc); e ← acc − dequantize(codes).
void ef_quantize(std::span<const float> g, std::span<float> e, const QuantSpec& spec,
                 std::span<std::uint8_t> codes, std::span<float> scales);
// Fused threshold step: acc = g + e; the first min(count, capacity) entries with |acc| ≥ threshold
// are written out and zeroed in e, everything else stays in e (including selected entries beyond
// capacity, so truncation loses nothing). Returns the total count, and uses the slots past it as
// scratch, as sparsify_threshold does. One pass: reads g and e, writes e and the selected entries.
std::size_t ef_sparsify_threshold(std::span<const float> g, std::span<float> e, float threshold,
                                  std::span<std::uint32_t> indices, std::span<float> values);

}  // namespace cpu

#if TWINBED_KERNELS_HAVE_CUDA
// CUDA twins: same arguments over device spans, then the Context. Asynchronous on ctx.stream()
// except those returning a count (topk, sparsify_threshold, ef_sparsify_threshold, choose_bits,
// estimate_topk_threshold), which synchronise it. Scratch memory is allocated per call.
namespace cuda {
void quantize(std::span<const float> x, const QuantSpec& spec, std::span<std::uint8_t> codes,
              std::span<float> scales, Context& ctx);
void dequantize(std::span<const std::uint8_t> codes, std::span<const float> scales, const QuantSpec& spec,
                std::span<float> x, Context& ctx);
int choose_bits(std::span<const float> x, std::size_t block, float rel_tol, Context& ctx);
std::size_t topk(std::span<const float> x, std::size_t k, std::span<std::uint32_t> indices,
                 std::span<float> values, Context& ctx);
float estimate_topk_threshold(std::span<const float> x, std::size_t k, std::size_t samples,
                              std::uint64_t seed, Context& ctx);
std::size_t sparsify_threshold(std::span<const float> x, float threshold, std::span<std::uint32_t> indices,
                               std::span<float> values, Context& ctx);
void scatter_add(std::span<const std::uint32_t> indices, std::span<const float> values, std::span<float> out,
                 Context& ctx);
void ef_accumulate(std::span<const float> g, std::span<float> e, Context& ctx);
void ef_clear_sent(std::span<const std::uint32_t> indices, std::span<float> e, Context& ctx);
void ef_quantize(std::span<const float> g, std::span<float> e, const QuantSpec& spec,
                 std::span<std::uint8_t> codes, std::span<float> scales, Context& ctx);
std::size_t ef_sparsify_threshold(std::span<const float> g, std::span<float> e, float threshold,
                                  std::span<std::uint32_t> indices, std::span<float> values, Context& ctx);
}  // namespace cuda
#endif

}  // namespace twinbed::kernels
