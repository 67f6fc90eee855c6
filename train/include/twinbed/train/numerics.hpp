// Emulated narrow floating-point storage for the training library: fp32 arithmetic on values rounded
// to what a 16-bit (or TF32) store would keep. Mixed-precision training is emulated this way (Micikevicius
// et al., "Mixed Precision Training", ICLR 2018: fp16 storage, fp32 arithmetic and master weights), so
// its effects — bf16's 8-bit mantissa, fp16's overflow above 65504 and underflow below 2^-24 — show on
// a CPU with the same figures a GPU store would give.
//
// Every function here is pure and thread-safe; nothing allocates.
#pragma once

#include <span>

#include "twinbed/core/model.hpp"

namespace twinbed::train {

// x rounded to the nearest value of type t, round-to-nearest-even (ties to the even significand), as
// hardware rounds on a store; returned as a float, exactly representable in t.
//   FP32  x itself.
//   TF32  10-bit mantissa, fp32 exponent range (a magnitude that rounds past FLT_MAX becomes ±inf).
//   BF16  the top 16 bits of the fp32 pattern after RNE on the low 16 (8-bit exponent, 7-bit mantissa).
//   FP16  IEEE binary16: 10-bit mantissa; normal down to 2^-14, subnormal steps of 2^-24 below it (half
//         of 2^-24 ties to 0); a value whose rounded magnitude exceeds 65504 (|x| >= 65520) is ±inf.
// Signs (and -0) are kept; inf stays inf; a NaN stays a (quiet) NaN of the same sign.
// FP8 throws twinbed::InvalidArgument naming the type: it has two formats and no single rounding.
float round_to(DType t, float x);

// round_to on every element, in place. A no-op for FP32; FP8 throws before touching anything.
void round_in_place(DType t, std::span<float> x);

// True when no element is inf or NaN (true for an empty span).
bool all_finite(std::span<const float> x);

}  // namespace twinbed::train
