// LoRA against a naive forward and against finite differences of a scalar loss.
#include <gtest/gtest.h>

#include <array>
#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

#include "twinbed/kernels/lora.hpp"

namespace tk = twinbed::kernels;

namespace {

std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

struct Layer {
  tk::LoraShape s;
  std::vector<float> x, w, a, b;
};

Layer make_layer(std::size_t batch, std::size_t in, std::size_t out, std::size_t rank) {
  Layer l{{batch, in, out, rank, 16.0f}, random_vector(batch * in, 1), random_vector(out * in, 2, 0.1f),
          random_vector(rank * in, 3, 0.1f), random_vector(out * rank, 4, 0.1f)};
  return l;
}

std::vector<double> naive_forward(const Layer& l) {
  const auto& s = l.s;
  std::vector<double> y(s.batch * s.out);
  for (std::size_t r = 0; r < s.batch; ++r) {
    std::vector<double> h(s.rank, 0.0);
    for (std::size_t k = 0; k < s.rank; ++k)
      for (std::size_t i = 0; i < s.in; ++i) h[k] += double(l.x[r * s.in + i]) * l.a[k * s.in + i];
    for (std::size_t o = 0; o < s.out; ++o) {
      double acc = 0.0;
      for (std::size_t i = 0; i < s.in; ++i) acc += double(l.x[r * s.in + i]) * l.w[o * s.in + i];
      double low = 0.0;
      for (std::size_t k = 0; k < s.rank; ++k) low += h[k] * l.b[o * s.rank + k];
      y[r * s.out + o] = acc + double(s.scale()) * low;
    }
  }
  return y;
}

// Loss L = Σ y ⊙ R for a fixed random R, so dL/dy = R.
double loss(const Layer& l, const std::vector<float>& r) {
  const auto y = naive_forward(l);
  double acc = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i) acc += y[i] * r[i];
  return acc;
}

TEST(Lora, ForwardMatchesNaive) {
  for (auto [batch, in, out, rank] : {std::array<std::size_t, 4>{1, 7, 5, 1}, std::array<std::size_t, 4>{7, 33, 17, 4},
                                      std::array<std::size_t, 4>{13, 64, 96, 8}}) {
    const Layer l = make_layer(batch, in, out, rank);
    std::vector<float> h(batch * rank), y(batch * out);
    tk::cpu::lora_forward(l.s, l.x, l.w, l.a, l.b, h, y);
    const auto want = naive_forward(l);
    for (std::size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], want[i], 1e-4 * (1 + std::fabs(want[i])));
  }
}

TEST(Lora, GradientsMatchFiniteDifferences) {
  Layer l = make_layer(5, 23, 11, 3);
  const auto& s = l.s;
  const auto r = random_vector(s.batch * s.out, 5);
  std::vector<float> h(s.batch * s.rank), y(s.batch * s.out);
  tk::cpu::lora_forward(s, l.x, l.w, l.a, l.b, h, y);
  std::vector<float> da(s.rank * s.in), db(s.out * s.rank), dx(s.batch * s.in);
  tk::cpu::lora_backward(s, l.x, l.w, l.a, l.b, h, r, da, db, dx);
  // L is linear in each of A, B and x separately, so a central difference is exact up to rounding.
  const float eps = 1e-2f;
  auto check = [&](std::vector<float>& param, const std::vector<float>& grad, const char* name) {
    for (std::size_t i = 0; i < param.size(); ++i) {
      const float keep = param[i];
      param[i] = keep + eps;
      const double up = loss(l, r);
      param[i] = keep - eps;
      const double down = loss(l, r);
      param[i] = keep;
      const double fd = (up - down) / (2.0 * eps);
      ASSERT_NEAR(grad[i], fd, 1e-3 * (1 + std::fabs(fd))) << name << "[" << i << "]";
    }
  };
  check(l.a, da, "dA");
  check(l.b, db, "dB");
  check(l.x, dx, "dx");
  // dx may be skipped.
  std::vector<float> da2(da.size()), db2(db.size());
  tk::cpu::lora_backward(s, l.x, l.w, l.a, l.b, h, r, da2, db2, {});
  EXPECT_EQ(da2, da);
  EXPECT_EQ(db2, db);
}

TEST(Lora, MergeThenUnmergeRestoresTheBase) {
  Layer l = make_layer(6, 40, 24, 4);
  const auto& s = l.s;
  std::vector<float> h(s.batch * s.rank), y(s.batch * s.out);
  tk::cpu::lora_forward(s, l.x, l.w, l.a, l.b, h, y);
  const auto w0 = l.w;
  tk::cpu::lora_merge(s, l.w, l.a, l.b);
  // Merged W alone (B = 0) gives the same output.
  Layer merged = l;
  std::fill(merged.b.begin(), merged.b.end(), 0.0f);
  std::vector<float> y2(y.size());
  tk::cpu::lora_forward(s, merged.x, merged.w, merged.a, merged.b, h, y2);
  for (std::size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y2[i], y[i], 1e-4 * (1 + std::fabs(y[i])));
  tk::cpu::lora_unmerge(s, l.w, l.a, l.b);
  for (std::size_t i = 0; i < w0.size(); ++i) ASSERT_NEAR(l.w[i], w0[i], 1e-6);
}

TEST(LoraErrors, BadShapesThrow) {
  const Layer l = make_layer(2, 8, 6, 2);
  std::vector<float> h(4), y(11);
  try {
    tk::cpu::lora_forward(l.s, l.x, l.w, l.a, l.b, h, y);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "lora_forward: y has 11 elements but batch·out has 12");
  }
  tk::LoraShape zero = l.s;
  zero.rank = 0;
  std::vector<float> w(l.w);
  EXPECT_THROW(tk::cpu::lora_merge(zero, w, l.a, l.b), std::invalid_argument);
}

}  // namespace
