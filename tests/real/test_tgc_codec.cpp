// TgcCodec: the payload format shared by `twinbed train` and the CPU Plan backend.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/kernels/payload.hpp"
#include "twinbed/real/tgc_codec.hpp"

namespace twinbed::real {
namespace {

std::vector<float> gradient(std::size_t n, float phase) {
  std::vector<float> g(n);
  for (std::size_t i = 0; i < n; ++i) g[i] = std::sin(0.37f * static_cast<float>(i) + phase) * (1.0f + static_cast<float>(i % 7));
  return g;
}

TEST(TgcCodec, PayloadSizesAreThePassCharges) {
  TgcParams p;
  p.bits = 4;
  p.topk_fraction = 0.1;
  const TgcCodec c(p, 1000);
  EXPECT_EQ(c.kept(), 100u);
  EXPECT_EQ(c.payload_bytes(4), kernels::sparse_quant_payload_bytes(100, kernels::QuantSpec{4, 256}));
  EXPECT_EQ(static_cast<Bytes>(c.payload_bytes(4)), tgc_payload_bytes(1000, p));
  EXPECT_EQ(c.payload_floats(4), (c.payload_bytes(4) + 3) / 4);
}

TEST(TgcCodec, SparseFp32DeliversTheTopKExactlyAndKeepsTheRestInTheResidual) {
  TgcParams p;
  p.topk_fraction = 0.25;
  TgcCodec c(p, 64);
  const std::vector<float> g = gradient(64, 0.5f);
  std::vector<float> payload(c.payload_floats(0)), sum(64, 0.0f);
  c.encode(g, 0, payload);
  c.decode_add(payload, 0, sum);
  int sent = 0;
  for (std::size_t i = 0; i < 64; ++i) {
    // Every entry is either delivered or kept, exactly.
    EXPECT_EQ(sum[i] + c.residual()[i], g[i]) << i;
    if (sum[i] != 0) ++sent;
  }
  EXPECT_EQ(sent, 16);
}

TEST(TgcCodec, QuantisedErrorFeedbackKeepsTheQuantisationError) {
  TgcParams p;
  p.bits = 8;
  TgcCodec c(p, 512);
  const std::vector<float> g = gradient(512, 1.0f);
  std::vector<float> payload(c.payload_floats(8)), sum(512, 0.0f);
  c.encode(g, 8, payload);
  c.decode_add(payload, 8, sum);
  for (std::size_t i = 0; i < 512; ++i) EXPECT_NEAR(sum[i] + c.residual()[i], g[i], 1e-5f) << i;
}

TEST(TgcCodec, EncodingIsDeterministicAndDecodesAdd) {
  TgcParams p;
  p.bits = 4;
  p.topk_fraction = 0.5;
  p.error_feedback = false;
  TgcCodec a(p, 300), b(p, 300);
  const std::vector<float> g = gradient(300, 2.0f);
  std::vector<float> pa(a.payload_floats(4)), pb(b.payload_floats(4));
  a.encode(g, 4, pa);
  b.encode(g, 4, pb);
  EXPECT_EQ(pa, pb);
  std::vector<float> once(300, 0.0f), twice(300, 0.0f);
  a.decode_add(pa, 4, once);
  a.decode_add(pa, 4, twice);
  a.decode_add(pa, 4, twice);
  for (std::size_t i = 0; i < 300; ++i) EXPECT_EQ(twice[i], once[i] + once[i]);
}

TEST(TgcCodec, RefusesLosslessParametersAndWrongSizes) {
  EXPECT_THROW(TgcCodec(TgcParams{}, 10), InvalidArgument);
  TgcParams p;
  p.bits = 8;
  TgcCodec c(p, 10);
  std::vector<float> g(10), small(1);
  EXPECT_THROW(c.encode(g, 8, small), InvalidArgument);
}

}  // namespace
}  // namespace twinbed::real
