// TGC kernels against naive scalar references written here from the header's contract.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "twinbed/kernels/rng.hpp"
#include "twinbed/kernels/tgc.hpp"

namespace tk = twinbed::kernels;

namespace {

std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

std::uint32_t key_of(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u & 0x7fffffffU;
}

// ---- naive quantiser: one element at a time, straight from the format description ----------------
struct NaiveQuant {
  std::vector<std::uint8_t> codes;
  std::vector<float> scales;
};

NaiveQuant naive_quantize(const std::vector<float>& x, const tk::QuantSpec& s) {
  const int qmax = (1 << (s.bits - 1)) - 1;
  const std::size_t n = x.size();
  NaiveQuant r{std::vector<std::uint8_t>((n * static_cast<std::size_t>(s.bits) + 7) / 8, 0), {}};
  for (std::size_t start = 0; start < n; start += s.block) {
    const std::size_t end = std::min(n, start + s.block);
    float amax = 0.0f;
    for (std::size_t i = start; i < end; ++i) amax = std::max(amax, std::fabs(x[i]));
    r.scales.push_back(amax / static_cast<float>(qmax));
    const float inv = amax > 0.0f ? static_cast<float>(qmax) / amax : 0.0f;
    for (std::size_t i = start; i < end; ++i) {
      const float u = s.rounding == tk::Rounding::nearest ? 0.5f : tk::rng::uniform(tk::rng::key(s.seed, i), i);
      const float v = x[i] * inv;
      const float t = v + u;
      int q = static_cast<int>(std::floor(t));
      q = std::clamp(q, -qmax, qmax);
      const auto c = static_cast<std::uint32_t>(q + qmax);
      for (int bit = 0; bit < s.bits; ++bit) {
        const std::size_t pos = i * static_cast<std::size_t>(s.bits) + static_cast<std::size_t>(bit);
        if ((c >> bit) & 1U) r.codes[pos / 8] = static_cast<std::uint8_t>(r.codes[pos / 8] | (1U << (pos % 8)));
      }
    }
  }
  return r;
}

std::vector<float> naive_dequantize(const std::vector<std::uint8_t>& codes, const std::vector<float>& scales,
                                    const tk::QuantSpec& s, std::size_t n) {
  const int qmax = (1 << (s.bits - 1)) - 1;
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t c = 0;
    for (int bit = 0; bit < s.bits; ++bit) {
      const std::size_t pos = i * static_cast<std::size_t>(s.bits) + static_cast<std::size_t>(bit);
      c |= static_cast<std::uint32_t>((codes[pos / 8] >> (pos % 8)) & 1U) << bit;
    }
    x[i] = static_cast<float>(static_cast<int>(c) - qmax) * scales[i / s.block];
  }
  return x;
}

struct QuantCase {
  int bits;
  std::size_t block;
  tk::Rounding rounding;
  std::size_t n;
};

class QuantizeTest : public ::testing::TestWithParam<QuantCase> {};

TEST_P(QuantizeTest, MatchesNaiveBitForBitAndMeetsErrorBound) {
  const QuantCase c = GetParam();
  const tk::QuantSpec spec{c.bits, c.block, c.rounding, 0x1234abcdULL};
  std::vector<float> x = random_vector(c.n, 7);
  if (c.n > 3) x[2] = 0.0f;  // exact zeros and a block of zeros must survive
  const NaiveQuant want = naive_quantize(x, spec);
  std::vector<std::uint8_t> codes(tk::quant_code_bytes(c.n, c.bits));
  std::vector<float> scales(tk::quant_num_blocks(c.n, spec));
  tk::cpu::quantize(x, spec, codes, scales);
  ASSERT_EQ(codes, want.codes);
  ASSERT_EQ(scales, want.scales);

  std::vector<float> back(c.n);
  tk::cpu::dequantize(codes, scales, spec, back);
  const std::vector<float> naive_back = naive_dequantize(codes, scales, spec, c.n);
  ASSERT_EQ(back, naive_back);
  // The bound of the bit width: half a step (nearest) or one step (stochastic), plus fp32 rounding.
  for (std::size_t i = 0; i < c.n; ++i) {
    const float scale = scales[i / c.block];
    const float step_bound = c.rounding == tk::Rounding::nearest ? 0.5f : 1.0f;
    const int qmax = (1 << (c.bits - 1)) - 1;
    const float tol = step_bound * scale + 4e-7f * scale * static_cast<float>(qmax);
    ASSERT_LE(std::fabs(back[i] - x[i]), tol) << "i=" << i << " bits=" << c.bits;
  }
}

std::vector<QuantCase> quant_cases() {
  std::vector<QuantCase> v;
  for (int bits : {2, 4, 8, 16})
    for (auto r : {tk::Rounding::nearest, tk::Rounding::stochastic})
      for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{5000}, std::size_t{1000003}})
        // 1544 = 8·193: blocks longer than the CPU's 1024-element tile that end in a partial chunk.
        for (std::size_t block : {std::size_t{8}, std::size_t{24}, std::size_t{256}, std::size_t{1544}}) {
          if (n == 1000003 && block != 256) continue;  // the large size once per width and rounding
          if (n == 5000 && block != 1544) continue;
          v.push_back({bits, block, r, n});
        }
  return v;
}

INSTANTIATE_TEST_SUITE_P(AllWidths, QuantizeTest, ::testing::ValuesIn(quant_cases()),
                         [](const auto& param_info) {
                           const QuantCase& c = param_info.param;
                           return "b" + std::to_string(c.bits) + "_blk" + std::to_string(c.block) + "_n" +
                                  std::to_string(c.n) + (c.rounding == tk::Rounding::nearest ? "_nearest" : "_stoch");
                         });

TEST(Quantize, StochasticRoundingIsUnbiased) {
  // A constant 0.3 in blocks whose amax is 1: at 2 bits the levels are −1, 0, 1, so each element
  // rounds to 0 or 1; the mean of many must approach 0.3.
  const std::size_t n = 200000;
  std::vector<float> x(n, 0.3f);
  for (std::size_t i = 0; i < n; i += 64) x[i] = 1.0f;
  const tk::QuantSpec spec{2, 64, tk::Rounding::stochastic, 99};
  std::vector<std::uint8_t> codes(tk::quant_code_bytes(n, 2));
  std::vector<float> scales(tk::quant_num_blocks(n, spec));
  tk::cpu::quantize(x, spec, codes, scales);
  std::vector<float> back(n);
  tk::cpu::dequantize(codes, scales, spec, back);
  double sum = 0.0;
  std::size_t count = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (i % 64 != 0) {
      sum += back[i];
      ++count;
    }
  EXPECT_NEAR(sum / static_cast<double>(count), 0.3, 0.005);
}

TEST(Quantize, PayloadBytesAreExact) {
  const tk::QuantSpec s4{4, 256, tk::Rounding::nearest, 0};
  EXPECT_EQ(tk::quant_code_bytes(1000003, 4), 500002u);
  EXPECT_EQ(tk::quant_num_blocks(1000003, s4), 3907u);
  EXPECT_EQ(tk::quant_payload_bytes(1000003, s4), 500002u + 4u * 3907u);
  EXPECT_EQ(tk::quant_code_bytes(7, 2), 2u);
  EXPECT_EQ(tk::quant_code_bytes(7, 16), 14u);
  EXPECT_EQ(tk::sparse_payload_bytes(1000), 8000u);
  const tk::QuantSpec s8{8, 128, tk::Rounding::nearest, 0};
  EXPECT_EQ(tk::sparse_quant_payload_bytes(1000, s8), 4000u + 1000u + 4u * 8u);
}

TEST(Quantize, AdaptiveBitsFollowTheCrestFactor) {
  // Crest 1 (all ±1): relative noise 1/(√12·7) = 0.041 at 4 bits.
  std::vector<float> flat(4096);
  for (std::size_t i = 0; i < flat.size(); ++i) flat[i] = i % 2 ? 1.0f : -1.0f;
  EXPECT_EQ(tk::cpu::choose_bits(flat, 256, 0.05f), 4);
  EXPECT_EQ(tk::cpu::choose_bits(flat, 256, 0.01f), 8);
  // One spike of 1000 in a block of ones: crest ≈ 16·1000/√(255 + 10⁶) ≈ 15.8 → needs 16 bits at 1%.
  std::vector<float> spiky(flat);
  spiky[300] = 1000.0f;
  EXPECT_EQ(tk::cpu::choose_bits(spiky, 256, 0.01f), 16);
  EXPECT_EQ(tk::cpu::choose_bits(spiky, 256, 0.1f), 8);
  EXPECT_EQ(tk::cpu::choose_bits(std::vector<float>(100, 0.0f), 8, 0.01f), 4);
}

TEST(Quantize, EfQuantizeEqualsComposition) {
  for (int bits : {2, 4, 8, 16})
    for (std::size_t n : {std::size_t{1003}, std::size_t{5003}})
      for (std::size_t block : {std::size_t{64}, std::size_t{1544}}) {
        const tk::QuantSpec spec{bits, block, tk::Rounding::stochastic, 5};
        const std::vector<float> g = random_vector(n, 1);
        std::vector<float> e = random_vector(n, 2, 0.1f);
        std::vector<float> acc(n);
        for (std::size_t i = 0; i < n; ++i) acc[i] = g[i] + e[i];
        const NaiveQuant want = naive_quantize(acc, spec);
        const std::vector<float> deq = naive_dequantize(want.codes, want.scales, spec, n);
        std::vector<std::uint8_t> codes(tk::quant_code_bytes(n, bits));
        std::vector<float> scales(tk::quant_num_blocks(n, spec));
        tk::cpu::ef_quantize(g, e, spec, codes, scales);
        ASSERT_EQ(codes, want.codes) << "bits " << bits << " n " << n << " block " << block;
        ASSERT_EQ(scales, want.scales);
        for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(e[i], acc[i] - deq[i]) << "i " << i;
      }
}

// ---- sparsification -------------------------------------------------------------------------------
std::vector<std::uint32_t> naive_topk(const std::vector<float>& x, std::size_t k) {
  std::vector<std::uint32_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0u);
  std::stable_sort(idx.begin(), idx.end(), [&](std::uint32_t a, std::uint32_t b) { return key_of(x[a]) > key_of(x[b]); });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

void expect_topk(const std::vector<float>& x, std::size_t k) {
  std::vector<std::uint32_t> idx(k);
  std::vector<float> val(k);
  EXPECT_EQ(tk::cpu::topk(x, k, idx, val), k);
  const std::vector<std::uint32_t> want = naive_topk(x, k);
  ASSERT_EQ(idx, want) << "n=" << x.size() << " k=" << k;
  // Bit patterns, so that NaN entries compare too.
  for (std::size_t j = 0; j < k; ++j) ASSERT_EQ(key_of(val[j]) | (std::signbit(val[j]) ? 0x80000000U : 0U),
                                                key_of(x[idx[j]]) | (std::signbit(x[idx[j]]) ? 0x80000000U : 0U));
}

TEST(TopK, ReturnsExactlyTheKLargestMagnitudes) {
  for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{1000003}}) {
    const std::vector<float> x = random_vector(n, static_cast<std::uint32_t>(n));
    for (std::size_t k : {std::size_t{0}, std::size_t{1}, n / 100, n / 10, n / 2, n}) {
      if (k > n) continue;
      expect_topk(x, k);
    }
  }
}

TEST(TopK, TiesGoToTheLowerIndex) {
  // Only five distinct magnitudes, both signs: almost every boundary is a tie.
  std::mt19937 gen(3);
  std::vector<float> x(100003);
  for (auto& v : x) v = static_cast<float>(static_cast<int>(gen() % 11) - 5);
  for (std::size_t k : {std::size_t{1}, std::size_t{17}, std::size_t{5000}, std::size_t{50000}}) expect_topk(x, k);
  // All equal: the first k indices.
  std::vector<float> same(1000, -2.0f);
  std::vector<std::uint32_t> idx(10);
  std::vector<float> val(10);
  tk::cpu::topk(same, 10, idx, val);
  for (std::uint32_t j = 0; j < 10; ++j) EXPECT_EQ(idx[j], j);
}

TEST(TopK, AwkwardDistributions) {
  const std::size_t n = 200003;  // above the sampling size, so the sampled bound and radix select run
  // All equal, large: the first k indices, for every k including 1 and n.
  const std::vector<float> same(n, 0.75f);
  for (std::size_t k : {std::size_t{1}, std::size_t{8}, n / 3, n - 1, n}) expect_topk(same, k);
  // Two magnitudes, 99% of the entries at the larger: far more candidates than the sample expects.
  std::vector<float> two(n, -3.0f);
  for (std::size_t i = 0; i < n; i += 100) two[i] = 1.0f;
  for (std::size_t k : {std::size_t{1}, std::size_t{100}, n / 2, n - n / 100, n - n / 100 + 1}) expect_topk(two, k);
  // Keys that share their top 11 and 22 bits (neighbouring floats), so every radix level decides.
  std::vector<float> close(n);
  for (std::size_t i = 0; i < n; ++i)
    close[i] = std::nextafter(1.0f, 2.0f) * (i % 2 ? -1.0f : 1.0f) + static_cast<float>(i % 7) * 1.2e-7f;
  for (std::size_t k : {std::size_t{1}, std::size_t{3}, n / 7, n / 2}) expect_topk(close, k);
  // Increasing magnitudes (a structured tensor: the top-k sit together at the end) and zeros of both signs.
  std::vector<float> ramp(n);
  for (std::size_t i = 0; i < n; ++i) ramp[i] = (i % 3 == 0 ? -0.0f : 0.0f) + static_cast<float>(i / 4) * 1e-3f;
  for (std::size_t k : {std::size_t{1}, n / 1000, n / 4, n}) expect_topk(ramp, k);
  // Denormals, infinities and NaNs: magnitude order is the bit order, so NaN > inf > finite > denormal.
  std::vector<float> odd = random_vector(n, 21);
  for (std::size_t i = 0; i < n; i += 997) odd[i] = std::numeric_limits<float>::denorm_min() * static_cast<float>(i % 5);
  odd[17] = std::numeric_limits<float>::infinity();
  odd[40000] = -std::numeric_limits<float>::infinity();
  odd[123456] = std::numeric_limits<float>::quiet_NaN();
  for (std::size_t k : {std::size_t{1}, std::size_t{2}, std::size_t{3}, n / 100}) expect_topk(odd, k);
  std::vector<std::uint32_t> idx(3);
  std::vector<float> val(3);
  tk::cpu::topk(odd, 3, idx, val);
  EXPECT_EQ(idx, (std::vector<std::uint32_t>{17, 40000, 123456}));
}

TEST(TopK, SmallAndOddSizes) {
  for (std::size_t n : {std::size_t{2}, std::size_t{8}, std::size_t{9}, std::size_t{15}, std::size_t{17},
                        std::size_t{8191}, std::size_t{8193}, std::size_t{65537}}) {
    const std::vector<float> x = random_vector(n, static_cast<std::uint32_t>(n + 1));
    for (std::size_t k = 1; k <= n; k = k * 3 + 1) expect_topk(x, k);
    expect_topk(x, n);
  }
}

TEST(TopK, EstimatedThresholdKeepsAboutK) {
  const std::size_t n = 1000003, k = 10000;
  const std::vector<float> x = random_vector(n, 11);
  // With every element sampled the estimate is the exact k-th magnitude.
  const std::vector<std::uint32_t> want = naive_topk(x, k);
  float kth = 1e30f;
  for (std::uint32_t i : want) kth = std::min(kth, std::fabs(x[i]));
  EXPECT_EQ(tk::cpu::estimate_topk_threshold(x, k, n, 1), kth);
  // From 1% of the entries: within 25% of k kept (DGC's point: cheap, approximate).
  const float t = tk::cpu::estimate_topk_threshold(x, k, n / 100, 1);
  std::size_t kept = 0;
  for (float v : x) kept += std::fabs(v) >= t ? 1 : 0;
  EXPECT_NEAR(static_cast<double>(kept), static_cast<double>(k), 0.25 * k);
}

TEST(Sparsify, ThresholdMatchesNaiveIncludingTruncation) {
  for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{1000003}}) {
    const std::vector<float> x = random_vector(n, 5);
    const float thr = 1.5f;
    std::vector<std::uint32_t> want;
    for (std::size_t i = 0; i < n; ++i)
      if (std::fabs(x[i]) >= thr) want.push_back(static_cast<std::uint32_t>(i));
    std::vector<std::uint32_t> idx(want.size() + 3);
    std::vector<float> val(want.size() + 3);
    ASSERT_EQ(tk::cpu::sparsify_threshold(x, thr, idx, val), want.size());
    for (std::size_t j = 0; j < want.size(); ++j) {
      ASSERT_EQ(idx[j], want[j]);
      ASSERT_EQ(val[j], x[want[j]]);
    }
    if (want.size() >= 2) {  // capacity below the count: the first ones are written, the count is total
      std::vector<std::uint32_t> small_idx(want.size() / 2);
      std::vector<float> small_val(want.size() / 2);
      ASSERT_EQ(tk::cpu::sparsify_threshold(x, thr, small_idx, small_val), want.size());
      for (std::size_t j = 0; j < small_idx.size(); ++j) ASSERT_EQ(small_idx[j], want[j]);
    }
  }
}

TEST(Sparsify, EveryCapacityAndTailLength) {
  // Capacities around the 8-lane steps of the vector path and sizes with every tail length.
  for (std::size_t n : {std::size_t{0}, std::size_t{5}, std::size_t{8}, std::size_t{29}, std::size_t{4099}}) {
    std::vector<float> x = random_vector(n, static_cast<std::uint32_t>(n + 7));
    for (std::size_t i = 0; i < n; i += 5) x[i] = 2.0f;  // dense runs of hits
    std::vector<std::uint32_t> want;
    for (std::size_t i = 0; i < n; ++i)
      if (std::fabs(x[i]) >= 0.5f) want.push_back(static_cast<std::uint32_t>(i));
    for (std::size_t cap : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{9},
                            want.size() / 2, want.size(), want.size() + 9}) {
      std::vector<std::uint32_t> idx(cap);
      std::vector<float> val(cap, -1.0f);
      ASSERT_EQ(tk::cpu::sparsify_threshold(x, 0.5f, idx, val), want.size()) << "n=" << n << " cap=" << cap;
      for (std::size_t j = 0; j < std::min(cap, want.size()); ++j) {
        ASSERT_EQ(idx[j], want[j]) << "n=" << n << " cap=" << cap << " j=" << j;
        ASSERT_EQ(val[j], x[want[j]]);
      }
      // The fused error-feedback form: the written hits leave e, everything else is g + e.
      const std::vector<float> g = random_vector(n, static_cast<std::uint32_t>(n + 8), 0.25f);
      std::vector<float> e = x;
      std::vector<std::uint32_t> want_ef;
      for (std::size_t i = 0; i < n; ++i)
        if (std::fabs(x[i] + g[i]) >= 0.5f) want_ef.push_back(static_cast<std::uint32_t>(i));
      ASSERT_EQ(tk::cpu::ef_sparsify_threshold(g, e, 0.5f, idx, val), want_ef.size());
      std::vector<bool> sent(n, false);
      for (std::size_t j = 0; j < std::min(cap, want_ef.size()); ++j) {
        ASSERT_EQ(idx[j], want_ef[j]);
        ASSERT_EQ(val[j], x[want_ef[j]] + g[want_ef[j]]);
        sent[want_ef[j]] = true;
      }
      for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(e[i], sent[i] ? 0.0f : x[i] + g[i]) << i;
    }
  }
}

TEST(Sparsify, ScatterAddPutsValuesBack) {
  const std::vector<float> x = random_vector(1007, 9);
  std::vector<std::uint32_t> idx(100);
  std::vector<float> val(100);
  tk::cpu::topk(x, 100, idx, val);
  std::vector<float> out(x.size(), 1.0f);
  tk::cpu::scatter_add(idx, val, out);
  std::size_t j = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (j < idx.size() && idx[j] == i) {
      EXPECT_EQ(out[i], 1.0f + x[i]);
      ++j;
    } else {
      EXPECT_EQ(out[i], 1.0f);
    }
  }
}

// ---- error feedback: nothing is lost, only delayed ---------------------------------------------------
enum class Compressor { quant4, quant2, threshold, topk };

class ErrorFeedbackTest : public ::testing::TestWithParam<Compressor> {};

TEST_P(ErrorFeedbackTest, ConservesTheGradientOverManySteps) {
  const std::size_t n = 10007, steps = 60;
  std::vector<float> e(n, 0.0f);
  std::vector<double> sent(n, 0.0), total(n, 0.0);
  for (std::size_t step = 0; step < steps; ++step) {
    const std::vector<float> g = random_vector(n, static_cast<std::uint32_t>(100 + step));
    for (std::size_t i = 0; i < n; ++i) total[i] += g[i];
    switch (GetParam()) {
      case Compressor::quant4:
      case Compressor::quant2: {
        const int bits = GetParam() == Compressor::quant4 ? 4 : 2;
        const tk::QuantSpec spec{bits, 128, tk::Rounding::stochastic, step};
        std::vector<std::uint8_t> codes(tk::quant_code_bytes(n, bits));
        std::vector<float> scales(tk::quant_num_blocks(n, spec));
        tk::cpu::ef_quantize(g, e, spec, codes, scales);
        std::vector<float> t(n);
        tk::cpu::dequantize(codes, scales, spec, t);
        for (std::size_t i = 0; i < n; ++i) sent[i] += t[i];
        break;
      }
      case Compressor::threshold: {
        std::vector<std::uint32_t> idx(200);  // capacity below the count on purpose: truncation loses nothing
        std::vector<float> val(200);
        const std::size_t count = tk::cpu::ef_sparsify_threshold(g, e, 1.0f, idx, val);
        for (std::size_t j = 0; j < std::min(count, idx.size()); ++j) sent[idx[j]] += val[j];
        break;
      }
      case Compressor::topk: {
        tk::cpu::ef_accumulate(g, e);
        std::vector<std::uint32_t> idx(100);
        std::vector<float> val(100);
        tk::cpu::topk(e, 100, idx, val);
        tk::cpu::ef_clear_sent(idx, e);
        for (std::size_t j = 0; j < idx.size(); ++j) sent[idx[j]] += val[j];
        break;
      }
    }
  }
  double max_err = 0.0, sum_sent = 0.0, sum_total = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    max_err = std::max(max_err, std::fabs(sent[i] + e[i] - total[i]));
    sum_sent += sent[i] + e[i];
    sum_total += total[i];
  }
  // Per element: fp32 rounding of the running residual, a few ulps of |g + e| per step.
  EXPECT_LT(max_err, 1e-4);
  EXPECT_NEAR(sum_sent, sum_total, 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Compressors, ErrorFeedbackTest,
                         ::testing::Values(Compressor::quant4, Compressor::quant2, Compressor::threshold,
                                           Compressor::topk));

// ---- bad arguments -------------------------------------------------------------------------------------
template <class F>
void expect_invalid(F&& f, const std::string& needle) {
  try {
    f();
    FAIL() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TgcErrors, BadArgumentsThrowClearly) {
  std::vector<float> x(100, 1.0f);
  std::vector<std::uint8_t> codes(100);
  std::vector<float> scales(1);
  expect_invalid([&] { tk::cpu::quantize(x, {3, 128, tk::Rounding::nearest, 0}, codes, scales); },
                 "quantize: bits must be one of {2, 4, 8, 16}, got 3");
  expect_invalid([&] { tk::cpu::quantize(x, {8, 12, tk::Rounding::nearest, 0}, codes, scales); },
                 "block must be a positive multiple of 8");
  expect_invalid([&] { tk::cpu::quantize(x, {8, 128, tk::Rounding::nearest, 0}, std::span(codes).first(99), scales); },
                 "quantize: codes has 99 elements");
  std::vector<std::uint32_t> idx(101);
  std::vector<float> val(101);
  expect_invalid([&] { tk::cpu::topk(x, 101, idx, val); }, "topk: k = 101 exceeds n = 100");
  expect_invalid([&] { tk::cpu::topk(x, 10, idx, val); }, "topk: indices has 101 elements but k has 10");
  std::vector<float> e(99);
  expect_invalid([&] { tk::cpu::ef_accumulate(x, e); }, "ef_accumulate: g has 100 elements but e has 99");
  expect_invalid([&] { tk::cpu::sparsify_threshold(x, 0.0f, idx, val); }, "threshold must be positive");
  expect_invalid([&] { (void)tk::cpu::choose_bits(x, 256, 0.0f); }, "rel_tol must be positive");
  expect_invalid([&] { (void)tk::quant_code_bytes(10, 32); }, "bits must be one of");
  const std::vector<std::uint32_t> bad{100};
  const std::vector<float> one{1.0f};
  EXPECT_THROW(tk::cpu::scatter_add(bad, one, x), std::out_of_range);
}

}  // namespace
