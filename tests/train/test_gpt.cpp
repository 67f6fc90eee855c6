// The training GPT: 16-bit rounding against hand-computed cases, the backward pass against finite
// differences (base and LoRA), determinism, emulated precision and argument checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/train/gpt.hpp"
#include "twinbed/train/numerics.hpp"

namespace {

using twinbed::DType;
using twinbed::InvalidArgument;
using twinbed::ParamKind;
using twinbed::train::Gpt;
using twinbed::train::GptShape;
using twinbed::train::LoraSetup;
using twinbed::train::Precision;
using twinbed::train::round_to;
using twinbed::train::Weight;

float bits_to_float(std::uint32_t b) { return std::bit_cast<float>(b); }
std::uint32_t float_to_bits(float f) { return std::bit_cast<std::uint32_t>(f); }

// ---- numerics -----------------------------------------------------------------------------------------

TEST(Numerics, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even significand, 1.
  EXPECT_EQ(round_to(DType::BF16, 1.0f + 0x1p-8f), 1.0f);
  // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up.
  EXPECT_EQ(round_to(DType::BF16, 1.0f + 3 * 0x1p-8f), 1.0f + 0x1p-6f);
  // Just above a tie goes up, just below goes down.
  EXPECT_EQ(round_to(DType::BF16, 1.0f + 0x1p-8f + 0x1p-20f), 1.0f + 0x1p-7f);
  EXPECT_EQ(round_to(DType::BF16, 1.0f + 0x1p-8f - 0x1p-20f), 1.0f);
  EXPECT_EQ(round_to(DType::BF16, -1.0f - 3 * 0x1p-8f), -1.0f - 0x1p-6f);
  // Exactly representable values and the pattern: the low 16 bits are cleared.
  EXPECT_EQ(round_to(DType::BF16, 3.140625f), 3.140625f);
  EXPECT_EQ(float_to_bits(round_to(DType::BF16, 3.14159265f)) & 0xFFFFU, 0U);
  EXPECT_EQ(round_to(DType::BF16, 3.14159265f), 3.140625f);
  // The largest float rounds up to inf (bf16 keeps fp32's exponent range, not its largest value).
  EXPECT_TRUE(std::isinf(round_to(DType::BF16, std::numeric_limits<float>::max())));
  EXPECT_EQ(round_to(DType::BF16, std::numeric_limits<float>::infinity()), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::signbit(round_to(DType::BF16, -0.0f)));
  // A NaN whose payload sits only in the low bits stays NaN (truncation alone would make it inf).
  EXPECT_TRUE(std::isnan(round_to(DType::BF16, bits_to_float(0x7F800001U))));
  EXPECT_TRUE(std::isnan(round_to(DType::BF16, std::numeric_limits<float>::quiet_NaN())));
}

TEST(Numerics, Fp16RangeSubnormalsAndTies) {
  EXPECT_EQ(round_to(DType::FP16, 65504.0f), 65504.0f);  // the largest binary16
  EXPECT_EQ(round_to(DType::FP16, 65519.0f), 65504.0f);  // below the midpoint to 65536
  EXPECT_TRUE(std::isinf(round_to(DType::FP16, 65520.0f)));  // the midpoint ties to the even 2^16: inf
  EXPECT_EQ(round_to(DType::FP16, -65520.0f), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isinf(round_to(DType::FP16, 1e6f)));
  // 1 + 2^-11 ties to 1; 1 + 3·2^-11 ties up to 1 + 2^-9.
  EXPECT_EQ(round_to(DType::FP16, 1.0f + 0x1p-11f), 1.0f);
  EXPECT_EQ(round_to(DType::FP16, 1.0f + 3 * 0x1p-11f), 1.0f + 0x1p-9f);
  EXPECT_EQ(round_to(DType::FP16, 0.1f), 0.0999755859375f);  // 0x2E66
  // Subnormals: multiples of 2^-24.
  EXPECT_EQ(round_to(DType::FP16, 0x1p-24f), 0x1p-24f);       // the smallest subnormal
  EXPECT_EQ(round_to(DType::FP16, 0x1p-25f), 0.0f);           // half of it ties to even: 0
  EXPECT_EQ(round_to(DType::FP16, 0x1p-25f * 1.0001f), 0x1p-24f);
  EXPECT_EQ(round_to(DType::FP16, 3 * 0x1p-25f), 2 * 0x1p-24f);  // 1.5 steps ties to 2
  EXPECT_EQ(round_to(DType::FP16, 5 * 0x1p-25f), 2 * 0x1p-24f);  // 2.5 steps ties to 2
  EXPECT_EQ(round_to(DType::FP16, 0x1p-14f - 0x1p-26f), 0x1p-14f);  // rounds up into the normals
  EXPECT_EQ(round_to(DType::FP16, 1e-30f), 0.0f);
  EXPECT_TRUE(std::signbit(round_to(DType::FP16, -1e-30f)));
  EXPECT_TRUE(std::isnan(round_to(DType::FP16, std::numeric_limits<float>::quiet_NaN())));
}

TEST(Numerics, Tf32AndFp32) {
  EXPECT_EQ(round_to(DType::TF32, 1.0f + 0x1p-11f), 1.0f);
  EXPECT_EQ(round_to(DType::TF32, 1.0f + 3 * 0x1p-11f), 1.0f + 0x1p-9f);
  EXPECT_EQ(round_to(DType::TF32, 1e30f), bits_to_float((float_to_bits(1e30f) + 0xFFFU +
                                                          ((float_to_bits(1e30f) >> 13) & 1U)) & ~0x1FFFU));
  EXPECT_EQ(round_to(DType::TF32, 1e-40f) >= 0.0f, true);  // fp32 range: subnormals of fp32 are kept
  EXPECT_EQ(round_to(DType::FP32, 0.1f), 0.1f);
}

TEST(Numerics, RoundInPlaceAndFinite) {
  std::vector<float> v{1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -2.5f, 0.0f};
  twinbed::train::round_in_place(DType::BF16, v);
  EXPECT_EQ(v, (std::vector<float>{1.0f, 1.0f + 0x1p-6f, -2.5f, 0.0f}));
  std::vector<float> w{0.1f, 1e-30f};
  twinbed::train::round_in_place(DType::FP32, w);
  EXPECT_EQ(w, (std::vector<float>{0.1f, 1e-30f}));
  EXPECT_TRUE(twinbed::train::all_finite(v));
  EXPECT_TRUE(twinbed::train::all_finite({}));
  v[2] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(twinbed::train::all_finite(v));
  v[2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(twinbed::train::all_finite(v));
}

TEST(Numerics, Fp8Throws) {
  try {
    (void)round_to(DType::FP8, 1.0f);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("fp8"), std::string::npos) << e.what();
  }
  std::vector<float> v{1.0f};
  EXPECT_THROW(twinbed::train::round_in_place(DType::FP8, v), InvalidArgument);
}

// ---- helpers for the model tests ------------------------------------------------------------------------

GptShape tiny_shape() { return {2, 8, 2, 5, 256}; }

// batch sequences of seq_len + 1 tokens from a fixed LCG (deterministic everywhere).
std::vector<std::uint8_t> make_tokens(const GptShape& s, std::size_t batch, std::uint32_t seed) {
  std::vector<std::uint8_t> t(batch * static_cast<std::size_t>(s.seq_len + 1));
  std::uint32_t x = seed * 2654435761U + 12345U;
  for (auto& v : t) {
    x = x * 1664525U + 1013904223U;
    v = static_cast<std::uint8_t>((x >> 24) % static_cast<std::uint32_t>(s.vocab));
  }
  return t;
}

// Values of a deterministic pseudo-random ±1 direction.
std::vector<float> rademacher(std::size_t n, std::uint32_t seed) {
  std::vector<float> d(n);
  std::uint32_t x = seed * 747796405U + 2891336453U;
  for (auto& v : d) {
    x = x * 1664525U + 1013904223U;
    v = (x >> 31) != 0U ? 1.0f : -1.0f;
  }
  return d;
}

// Spreads the parameters out from the tiny GPT-2 init (which makes every gradient ~1e-4 and the loss
// flat): matrices N(0, 0.3²)-ish, LN γ around 1 and β around 0, so each gradient term is large against
// fp32 rounding noise in the loss.
void perturb(std::span<float> values, float amount, std::uint32_t seed) {
  std::uint32_t x = seed * 2246822519U + 3266489917U;
  for (auto& v : values) {
    x = x * 1664525U + 1013904223U;
    const float u = static_cast<float>(x >> 8) * 0x1p-24f - 0.5f;  // [-0.5, 0.5)
    v += amount * u;
  }
}

// Checks dL/dθ of every tensor against central differences along a few ±1 directions d over the whole
// tensor: (L(θ + εd) − L(θ − εd)) / 2ε must match g·d within rtol·‖g‖₂ (g·d itself is about ‖g‖₂ in
// size). A term with the wrong sign, a transposed product or a missing contribution changes g·d by an
// amount of the order of the error's norm, far beyond the tolerance.
struct FdCheck {
  float eps = 2e-3f;
  double rtol = 1e-2;
  int directions = 3;
};

template <typename LossFn>
void check_tensor_gradients(const std::vector<Weight>& tensors, std::span<float> values, std::span<const float> grads,
                            LossFn loss, const FdCheck& c) {
  for (const Weight& w : tensors) {
    double norm = 0;
    for (std::size_t i = 0; i < w.size(); ++i) norm += double(grads[w.offset + i]) * grads[w.offset + i];
    norm = std::sqrt(norm);
    ASSERT_GT(norm, 1e-6) << w.name << ": gradient is (nearly) zero, the check would prove nothing";
    for (int k = 0; k < c.directions; ++k) {
      const auto d = rademacher(w.size(), static_cast<std::uint32_t>(w.offset * 7 + static_cast<std::size_t>(k) + 1));
      double analytic = 0;
      for (std::size_t i = 0; i < w.size(); ++i) analytic += double(grads[w.offset + i]) * d[i];
      std::vector<float> saved(values.begin() + static_cast<std::ptrdiff_t>(w.offset),
                               values.begin() + static_cast<std::ptrdiff_t>(w.offset + w.size()));
      for (std::size_t i = 0; i < w.size(); ++i) values[w.offset + i] = saved[i] + c.eps * d[i];
      const double up = loss();
      for (std::size_t i = 0; i < w.size(); ++i) values[w.offset + i] = saved[i] - c.eps * d[i];
      const double down = loss();
      std::copy(saved.begin(), saved.end(), values.begin() + static_cast<std::ptrdiff_t>(w.offset));
      const double numeric = (up - down) / (2.0 * double(c.eps));
      EXPECT_NEAR(numeric, analytic, c.rtol * norm)
          << w.name << " direction " << k << " (|g| = " << norm << ", relative error " << std::abs(numeric - analytic) / norm << ")";
    }
  }
}

// ---- gradients ------------------------------------------------------------------------------------------

TEST(GptGradients, MatchFiniteDifferencesOnEveryTensor) {
  Gpt model(tiny_shape(), 7);
  perturb(model.params(), 0.6f, 11);
  const std::size_t batch = 2;
  const auto tokens = make_tokens(model.shape(), batch, 3);
  std::vector<float> grads(model.params().size());
  const auto r = model.forward_backward(tokens, batch, grads, {});
  ASSERT_TRUE(r.finite);
  EXPECT_DOUBLE_EQ(r.loss, model.loss(tokens, batch));
  check_tensor_gradients(model.weights(), model.params(), grads, [&] { return model.loss(tokens, batch); }, FdCheck{});
}

TEST(GptGradients, LoraAdaptersMatchFiniteDifferences) {
  Gpt model(tiny_shape(), 7);
  perturb(model.params(), 0.6f, 11);
  model.enable_lora({3, 6.0f, {ParamKind::Qkv, ParamKind::Proj, ParamKind::Fc1, ParamKind::Fc2}}, 5);
  // B = 0 makes A's gradient zero: give both non-trivial values first.
  perturb(model.adapter_params(), 0.6f, 13);
  const std::size_t batch = 2;
  const auto tokens = make_tokens(model.shape(), batch, 4);
  std::vector<float> agrads(model.adapter_params().size());
  const auto r = model.forward_backward(tokens, batch, {}, agrads);
  ASSERT_TRUE(r.finite);
  check_tensor_gradients(model.adapters(), model.adapter_params(), agrads, [&] { return model.loss(tokens, batch); },
                         FdCheck{});
}

TEST(GptGradients, LossScaleScalesGradients) {
  Gpt model(tiny_shape(), 21);
  const auto tokens = make_tokens(model.shape(), 2, 8);
  std::vector<float> g1(model.params().size()), g2(g1.size()), g3(g1.size());
  Precision p{{DType::FP32, DType::FP32}, DType::FP32, 1.0f};
  const auto r1 = model.forward_backward(tokens, 2, g1, {}, &p);
  p.loss_scale = 1024.0f;  // a power of two: every product scales exactly
  const auto r2 = model.forward_backward(tokens, 2, g2, {}, &p);
  p.loss_scale = 1000.0f;
  const auto r3 = model.forward_backward(tokens, 2, g3, {}, &p);
  EXPECT_EQ(r1.loss, r2.loss);  // the reported loss is unscaled
  EXPECT_EQ(r1.loss, r3.loss);
  // Scale 1000 rounds differently along the way: compare against the largest gradient (single
  // elements that are sums of cancelling terms carry the rounding of their terms).
  float largest = 0;
  for (const float v : g1) largest = std::max(largest, std::abs(1000.0f * v));
  for (std::size_t i = 0; i < g1.size(); ++i) {
    ASSERT_EQ(g2[i], 1024.0f * g1[i]) << i;
    ASSERT_NEAR(g3[i], 1000.0f * g1[i], 1e-5f * largest) << i;
  }
}

// ---- determinism ----------------------------------------------------------------------------------------

TEST(GptDeterminism, SameSeedSameBitsDifferentSeedDifferent) {
  const GptShape s{2, 16, 4, 8, 256};
  Gpt a(s, 42), b(s, 42), c(s, 43);
  ASSERT_EQ(a.params().size(), b.params().size());
  EXPECT_TRUE(std::equal(a.params().begin(), a.params().end(), b.params().begin()));
  EXPECT_FALSE(std::equal(a.params().begin(), a.params().end(), c.params().begin()));
  const auto tokens = make_tokens(s, 3, 1);
  std::vector<float> ga(a.params().size()), gb(ga.size()), ga2(ga.size());
  const auto ra = a.forward_backward(tokens, 3, ga, {});
  const auto rb = b.forward_backward(tokens, 3, gb, {});
  const auto ra2 = a.forward_backward(tokens, 3, ga2, {});  // scratch reused: same result
  EXPECT_EQ(ra, rb);
  EXPECT_EQ(ra, ra2);
  EXPECT_EQ(ga, gb);
  EXPECT_EQ(ga, ga2);
  EXPECT_NE(a.loss(tokens, 3), c.loss(tokens, 3));
  // A copy carries the weights (not the scratch) and computes the same.
  const Gpt copy = a;
  EXPECT_EQ(copy.loss(tokens, 3), ra.loss);
}

TEST(GptDeterminism, InitialisationFollowsGpt2) {
  const GptShape s{4, 64, 4, 32, 256};
  const Gpt m(s, 1);
  ASSERT_EQ(m.weights().size(), 2 + 8 * 4 + 2u);
  std::size_t offset = 0;
  for (const Weight& w : m.weights()) {
    EXPECT_EQ(w.offset, offset) << w.name;
    offset += w.size();
  }
  EXPECT_EQ(offset, m.params().size());
  const auto stddev = [&](const std::string& name) {
    const Weight& w = m.find(name);
    double sq = 0;
    for (std::size_t i = 0; i < w.size(); ++i) sq += double(m.params()[w.offset + i]) * m.params()[w.offset + i];
    return std::sqrt(sq / double(w.size()));
  };
  EXPECT_NEAR(stddev("wte"), 0.02, 0.001);
  EXPECT_NEAR(stddev("l1.qkv"), 0.02, 0.001);
  EXPECT_NEAR(stddev("l3.fc1"), 0.02, 0.001);
  EXPECT_NEAR(stddev("l2.proj"), 0.02 / std::sqrt(8.0), 0.0005);
  EXPECT_NEAR(stddev("l0.fc2"), 0.02 / std::sqrt(8.0), 0.0005);
  const Weight& g = m.find("l2.ln2.g");
  EXPECT_EQ(g.kind, ParamKind::Norms);
  EXPECT_EQ(g.layer, 2);
  for (std::size_t i = 0; i < g.size(); ++i) EXPECT_EQ(m.params()[g.offset + i], 1.0f);
  EXPECT_EQ(m.find("lnf.b").kind, ParamKind::FinalNorm);
  EXPECT_EQ(m.find("l1.fc2").rows, 64u);
  EXPECT_EQ(m.find("l1.fc2").cols, 256u);
  EXPECT_EQ(m.find("wpe").rows, 32u);
  EXPECT_THROW((void)m.find("l9.qkv"), InvalidArgument);
  // At init the prediction is nearly uniform: loss ≈ ln(256).
  const auto tokens = make_tokens(s, 2, 9);
  EXPECT_NEAR(m.loss(tokens, 2), std::log(256.0), 0.05);
}

// ---- precision ------------------------------------------------------------------------------------------

TEST(GptPrecision, NullptrEqualsAllFp32BitForBit) {
  Gpt model(tiny_shape(), 3);
  const auto tokens = make_tokens(model.shape(), 2, 5);
  std::vector<float> g0(model.params().size()), g1(g0.size());
  const Precision fp32{{DType::FP32, DType::FP32}, DType::FP32, 1.0f};
  const auto r0 = model.forward_backward(tokens, 2, g0, {});
  const auto r1 = model.forward_backward(tokens, 2, g1, {}, &fp32);
  EXPECT_EQ(r0, r1);
  EXPECT_EQ(g0, g1);
  EXPECT_EQ(model.loss(tokens, 2), model.loss(tokens, 2, &fp32));
}

TEST(GptPrecision, Bf16IsCloseButNotIdentical) {
  Gpt model({2, 32, 4, 16, 256}, 3);
  perturb(model.params(), 0.2f, 2);
  const auto tokens = make_tokens(model.shape(), 2, 6);
  const Precision bf16{{DType::BF16, DType::BF16}, DType::BF16, 1.0f};
  const double l32 = model.loss(tokens, 2);
  const double l16 = model.loss(tokens, 2, &bf16);
  EXPECT_NE(l32, l16);
  EXPECT_NEAR(l16, l32, 0.01 * l32);
  // The gradients too: close in norm, every one finite and representable in bf16.
  std::vector<float> g32(model.params().size()), g16(g32.size());
  (void)model.forward_backward(tokens, 2, g32, {});
  const auto r = model.forward_backward(tokens, 2, g16, {}, &bf16);
  EXPECT_TRUE(r.finite);
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < g32.size(); ++i) {
    ASSERT_EQ(g16[i], round_to(DType::BF16, g16[i])) << i;
    diff += double(g16[i] - g32[i]) * (g16[i] - g32[i]);
    norm += double(g32[i]) * g32[i];
  }
  EXPECT_LT(std::sqrt(diff / norm), 0.05);
  // The fp32 masters are untouched by the rounded working copy.
  const Gpt fresh = [] {
    Gpt m({2, 32, 4, 16, 256}, 3);
    perturb(m.params(), 0.2f, 2);
    return m;
  }();
  EXPECT_TRUE(std::equal(model.params().begin(), model.params().end(), fresh.params().begin()));
}

TEST(GptPrecision, Fp16WithHugeLossScaleOverflows) {
  Gpt model(tiny_shape(), 3);
  const auto tokens = make_tokens(model.shape(), 2, 5);
  std::vector<float> g(model.params().size());
  Precision fp16{{DType::FP16, DType::FP16}, DType::FP16, 1.0f};
  EXPECT_TRUE(model.forward_backward(tokens, 2, g, {}, &fp16).finite);
  fp16.loss_scale = 1e8f;
  const auto r = model.forward_backward(tokens, 2, g, {}, &fp16);
  EXPECT_FALSE(r.finite);
  EXPECT_TRUE(std::isfinite(r.loss));  // the forward is fine; the scaled backward overflows
  // fp16 layers with an fp32 head: the overflow shows in the layers' activation gradients.
  fp16.outer = DType::FP32;
  EXPECT_FALSE(model.forward_backward(tokens, 2, g, {}, &fp16).finite);
  // bf16 has fp32's range: the same scale stays finite.
  const Precision bf16{{DType::BF16, DType::BF16}, DType::BF16, 1e8f};
  EXPECT_TRUE(model.forward_backward(tokens, 2, g, {}, &bf16).finite);
}

TEST(GptPrecision, BadPrecisionThrows) {
  Gpt model(tiny_shape(), 3);
  const auto tokens = make_tokens(model.shape(), 1, 5);
  const Precision short_list{{DType::FP32}, DType::FP32, 1.0f};
  EXPECT_THROW((void)model.loss(tokens, 1, &short_list), InvalidArgument);
  const Precision fp8{{DType::FP32, DType::FP8}, DType::FP32, 1.0f};
  EXPECT_THROW((void)model.loss(tokens, 1, &fp8), InvalidArgument);
  const Precision zero_scale{{DType::FP32, DType::FP32}, DType::FP32, 0.0f};
  std::vector<float> g(model.params().size());
  EXPECT_THROW((void)model.forward_backward(tokens, 1, g, {}, &zero_scale), InvalidArgument);
}

// ---- LoRA -----------------------------------------------------------------------------------------------

TEST(GptLora, ZeroBLeavesTheModelUnchanged) {
  Gpt model(tiny_shape(), 9);
  const auto tokens = make_tokens(model.shape(), 2, 2);
  const double base = model.loss(tokens, 2);
  model.enable_lora({4, 8.0f, {ParamKind::Fc2, ParamKind::Qkv}}, 1);
  EXPECT_TRUE(model.has_lora());
  // Bit-identical in this build: with B = 0 the kernel's base GEMM is the same Eigen product as the
  // unadapted path and the low-rank term adds exact zeros. (A kernels library built with another
  // -march, TWINBED_KERNELS_ARCH, may sum in another order: hence a tolerance, not EXPECT_EQ.)
  EXPECT_NEAR(model.loss(tokens, 2), base, 1e-6 * base);
  // Adapter layout: per layer, Qkv then Fc2 (canonical order whatever the setup's order), A then B.
  const std::size_t H = 8, r = 4;
  std::size_t expected = 0;
  for (int l = 0; l < 2; ++l) expected += r * (H + 3 * H) + r * (4 * H + H);
  EXPECT_EQ(model.adapter_params().size(), expected);
  ASSERT_EQ(model.adapters().size(), 8u);
  EXPECT_EQ(model.adapters()[0].name, "l0.qkv.lora_a");
  EXPECT_EQ(model.adapters()[0].kind, ParamKind::LoraA);
  EXPECT_EQ(model.adapters()[0].rows, r);
  EXPECT_EQ(model.adapters()[0].cols, H);
  EXPECT_EQ(model.adapters()[1].name, "l0.qkv.lora_b");
  EXPECT_EQ(model.adapters()[1].rows, 3 * H);
  EXPECT_EQ(model.adapters()[3].name, "l0.fc2.lora_b");
  EXPECT_EQ(model.adapters()[7].name, "l1.fc2.lora_b");
  EXPECT_EQ(model.adapters()[7].layer, 1);
  const Weight& b = model.find("l1.fc2.lora_b");
  for (std::size_t i = 0; i < b.size(); ++i) EXPECT_EQ(model.adapter_params()[b.offset + i], 0.0f);
  // The base is frozen: no base gradient span.
  std::vector<float> grads(model.params().size()), agrads(model.adapter_params().size());
  EXPECT_THROW((void)model.forward_backward(tokens, 2, grads, agrads), InvalidArgument);
  EXPECT_THROW((void)model.forward_backward(tokens, 2, {}, std::span<float>(agrads).first(3)), InvalidArgument);
  const auto res = model.forward_backward(tokens, 2, {}, agrads);
  EXPECT_TRUE(res.finite);
  // With B = 0, dA = 0 and dB carries the whole signal.
  const Weight& a0 = model.find("l0.qkv.lora_a");
  const Weight& b0 = model.find("l0.qkv.lora_b");
  EXPECT_TRUE(std::all_of(agrads.begin() + static_cast<std::ptrdiff_t>(a0.offset),
                          agrads.begin() + static_cast<std::ptrdiff_t>(a0.offset + a0.size()), [](float v) { return v == 0.0f; }));
  EXPECT_TRUE(std::any_of(agrads.begin() + static_cast<std::ptrdiff_t>(b0.offset),
                          agrads.begin() + static_cast<std::ptrdiff_t>(b0.offset + b0.size()), [](float v) { return v != 0.0f; }));
}

TEST(GptLora, AdaptedModelEqualsTheMergedWeights) {
  Gpt model(tiny_shape(), 9);
  model.enable_lora({2, 4.0f, {ParamKind::Qkv, ParamKind::Proj, ParamKind::Fc1, ParamKind::Fc2}}, 3);
  perturb(model.adapter_params(), 0.5f, 17);
  const auto tokens = make_tokens(model.shape(), 2, 12);
  const double adapted = model.loss(tokens, 2);
  // W + (alpha/rank)·B·A in a plain model.
  Gpt merged(tiny_shape(), 9);
  const float scale = 4.0f / 2.0f;
  for (std::size_t i = 0; i < model.adapters().size(); i += 2) {
    const Weight& a = model.adapters()[i];
    const Weight& b = model.adapters()[i + 1];
    const std::string base_name = a.name.substr(0, a.name.size() - std::string(".lora_a").size());
    const Weight& w = merged.find(base_name);
    for (std::size_t o = 0; o < w.rows; ++o)
      for (std::size_t in = 0; in < w.cols; ++in) {
        float acc = 0;
        for (std::size_t k = 0; k < a.rows; ++k)
          acc += model.adapter_params()[b.offset + o * b.cols + k] * model.adapter_params()[a.offset + k * a.cols + in];
        merged.params()[w.offset + o * w.cols + in] += scale * acc;
      }
  }
  const double plain = Gpt(tiny_shape(), 9).loss(tokens, 2);
  EXPECT_GT(std::abs(adapted - plain), 1e-3);  // the adapters do change the function
  EXPECT_NEAR(adapted, merged.loss(tokens, 2), 1e-5 * adapted);
}

TEST(GptLora, BadSetupsThrow) {
  Gpt model(tiny_shape(), 1);
  EXPECT_THROW(model.enable_lora({0, 16.0f, {ParamKind::Qkv}}, 1), InvalidArgument);
  EXPECT_THROW(model.enable_lora({4, 16.0f, {ParamKind::Norms}}, 1), InvalidArgument);
  EXPECT_THROW(model.enable_lora({4, 16.0f, {ParamKind::Embedding}}, 1), InvalidArgument);
  EXPECT_THROW(model.enable_lora({4, 16.0f, {ParamKind::Qkv, ParamKind::Qkv}}, 1), InvalidArgument);
  EXPECT_THROW(model.enable_lora({4, 16.0f, {}}, 1), InvalidArgument);
  EXPECT_FALSE(model.has_lora());
  // Without LoRA, adapter gradients must be empty.
  const auto tokens = make_tokens(model.shape(), 1, 1);
  std::vector<float> grads(model.params().size()), extra(4);
  EXPECT_THROW((void)model.forward_backward(tokens, 1, grads, extra), InvalidArgument);
}

// ---- argument checks ------------------------------------------------------------------------------------

TEST(GptArguments, BadShapesThrowNamingTheField) {
  const auto message = [](GptShape s) {
    try {
      Gpt m(s, 1);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({0, 8, 2, 5, 256}).find("layers"), std::string::npos);
  EXPECT_NE(message({1, 0, 2, 5, 256}).find("hidden"), std::string::npos);
  EXPECT_NE(message({1, 8, 0, 5, 256}).find("heads"), std::string::npos);
  EXPECT_NE(message({1, 8, 2, -1, 256}).find("seq_len"), std::string::npos);
  EXPECT_NE(message({1, 8, 2, 5, 0}).find("vocab"), std::string::npos);
  EXPECT_NE(message({1, 10, 4, 5, 256}).find("multiple of heads"), std::string::npos);
}

TEST(GptArguments, BadSizesThrow) {
  Gpt model(tiny_shape(), 1);
  const auto tokens = make_tokens(model.shape(), 2, 1);
  EXPECT_THROW((void)model.loss(tokens, 3), InvalidArgument);
  EXPECT_THROW((void)model.loss(std::span<const std::uint8_t>(tokens).first(5), 1), InvalidArgument);
  EXPECT_THROW((void)model.loss({}, 0), InvalidArgument);
  std::vector<float> short_grads(model.params().size() - 1);
  try {
    (void)model.forward_backward(tokens, 2, short_grads, {});
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("forward_backward"), std::string::npos) << m;
    EXPECT_NE(m.find(std::to_string(short_grads.size())), std::string::npos) << m;
    EXPECT_NE(m.find(std::to_string(model.params().size())), std::string::npos) << m;
  }
  // A token outside a smaller vocabulary.
  Gpt small({1, 8, 2, 5, 16}, 1);
  auto bad = make_tokens(small.shape(), 1, 1);
  bad[3] = 200;
  EXPECT_THROW((void)small.loss(bad, 1), InvalidArgument);
}

// ---- evaluation: loss and top-1 accuracy ---------------------------------------------------------------

// A model whose prediction is known: every layer matrix and wpe zero, so the residual stream is wte[token];
// wte row i = e_(i mod 8), so LNf(e_k)·wteᵀ is largest, first, at token k = input mod 8.
Gpt echo_mod_8() {
  Gpt m(GptShape{1, 8, 2, 4, 256}, 1);
  std::fill(m.params().begin(), m.params().end(), 0.0f);
  for (const auto& w : m.weights()) {
    if (w.name == "lnf.g" || w.name == "l0.ln1.g" || w.name == "l0.ln2.g")
      std::fill_n(m.params().begin() + static_cast<std::ptrdiff_t>(w.offset), w.size(), 1.0f);
    if (w.name == "wte")
      for (std::size_t row = 0; row < w.rows; ++row) m.params()[w.offset + row * w.cols + row % 8] = 1.0f;
  }
  return m;
}

TEST(GptEvaluate, CountsThePredictionsWhoseLargestLogitIsTheTarget) {
  const Gpt m = echo_mod_8();
  const std::vector<std::uint8_t> right = {3, 3, 3, 3, 3};     // predicts 3 mod 8 = 3: four of four
  const std::vector<std::uint8_t> wrong = {11, 11, 11, 11, 11};  // predicts 3, target 11: none
  const std::vector<std::uint8_t> half = {3, 3, 11, 3, 11};      // targets 3, 11, 3, 11 after 3, 3, 11, 3
  EXPECT_EQ(m.evaluate(right, 1).correct, 4u);
  EXPECT_EQ(m.evaluate(wrong, 1).correct, 0u);
  EXPECT_EQ(m.evaluate(half, 1).correct, 2u);
  std::vector<std::uint8_t> two = right;
  two.insert(two.end(), half.begin(), half.end());
  const auto e = m.evaluate(two, 2);
  EXPECT_EQ(e.correct, 6u);
  EXPECT_EQ(e.predictions, 8u);
  EXPECT_EQ(e.loss, m.loss(two, 2));
}

}  // namespace
