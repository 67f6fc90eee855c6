// DSA kernels and the sparse GEMM paths against naive scalar references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "twinbed/kernels/dsa.hpp"
#include "twinbed/kernels/sparse_gemm.hpp"

namespace tk = twinbed::kernels;

namespace {

std::vector<float> random_vector(std::size_t n, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

std::vector<float> abs_scores(std::size_t n, std::uint32_t seed) {
  std::vector<float> s = random_vector(n, seed);
  for (auto& v : s) v = std::fabs(v);
  return s;
}

TEST(Dsa, ImportanceMatchesNaive) {
  for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{1000003}}) {
    const auto g = random_vector(n, 1), m = random_vector(n, 2);
    std::vector<float> s(n);
    tk::cpu::importance(g, m, 0.7f, s);
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(s[i], 0.7f * std::fabs(g[i]) + (1.0f - 0.7f) * std::fabs(m[i]));
  }
}

TEST(Dsa, UnstructuredMaskHasTheTargetDensityAndKeepsTheBest) {
  for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{1000003}}) {
    const auto s = abs_scores(n, 3);
    for (double density : {0.0, 0.25, 0.3, 1.0}) {
      std::vector<std::uint8_t> mask(n);
      const std::size_t k = tk::cpu::mask_unstructured(s, density, mask);
      const auto want_k = static_cast<std::size_t>(std::llround(density * static_cast<double>(n)));
      ASSERT_EQ(k, want_k);
      ASSERT_EQ(static_cast<std::size_t>(std::count(mask.begin(), mask.end(), 1)), want_k);
      // Naive: the want_k largest scores (stable: lower index first on ties).
      std::vector<std::size_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return s[a] > s[b]; });
      for (std::size_t j = 0; j < n; ++j) ASSERT_EQ(mask[order[j]], j < want_k ? 1 : 0) << "rank " << j;
    }
  }
}

TEST(Dsa, UnstructuredMaskBreaksTiesTowardsTheLowerIndex) {
  // Few distinct scores, so the k-th score is shared by thousands of entries; and all scores equal.
  const std::size_t n = 100003;
  std::vector<float> few(n), same(n, 0.5f);
  for (std::size_t i = 0; i < n; ++i) few[i] = static_cast<float>((i * 7919) % 5);
  for (const auto* s : {&few, &same}) {
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return (*s)[a] > (*s)[b]; });
    for (double density : {1e-5, 0.1, 0.3, 0.5, 0.99999}) {
      std::vector<std::uint8_t> mask(n, 7);
      const std::size_t k = tk::cpu::mask_unstructured(*s, density, mask);
      for (std::size_t j = 0; j < n; ++j) ASSERT_EQ(mask[order[j]], j < k ? 1 : 0) << "density " << density << " rank " << j;
    }
  }
}

TEST(Dsa, BlockMaskMatchesNaiveOnRaggedEdges) {
  const std::size_t rows = 37, cols = 53, b = 8;  // 5 × 7 blocks, the last row and column partial
  const auto s = abs_scores(rows * cols, 4);
  const std::size_t br = 5, bc = 7;
  std::vector<double> mean(br * bc, 0.0);
  std::vector<std::size_t> cnt(br * bc, 0);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) {
      mean[(r / b) * bc + c / b] += s[r * cols + c];
      ++cnt[(r / b) * bc + c / b];
    }
  for (std::size_t i = 0; i < mean.size(); ++i) mean[i] /= static_cast<double>(cnt[i]);
  std::vector<std::size_t> order(br * bc);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t c) { return mean[a] > mean[c]; });
  std::vector<std::uint8_t> block_mask(br * bc), mask(rows * cols);
  const std::size_t active = tk::cpu::mask_block(s, rows, cols, b, 0.4, block_mask, mask);
  const std::size_t kb = 14;  // round(0.4 · 35)
  std::size_t want_active = 0;
  for (std::size_t j = 0; j < order.size(); ++j) {
    ASSERT_EQ(block_mask[order[j]], j < kb ? 1 : 0);
    if (j < kb) want_active += cnt[order[j]];
  }
  EXPECT_EQ(active, want_active);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) ASSERT_EQ(mask[r * cols + c], block_mask[(r / b) * bc + c / b]);
}

TEST(Dsa, TwoFourMaskKeepsTheTwoLargestOfEveryFour) {
  const std::size_t rows = 7, cols = 1000;
  auto s = abs_scores(rows * cols, 5);
  s[0] = s[1] = s[2] = s[3] = 1.0f;  // a fully tied group: the first two columns win
  std::vector<std::uint8_t> mask(rows * cols);
  EXPECT_EQ(tk::cpu::mask_nm(s, rows, cols, 2, 4, mask), rows * cols / 2);
  EXPECT_EQ(mask[0] + mask[1], 2);
  for (std::size_t g = 0; g < rows * cols; g += 4) {
    ASSERT_EQ(mask[g] + mask[g + 1] + mask[g + 2] + mask[g + 3], 2);
    float min_kept = 1e30f, max_dropped = -1.0f;
    for (std::size_t i = 0; i < 4; ++i) (mask[g + i] ? min_kept : max_dropped) =
        mask[g + i] ? std::min(min_kept, s[g + i]) : std::max(max_dropped, s[g + i]);
    ASSERT_GE(min_kept, max_dropped);
  }
}

TEST(Dsa, MaskedSgdTouchesOnlyActiveParameters) {
  for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{1000003}}) {
    auto p = random_vector(n, 6), m = random_vector(n, 7);
    const auto g = random_vector(n, 8);
    std::vector<std::uint8_t> mask(n);
    for (std::size_t i = 0; i < n; ++i) mask[i] = (i * 7919) % 10 < 3 ? 1 : 0;
    const auto p0 = p, m0 = m;
    const tk::SgdSpec spec{0.1f, 0.9f, 0.01f};
    tk::cpu::masked_sgd(p, g, m, mask, spec);
    for (std::size_t i = 0; i < n; ++i) {
      if (!mask[i]) {
        ASSERT_EQ(p[i], p0[i]);
        ASSERT_EQ(m[i], m0[i]);
        continue;
      }
      const float mi = spec.momentum * m0[i] + (g[i] + spec.weight_decay * p0[i]);
      ASSERT_EQ(m[i], mi);
      ASSERT_EQ(p[i], p0[i] - spec.lr * mi);
    }
  }
}

TEST(Dsa, MaskedAdamMatchesNaive) {
  for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{1000003}}) {
    auto p = random_vector(n, 9), m = random_vector(n, 10), v = abs_scores(n, 11);
    const auto g = random_vector(n, 12);
    std::vector<std::uint8_t> mask(n);
    for (std::size_t i = 0; i < n; ++i) mask[i] = i % 3 == 0 ? 1 : 0;
    const auto p0 = p, m0 = m, v0 = v;
    const tk::AdamSpec spec{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
    const int step = 5;
    tk::cpu::masked_adam(p, g, m, v, mask, spec, step);
    const double c1 = 1.0 - std::pow(0.9, step), c2 = 1.0 - std::pow(0.999, step);
    for (std::size_t i = 0; i < n; ++i) {
      if (!mask[i]) {
        ASSERT_EQ(p[i], p0[i]);
        ASSERT_EQ(m[i], m0[i]);
        ASSERT_EQ(v[i], v0[i]);
        continue;
      }
      const double mi = 0.9 * m0[i] + 0.1 * g[i];
      const double vi = 0.999 * v0[i] + 0.001 * double(g[i]) * g[i];
      const double pi = p0[i] - 1e-3 * (mi / c1) / (std::sqrt(vi / c2) + 1e-8) - 1e-3 * 0.01 * p0[i];
      ASSERT_NEAR(m[i], mi, 1e-6 * (1 + std::fabs(mi)));
      ASSERT_NEAR(v[i], vi, 1e-6 * (1 + vi));
      ASSERT_NEAR(p[i], pi, 1e-6 * (1 + std::fabs(pi)));
    }
  }
}

// ---- GEMM paths -------------------------------------------------------------------------------------
std::vector<float> naive_gemm_nt(const std::vector<float>& x, std::size_t batch, std::size_t in,
                                 const std::vector<float>& w, std::size_t out) {
  std::vector<float> y(batch * out);
  for (std::size_t r = 0; r < batch; ++r)
    for (std::size_t o = 0; o < out; ++o) {
      double acc = 0.0;
      for (std::size_t i = 0; i < in; ++i) acc += double(x[r * in + i]) * w[o * in + i];
      y[r * out + o] = static_cast<float>(acc);
    }
  return y;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, std::size_t k) {
  ASSERT_EQ(got.size(), want.size());
  // fp32 accumulation of k products of N(0,1) values: error grows like √k ulps of the partial sums.
  const float tol = 1e-5f * std::sqrt(static_cast<float>(k)) * 4.0f;
  for (std::size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], tol * (1.0f + std::fabs(want[i]))) << i;
}

TEST(SparseGemm, DenseMatchesNaive) {
  const std::size_t batch = 7, in = 53, out = 29;
  const auto x = random_vector(batch * in, 13), w = random_vector(out * in, 14);
  std::vector<float> y(batch * out);
  tk::cpu::gemm_nt(x, batch, in, w, out, y);
  expect_close(y, naive_gemm_nt(x, batch, in, w, out), in);
}

TEST(SparseGemm, BlockSparseMatchesDenseOfTheMaskedWeight) {
  const std::size_t batch = 7, in = 80, out = 48, b = 16;
  const auto x = random_vector(batch * in, 15);
  auto w = random_vector(out * in, 16);
  const auto s = abs_scores(out * in, 17);
  std::vector<std::uint8_t> bm((out / b) * (in / b)), mask(out * in);
  tk::cpu::mask_block(s, out, in, b, 0.4, bm, mask);
  const tk::BsrMatrix bsr = tk::bsr_from_dense(w, out, in, b, bm);
  EXPECT_EQ(bsr.nnz_blocks(), 6u);  // round(0.4 · 15)
  for (std::size_t i = 0; i < w.size(); ++i) w[i] *= mask[i];
  std::vector<float> y(batch * out, 123.0f);
  tk::cpu::bsr_gemm_nt(x, batch, bsr.view(), y);
  expect_close(y, naive_gemm_nt(x, batch, in, w, out), in);
}

TEST(SparseGemm, TwoFourMatchesDenseOfThePrunedWeight) {
  const std::size_t batch = 19, in = 44, out = 13;
  const auto x = random_vector(batch * in, 18), w = random_vector(out * in, 19);
  const tk::Sparse24Matrix sp = tk::prune_24(w, out, in);
  const std::vector<float> wd = tk::densify_24(sp.view());
  std::size_t nonzero = 0;
  for (float v : wd) nonzero += v != 0.0f ? 1 : 0;
  EXPECT_EQ(nonzero, out * in / 2);
  std::vector<float> y(batch * out);
  tk::cpu::sparse24_gemm_nt(x, batch, sp.view(), y);
  expect_close(y, naive_gemm_nt(x, batch, in, wd, out), in);
}

TEST(DsaErrors, BadArgumentsThrowClearly) {
  std::vector<float> s(100, 1.0f);
  std::vector<std::uint8_t> mask(100), small(99);
  EXPECT_THROW(tk::cpu::mask_unstructured(s, 1.5, mask), std::invalid_argument);
  EXPECT_THROW(tk::cpu::mask_unstructured(s, 0.5, small), std::invalid_argument);
  EXPECT_THROW(tk::cpu::mask_nm(s, 10, 10, 2, 4, mask), std::invalid_argument);  // 10 % 4 != 0
  EXPECT_THROW(tk::cpu::mask_nm(s, 25, 4, 5, 4, mask), std::invalid_argument);   // n > m
  std::vector<float> p(100), g(100), m(99);
  try {
    tk::cpu::masked_sgd(p, g, m, mask, {});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "masked_sgd: momentum has 99 elements but params has 100");
  }
  std::vector<float> v(100), mm(100);
  EXPECT_THROW(tk::cpu::masked_adam(p, g, mm, v, mask, {}, 0), std::invalid_argument);
  std::vector<std::uint8_t> bm(4);
  EXPECT_THROW(tk::bsr_from_dense(s, 10, 10, 3, bm), std::invalid_argument);
  EXPECT_THROW(tk::prune_24(s, 10, 10), std::invalid_argument);
}

}  // namespace
