// TGC quantisation, CPU reference. The streaming loops are written so that GCC vectorises them:
// tiles of a few blocks that stay in L1 get two passes (every block's max |x| and scale, then every
// block's codes, while later tiles are prefetched), codes are formed in chunks of a constant length
// and packed with shifts and narrowing conversions, no branch per element, and the quantising
// drivers are cloned for AVX-512, AVX2 and SSE4.2 (see simd.hpp). Memory traffic is one read of the
// input and one write of the codes.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "quant_math.hpp"
#include "simd.hpp"
#include "twinbed/kernels/rng.hpp"
#include "twinbed/kernels/tgc.hpp"
#include "validate.hpp"

static_assert(std::endian::native == std::endian::little, "the packed code format is little-endian");

namespace twinbed::kernels {

namespace {

using detail::quant_code;

TWINBED_INLINE float block_amax(const float* __restrict x, std::size_t len) {
  // Integer max over the sign-cleared bits: vectorises without -ffast-math (a float max reduction
  // does not, because of NaN and signed-zero semantics) and equals max |x| for finite inputs.
  std::uint32_t m = 0;
  for (std::size_t i = 0; i < len; ++i) {
    std::uint32_t u;
    std::memcpy(&u, x + i, sizeof u);
    u &= 0x7fffffffU;
    m = u > m ? u : m;
  }
  return std::bit_cast<float>(m);
}

// Codes are formed kChunk at a time into a small buffer (a constant trip count, so no vector
// epilogue), then packed.
constexpr std::size_t kChunk = 64;

// Packs the kChunk codes of c (each < 2^Bits) LSB-first into kChunk·Bits/8 bytes.
template <int Bits>
TWINBED_INLINE void pack(const std::uint32_t* __restrict c, std::uint8_t* __restrict out) {
  if constexpr (Bits == 16) {
    for (std::size_t i = 0; i < kChunk; ++i) {
      const auto v = static_cast<std::uint16_t>(c[i]);
      std::memcpy(out + 2 * i, &v, sizeof v);
    }
  } else if constexpr (Bits == 8) {
    for (std::size_t i = 0; i < kChunk; ++i) out[i] = static_cast<std::uint8_t>(c[i]);
  } else {
    // Two adjacent codes read as one little-endian 64-bit word w = c0 + c1·2^32 give c0 | c1 << b in
    // the low bits of w | w >> (32 − b): a shift and an or per pair, then a narrowing. Four-bit
    // results are bytes; two-bit ones (c0 | c1 << 2) are paired once more the same way. GCC/Clang
    // vector types, so that the AVX-512 clone narrows with one vpmovqb per 16 codes (the AVX2 one
    // extracts lanes, about as fast as the byte loop this replaced; loops left to the vectoriser
    // came out 10-40% slower in one clone or the other).
    using U64x8 = std::uint64_t __attribute__((vector_size(64)));
    using U32x8 = std::uint32_t __attribute__((vector_size(32)));
    using U64x4 = std::uint64_t __attribute__((vector_size(32)));
    using U8x8 = std::uint8_t __attribute__((vector_size(8)));
    using U8x4 = std::uint8_t __attribute__((vector_size(4)));
    for (std::size_t i = 0; i < kChunk / 16; ++i) {
      U64x8 w;
      std::memcpy(&w, c + 16 * i, sizeof w);
      if constexpr (Bits == 4) {
        w |= w >> 28;
        const U8x8 bytes = __builtin_convertvector(w, U8x8);
        std::memcpy(out + 8 * i, &bytes, sizeof bytes);
      } else {
        static_assert(Bits == 2);
        w |= w >> 30;
        const U32x8 nibbles = __builtin_convertvector(w, U32x8);
        U64x4 w2;
        std::memcpy(&w2, &nibbles, sizeof w2);
        w2 |= w2 >> 28;
        const U8x4 bytes = __builtin_convertvector(w2, U8x4);
        std::memcpy(out + 4 * i, &bytes, sizeof bytes);
      }
    }
  }
}

// Codes of one block, or of its part up to an index that is a multiple of 2^32 (len elements of src,
// the first with index low word lo and stream key `key`), packed into out. With EF, also
// e_out = src − x̂.
template <int Bits, bool Stochastic, bool EF>
TWINBED_INLINE void quant_block(const float* __restrict src, float* __restrict e_out, std::size_t len, float scale,
                                float inv, std::uint32_t key, std::uint32_t lo, std::uint8_t* __restrict out) {
  constexpr int qmax = detail::qmax_of(Bits);
  std::uint32_t c[kChunk];
  // c[k] = code of src[at + k] for k < count.
  auto encode = [&](std::size_t at, std::size_t count) {
    const std::uint32_t ctr = lo + static_cast<std::uint32_t>(at);
    for (std::uint32_t k = 0; k < count; ++k) {
      const float u = Stochastic ? rng::uniform(key, ctr + k) : 0.5f;
      const float v = src[at + k];
      c[k] = quant_code(v, inv, qmax, u);
      if constexpr (EF) e_out[at + k] = v - detail::dequant_value(c[k], qmax, scale);
    }
  };
  std::size_t done = 0;
  for (; done + kChunk <= len; done += kChunk) {
    encode(done, kChunk);
    pack<Bits>(c, out + done * Bits / 8);
  }
  if (done < len) {  // the last, partial chunk: packed whole (zero codes past len), stored in part
    const std::size_t rest = len - done;
    std::fill(c + rest, c + kChunk, 0U);
    encode(done, rest);
    std::uint8_t packed[kChunk * Bits / 8];
    pack<Bits>(c, packed);
    std::memcpy(out + done * Bits / 8, packed, (rest * Bits + 7) / 8);
  }
}

// Elements per tile (4 KiB of fp32; one block if blocks are larger). A tile's blocks get their scales
// in one pass and their codes in a second, so one block's max reduction and divisions overlap the
// others' instead of stalling its codes; the tile stays in L1 between the passes. The second pass
// issues no loads from memory, so it prefetches kPrefetchElems ahead: the hardware prefetcher alone
// leaves memory idle there. Measured (64 MiB, AVX-512): 4 KiB tiles beat one block and 8 or 16 KiB;
// prefetching 16 KiB ahead beat 4 KiB (by 10-30% for nearest rounding) and 24-32 KiB.
constexpr std::size_t kTileElems = 1024;
constexpr std::size_t kPrefetchElems = 4096;

// Drives the tiles. For EF, g + e is formed per tile in `acc`, and e is overwritten with the residual.
template <int Bits, bool Stochastic, bool EF>
TWINBED_INLINE void quantize_all(const float* g, float* e, std::size_t n, const QuantSpec& spec, std::uint8_t* codes,
                                 float* scales) {
  constexpr int qmax = detail::qmax_of(Bits);
  const std::size_t block = spec.block;
  const std::size_t tile = std::max<std::size_t>(1, kTileElems / block) * block;
  const std::size_t ahead = std::max(tile, kPrefetchElems);
  std::vector<float> acc(EF ? std::min(tile, n) : 0);
  std::vector<float> inv(tile / block);
  std::uint64_t key_hi = 0;  // the stream key of indices [key_hi·2^32, (key_hi + 1)·2^32)
  std::uint32_t key = rng::key(spec.seed, 0);
  for (std::size_t t0 = 0; t0 < n; t0 += tile) {
    const std::size_t tlen = std::min(tile, n - t0);
    const float* src = g + t0;
    if constexpr (EF) {
      float* __restrict a = acc.data();
      const float* __restrict gs = g + t0;
      const float* __restrict es = e + t0;
      for (std::size_t i = 0; i < tlen; ++i) a[i] = gs[i] + es[i];
      src = a;
    }
    // Pass 1: each block's scale and inverse scale from its max |x|.
    for (std::size_t s = 0; s < tlen; s += block) {
      const float amax = block_amax(src + s, std::min(block, tlen - s));
      scales[(t0 + s) / block] = detail::scale_of(amax, qmax);
      inv[s / block] = detail::inv_scale_of(amax, qmax);
    }
    // Pass 2: each block's codes, and a prefetch of the elements `ahead` further on (a line of 16
    // floats at a time). The stream key changes where the index crosses a multiple of 2^32 (block
    // starts are multiples of 8, and so is 2^32, so the split falls on a byte of the codes).
    for (std::size_t s = 0; s < tlen; s += block) {
      const std::size_t len = std::min(block, tlen - s);
      if (t0 + ahead + s + len <= n) {
        for (std::size_t i = 0; i < len; i += 16) {
          __builtin_prefetch(g + t0 + ahead + s + i);
          if constexpr (EF) __builtin_prefetch(e + t0 + ahead + s + i);
        }
      }
      for (std::size_t done = 0; done < len;) {
        const std::uint64_t index = t0 + s + done;
        if (Stochastic && index >> 32 != key_hi) {
          key_hi = index >> 32;
          key = rng::key(spec.seed, index);
        }
        const std::uint64_t next_wrap = ((index >> 32) + 1) << 32;
        const std::size_t seg = static_cast<std::size_t>(std::min<std::uint64_t>(len - done, next_wrap - index));
        quant_block<Bits, Stochastic, EF>(src + s + done, EF ? e + index : nullptr, seg, scales[(t0 + s) / block],
                                          inv[s / block], key, static_cast<std::uint32_t>(index),
                                          codes + index * Bits / 8);
        done += seg;
      }
    }
  }
}

template <bool EF>
TWINBED_INLINE void quantize_dispatch(const float* g, float* e, std::size_t n, const QuantSpec& spec,
                                      std::uint8_t* codes, float* scales) {
  const bool st = spec.rounding == Rounding::stochastic;
  switch (spec.bits) {
    case 2: st ? quantize_all<2, true, EF>(g, e, n, spec, codes, scales) : quantize_all<2, false, EF>(g, e, n, spec, codes, scales); break;
    case 4: st ? quantize_all<4, true, EF>(g, e, n, spec, codes, scales) : quantize_all<4, false, EF>(g, e, n, spec, codes, scales); break;
    case 8: st ? quantize_all<8, true, EF>(g, e, n, spec, codes, scales) : quantize_all<8, false, EF>(g, e, n, spec, codes, scales); break;
    default: st ? quantize_all<16, true, EF>(g, e, n, spec, codes, scales) : quantize_all<16, false, EF>(g, e, n, spec, codes, scales); break;
  }
}

TWINBED_CLONES_AVX512 void quantize_impl(const float* x, std::size_t n, const QuantSpec& spec, std::uint8_t* codes,
                                  float* scales) {
  quantize_dispatch<false>(x, nullptr, n, spec, codes, scales);
}

TWINBED_CLONES_AVX512 void ef_quantize_impl(const float* g, float* e, std::size_t n, const QuantSpec& spec,
                                     std::uint8_t* codes, float* scales) {
  quantize_dispatch<true>(g, e, n, spec, codes, scales);
}

template <int Bits>
TWINBED_INLINE void dequant_all(const std::uint8_t* codes, const float* scales, std::size_t n, std::size_t block,
                                float* x) {
  constexpr int qmax = detail::qmax_of(Bits);
  std::size_t b = 0;
  for (std::size_t start = 0; start < n; start += block, ++b) {
    const std::size_t len = std::min(block, n - start);
    const float scale = scales[b];
    const std::uint8_t* __restrict in = codes + start * Bits / 8;
    float* __restrict out = x + start;
    if constexpr (Bits == 8) {
      for (std::size_t i = 0; i < len; ++i) out[i] = detail::dequant_value(in[i], qmax, scale);
    } else if constexpr (Bits == 16) {
      for (std::size_t i = 0; i < len; ++i) {
        std::uint16_t c;
        std::memcpy(&c, in + 2 * i, sizeof c);
        out[i] = detail::dequant_value(c, qmax, scale);
      }
    } else {
      constexpr std::size_t per = 8 / Bits;
      constexpr std::uint32_t mask = (1U << Bits) - 1U;
      const std::size_t full = len / per;
      for (std::size_t j = 0; j < full; ++j) {
        const std::uint32_t byte = in[j];
        for (std::size_t t = 0; t < per; ++t)
          out[j * per + t] = detail::dequant_value((byte >> (Bits * t)) & mask, qmax, scale);
      }
      for (std::size_t t = 0; full * per + t < len; ++t)
        out[full * per + t] = detail::dequant_value((in[full] >> (Bits * t)) & mask, qmax, scale);
    }
  }
}

TWINBED_CLONES void dequantize_impl(const std::uint8_t* codes, const float* scales, std::size_t n, int bits,
                                    std::size_t block, float* x) {
  switch (bits) {
    case 2: dequant_all<2>(codes, scales, n, block, x); break;
    case 4: dequant_all<4>(codes, scales, n, block, x); break;
    case 8: dequant_all<8>(codes, scales, n, block, x); break;
    default: dequant_all<16>(codes, scales, n, block, x); break;
  }
}

}  // namespace

namespace cpu {

void quantize(std::span<const float> x, const QuantSpec& spec, std::span<std::uint8_t> codes,
              std::span<float> scales) {
  detail::check_quantize_args("quantize", x.size(), spec, codes.size(), scales.size());
  quantize_impl(x.data(), x.size(), spec, codes.data(), scales.data());
}

void dequantize(std::span<const std::uint8_t> codes, std::span<const float> scales, const QuantSpec& spec,
                std::span<float> x) {
  detail::check_quantize_args("dequantize", x.size(), spec, codes.size(), scales.size());
  dequantize_impl(codes.data(), scales.data(), x.size(), spec.bits, spec.block, x.data());
}

void ef_quantize(std::span<const float> g, std::span<float> e, const QuantSpec& spec, std::span<std::uint8_t> codes,
                 std::span<float> scales) {
  detail::require_size("ef_quantize", "g", g.size(), "e", e.size());
  detail::check_quantize_args("ef_quantize", g.size(), spec, codes.size(), scales.size());
  ef_quantize_impl(g.data(), e.data(), g.size(), spec, codes.data(), scales.data());
}

int choose_bits(std::span<const float> x, std::size_t block, float rel_tol) {
  detail::check_rel_tol("choose_bits", block, rel_tol);
  double max_crest = 0.0;
  for (std::size_t start = 0; start < x.size(); start += block) {
    const std::size_t len = std::min(block, x.size() - start);
    float amax = 0.0f;
    float sumsq = 0.0f;
    for (std::size_t i = 0; i < len; ++i) {
      const float v = x[start + i];
      amax = std::max(amax, std::fabs(v));
      sumsq += v * v;
    }
    if (amax == 0.0f || sumsq == 0.0f) continue;
    const double rms = std::sqrt(static_cast<double>(sumsq) / static_cast<double>(len));
    max_crest = std::max(max_crest, static_cast<double>(amax) / rms);
  }
  if (max_crest == 0.0) return kAdaptiveBits[0];
  return detail::bits_for_crest(max_crest, rel_tol);
}

}  // namespace cpu
}  // namespace twinbed::kernels
