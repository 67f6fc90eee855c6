// TGC quantisation, CPU reference. The streaming loops are written so that GCC vectorises them:
// per-block work in two short passes over a block that sits in L1 (max |x|, then codes), no branch
// per element, packing with a compile-time number of codes per byte, and the hot drivers cloned for
// AVX2 (see simd.hpp). Memory traffic is one read of the input and one write of the codes.
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

// Codes of one block from src (len elements), packed into out. With EF, also e_out = src − x̂.
template <int Bits, bool Stochastic, bool EF>
TWINBED_INLINE void quant_block(const float* __restrict src, float* __restrict e_out, std::size_t len, float scale,
                                float inv, std::uint32_t key, std::uint32_t base_lo, std::uint8_t* __restrict out) {
  constexpr int qmax = detail::qmax_of(Bits);
  auto code = [&](std::size_t i) -> std::uint32_t {
    float u = 0.5f;
    if constexpr (Stochastic)
      u = static_cast<float>(rng::mix32((base_lo + static_cast<std::uint32_t>(i)) ^ key) >> 8) *
          (1.0f / 16777216.0f);
    const std::uint32_t c = quant_code(src[i], inv, qmax, u);
    if constexpr (EF) e_out[i] = src[i] - detail::dequant_value(c, qmax, scale);
    return c;
  };
  if constexpr (Bits == 8) {
    for (std::size_t i = 0; i < len; ++i) out[i] = static_cast<std::uint8_t>(code(i));
  } else if constexpr (Bits == 16) {
    for (std::size_t i = 0; i < len; ++i) {
      const auto c = static_cast<std::uint16_t>(code(i));
      std::memcpy(out + 2 * i, &c, sizeof c);
    }
  } else {
    constexpr std::size_t per = 8 / Bits;
    const std::size_t full = len / per;
    for (std::size_t j = 0; j < full; ++j) {
      std::uint32_t byte = 0;
      for (std::size_t t = 0; t < per; ++t) byte |= code(j * per + t) << (Bits * t);
      out[j] = static_cast<std::uint8_t>(byte);
    }
    if (full * per < len) {  // only the tensor's last, partial block gets here
      std::uint32_t byte = 0;
      for (std::size_t t = 0; full * per + t < len; ++t) byte |= code(full * per + t) << (Bits * t);
      out[full] = static_cast<std::uint8_t>(byte);
    }
  }
}

// Drives the blocks. For EF, src = g and e is read (g + e is formed per block in `acc`) and written.
template <int Bits, bool Stochastic, bool EF>
TWINBED_INLINE void quantize_all(const float* g, float* e, std::size_t n, const QuantSpec& spec, std::uint8_t* codes,
                                 float* scales) {
  constexpr int qmax = detail::qmax_of(Bits);
  std::vector<float> acc(EF ? spec.block : 0);
  std::size_t b = 0;
  for (std::size_t start = 0; start < n; start += spec.block, ++b) {
    const std::size_t len = std::min(spec.block, n - start);
    const float* src = g + start;
    if constexpr (EF) {
      float* __restrict a = acc.data();
      const float* __restrict gs = g + start;
      const float* __restrict es = e + start;
      for (std::size_t i = 0; i < len; ++i) a[i] = gs[i] + es[i];
      src = a;
    }
    const float amax = block_amax(src, len);
    const float scale = detail::scale_of(amax, qmax);
    const float inv = detail::inv_scale_of(amax, qmax);
    scales[b] = scale;
    std::uint8_t* out = codes + start * Bits / 8;
    float* e_out = EF ? e + start : nullptr;
    // The stream key changes where the element index crosses a multiple of 2^32 (block starts are
    // multiples of 8, and so is 2^32, so the split falls on a byte boundary of the code stream).
    std::size_t done = 0;
    while (done < len) {
      const std::uint64_t index = start + done;
      const std::uint64_t next_wrap = ((index >> 32) + 1) << 32;
      const std::size_t seg = static_cast<std::size_t>(std::min<std::uint64_t>(len - done, next_wrap - index));
      quant_block<Bits, Stochastic, EF>(src + done, EF ? e_out + done : nullptr, seg, scale, inv,
                                        rng::key(spec.seed, index), static_cast<std::uint32_t>(index),
                                        out + done * Bits / 8);
      done += seg;
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

TWINBED_CLONES void quantize_impl(const float* x, std::size_t n, const QuantSpec& spec, std::uint8_t* codes,
                                  float* scales) {
  quantize_dispatch<false>(x, nullptr, n, spec, codes, scales);
}

TWINBED_CLONES void ef_quantize_impl(const float* g, float* e, std::size_t n, const QuantSpec& spec,
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
