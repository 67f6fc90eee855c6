// Rounding by bit manipulation on the fp32 pattern: adding half an ulp of the narrow type minus one,
// plus the lowest kept bit, then truncating, is round-to-nearest-even (the carry may ripple into the
// exponent, which is exactly the rounding up to the next binade or to inf). No floating-point rounding
// mode is involved, so the result is the same on every machine and compiler.
#include "twinbed/train/numerics.hpp"

#include <bit>
#include <cstdint>
#include <string>

#include "twinbed/core/error.hpp"

namespace twinbed::train {
namespace {

constexpr std::uint32_t kAbsMask = 0x7FFFFFFFU;
constexpr std::uint32_t kExpMask = 0x7F800000U;
constexpr std::uint32_t kQuietBit = 0x00400000U;

bool is_nan_bits(std::uint32_t bits) { return (bits & kAbsMask) > kExpMask; }

// RNE keeping the top (32 - drop) bits of the pattern; NaN handled by the caller.
template <int drop>
std::uint32_t rne_bits(std::uint32_t bits) {
  constexpr std::uint32_t half_minus_one = (1U << (drop - 1)) - 1U;
  constexpr std::uint32_t keep = ~((1U << drop) - 1U);
  return (bits + half_minus_one + ((bits >> drop) & 1U)) & keep;
}

// A quiet NaN of x's sign whose payload fits the narrow type's mantissa.
template <int drop>
float quiet_nan(std::uint32_t bits) {
  constexpr std::uint32_t keep = ~((1U << drop) - 1U);
  return std::bit_cast<float>((bits | kQuietBit) & keep);
}

template <int drop>
float round_drop(float x) {
  const auto bits = std::bit_cast<std::uint32_t>(x);
  if (is_nan_bits(bits)) return quiet_nan<drop>(bits);
  return std::bit_cast<float>(rne_bits<drop>(bits));
}

float bf16(float x) { return round_drop<16>(x); }
float tf32(float x) { return round_drop<13>(x); }

float fp16(float x) {
  const auto bits = std::bit_cast<std::uint32_t>(x);
  if (is_nan_bits(bits)) return quiet_nan<13>(bits);
  const std::uint32_t sign = bits & ~kAbsMask;
  const auto a = std::bit_cast<float>(bits & kAbsMask);
  // 65520 is the midpoint between 65504 (mantissa all ones, odd) and 65536: the tie goes to the even
  // 65536, which does not exist in binary16, so everything from 65520 up (inf included) overflows.
  if (a >= 65520.0f) return std::bit_cast<float>(sign | kExpMask);
  float r;
  if (a >= 0x1p-14f) {
    // Normal binary16: the same 10-bit mantissa as TF32; the exponent cannot overflow below 65520.
    r = std::bit_cast<float>(rne_bits<13>(bits & kAbsMask));
  } else {
    // Subnormal binary16: multiples of 2^-24. a·2^24 < 1024 is exact (a power-of-two scale), its
    // integer part and fraction are exact, and the tie check is explicit.
    const float m = a * 0x1p24f;
    auto i = static_cast<std::uint32_t>(m);
    const float frac = m - static_cast<float>(i);
    if (frac > 0.5f || (frac == 0.5f && (i & 1U) != 0U)) ++i;
    r = static_cast<float>(i) * 0x1p-24f;
  }
  return std::bit_cast<float>(std::bit_cast<std::uint32_t>(r) | sign);
}

[[noreturn]] void fp8_unsupported(const char* who) {
  throw InvalidArgument(std::string(who) + ": " + dtype_name(DType::FP8) +
                        " has no single rounding (e4m3 or e5m2); emulated types are fp32, tf32, bf16, fp16");
}

template <typename F>
void apply(std::span<float> x, F f) {
  for (float& v : x) v = f(v);
}

}  // namespace

float round_to(DType t, float x) {
  switch (t) {
    case DType::FP32: return x;
    case DType::TF32: return tf32(x);
    case DType::BF16: return bf16(x);
    case DType::FP16: return fp16(x);
    case DType::FP8: break;
  }
  fp8_unsupported("round_to");
}

void round_in_place(DType t, std::span<float> x) {
  switch (t) {
    case DType::FP32: return;
    case DType::TF32: apply(x, tf32); return;
    case DType::BF16: apply(x, bf16); return;
    case DType::FP16: apply(x, fp16); return;
    case DType::FP8: break;
  }
  fp8_unsupported("round_in_place");
}

bool all_finite(std::span<const float> x) {
  // Branch-free over the whole span (vectorises): OR of "exponent all ones" over the elements.
  std::uint32_t bad = 0;
  for (const float v : x) bad |= static_cast<std::uint32_t>((std::bit_cast<std::uint32_t>(v) & kExpMask) == kExpMask);
  return bad == 0;
}

}  // namespace twinbed::train
