// Every CUDA twin against its CPU reference. Skipped, with the reason, in a build without CUDA or on
// a machine without a usable GPU. Tolerances by kind of result: codes, indices, masks and scales are
// compared exactly (the twins share their rounding steps); element-wise fp32 updates to a few ulps
// (the GPU may fuse multiply-adds the CPU rounds separately); GEMMs to 1e-5·√k relative (different
// summation order over k products).
#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>
#include <random>
#include <vector>

#include "twinbed/kernels/common.hpp"
#include "twinbed/kernels/dsa.hpp"
#include "twinbed/kernels/lora.hpp"
#include "twinbed/kernels/sparse_gemm.hpp"
#include "twinbed/kernels/tgc.hpp"

namespace tk = twinbed::kernels;

namespace {

[[maybe_unused]] std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

class CudaTwins : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const auto why = tk::cuda_unavailable_reason()) GTEST_SKIP() << "CUDA twins not run: " << *why;
  }
};

#if TWINBED_KERNELS_HAVE_CUDA

template <class T>
struct Dev {
  tk::cuda::DeviceBuffer<T> buf;
  explicit Dev(const std::vector<T>& host) : buf(host.size()) {
    tk::cuda::copy_to_device(std::span<const T>(host), buf.span());
  }
  explicit Dev(std::size_t n) : buf(n) {}
  std::vector<T> host() const {
    std::vector<T> h(buf.size());
    tk::cuda::copy_to_host(buf.span(), std::span<T>(h));
    return h;
  }
  std::span<T> s() { return buf.span(); }
  std::span<const T> cs() const { return buf.span(); }
};

void expect_near_rel(const std::vector<float>& got, const std::vector<float>& want, float rel) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], rel * (1.0f + std::fabs(want[i]))) << "at " << i;
}

TEST_F(CudaTwins, QuantizeAndDequantizeAreBitIdentical) {
  tk::cuda::Context ctx;
  for (int bits : {2, 4, 8, 16})
    for (auto r : {tk::Rounding::nearest, tk::Rounding::stochastic})
      for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{1000003}})
        for (std::size_t block : {std::size_t{24}, std::size_t{256}}) {  // partial and whole CPU chunks
          const tk::QuantSpec spec{bits, block, r, 42};
          const auto x = random_vector(n, 1);
          std::vector<std::uint8_t> codes(tk::quant_code_bytes(n, bits));
          std::vector<float> scales(tk::quant_num_blocks(n, spec)), back(n);
          tk::cpu::quantize(x, spec, codes, scales);
          tk::cpu::dequantize(codes, scales, spec, back);
          Dev<float> dx(x), dscales(scales.size()), dback(n);
          Dev<std::uint8_t> dcodes(codes.size());
          tk::cuda::quantize(dx.cs(), spec, dcodes.s(), dscales.s(), ctx);
          tk::cuda::dequantize(dcodes.cs(), dscales.cs(), spec, dback.s(), ctx);
          ctx.synchronize();
          ASSERT_EQ(dcodes.host(), codes) << "bits " << bits << " n " << n << " block " << block;
          ASSERT_EQ(dscales.host(), scales);
          ASSERT_EQ(dback.host(), back);
        }
}

TEST_F(CudaTwins, EfQuantizeAndChooseBitsAgree) {
  tk::cuda::Context ctx;
  const std::size_t n = 100003;
  const tk::QuantSpec spec{4, 256, tk::Rounding::stochastic, 7};
  const auto g = random_vector(n, 2);
  auto e = random_vector(n, 3, 0.1f);
  Dev<float> dg(g), de(e), dscales(tk::quant_num_blocks(n, spec));
  Dev<std::uint8_t> dcodes(tk::quant_code_bytes(n, 4));
  std::vector<std::uint8_t> codes(dcodes.buf.size());
  std::vector<float> scales(dscales.buf.size());
  tk::cpu::ef_quantize(g, e, spec, codes, scales);
  tk::cuda::ef_quantize(dg.cs(), de.s(), spec, dcodes.s(), dscales.s(), ctx);
  ctx.synchronize();
  EXPECT_EQ(dcodes.host(), codes);
  EXPECT_EQ(de.host(), e);
  EXPECT_EQ(tk::cuda::choose_bits(dg.cs(), 256, 0.02f, ctx), tk::cpu::choose_bits(g, 256, 0.02f));
}

TEST_F(CudaTwins, SparsificationAgrees) {
  tk::cuda::Context ctx;
  for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{1000003}}) {
    const auto x = random_vector(n, 4);
    Dev<float> dx(x);
    for (std::size_t k : {std::size_t{1}, n / 100 + 1, n}) {
      std::vector<std::uint32_t> idx(k);
      std::vector<float> val(k);
      tk::cpu::topk(x, k, idx, val);
      Dev<std::uint32_t> didx(k);
      Dev<float> dval(k);
      tk::cuda::topk(dx.cs(), k, didx.s(), dval.s(), ctx);
      ASSERT_EQ(didx.host(), idx);
      ASSERT_EQ(dval.host(), val);
    }
    EXPECT_EQ(tk::cuda::estimate_topk_threshold(dx.cs(), 1, 1000, 9, ctx),
              tk::cpu::estimate_topk_threshold(x, 1, 1000, 9));
    std::vector<std::uint32_t> idx(n / 20 + 1);
    std::vector<float> val(idx.size());
    const std::size_t count = tk::cpu::sparsify_threshold(x, 1.0f, idx, val);
    Dev<std::uint32_t> didx(idx.size());
    Dev<float> dval(idx.size());
    ASSERT_EQ(tk::cuda::sparsify_threshold(dx.cs(), 1.0f, didx.s(), dval.s(), ctx), count);
    const std::size_t written = std::min(count, idx.size());
    const auto hidx = didx.host();
    const auto hval = dval.host();
    for (std::size_t j = 0; j < written; ++j) {
      ASSERT_EQ(hidx[j], idx[j]);
      ASSERT_EQ(hval[j], val[j]);
    }
  }
}

TEST_F(CudaTwins, ErrorFeedbackAndScatterAgree) {
  tk::cuda::Context ctx;
  const std::size_t n = 50021;
  const auto g = random_vector(n, 5);
  auto e = random_vector(n, 6, 0.5f);
  Dev<float> dg(g), de(e);
  std::vector<std::uint32_t> idx(300);
  std::vector<float> val(300);
  Dev<std::uint32_t> didx(300);
  Dev<float> dval(300);
  const std::size_t c = tk::cpu::ef_sparsify_threshold(g, e, 1.5f, idx, val);
  ASSERT_EQ(tk::cuda::ef_sparsify_threshold(dg.cs(), de.s(), 1.5f, didx.s(), dval.s(), ctx), c);
  // Slots past the count are scratch (the CPU's vector path may write there): compare the written ones.
  const auto written = static_cast<std::ptrdiff_t>(std::min(c, idx.size()));
  const auto hidx = didx.host();
  const auto hval = dval.host();
  EXPECT_TRUE(std::equal(idx.begin(), idx.begin() + written, hidx.begin()));
  EXPECT_TRUE(std::equal(val.begin(), val.begin() + written, hval.begin()));
  EXPECT_EQ(de.host(), e);
  std::vector<float> out(n, 0.5f);
  Dev<float> dout(out);
  tk::cpu::scatter_add(idx, val, out);
  tk::cuda::scatter_add(didx.cs(), dval.cs(), dout.s(), ctx);
  tk::cpu::ef_clear_sent(idx, e);
  tk::cuda::ef_clear_sent(didx.cs(), de.s(), ctx);
  ctx.synchronize();
  EXPECT_EQ(dout.host(), out);
  EXPECT_EQ(de.host(), e);
}

TEST_F(CudaTwins, DsaAgrees) {
  tk::cuda::Context ctx;
  const std::size_t rows = 37, cols = 1000, n = rows * cols;
  const auto g = random_vector(n, 7), m0 = random_vector(n, 8);
  std::vector<float> s(n);
  tk::cpu::importance(g, m0, 0.6f, s);
  Dev<float> dg(g), dm(m0), ds(n);
  tk::cuda::importance(dg.cs(), dm.cs(), 0.6f, ds.s(), ctx);
  ctx.synchronize();
  ASSERT_EQ(ds.host(), s);
  std::vector<std::uint8_t> mask(n);
  Dev<std::uint8_t> dmask(n);
  EXPECT_EQ(tk::cuda::mask_unstructured(ds.cs(), 0.3, dmask.s(), ctx), tk::cpu::mask_unstructured(s, 0.3, mask));
  EXPECT_EQ(dmask.host(), mask);
  const std::size_t nb = 5 * 125;
  std::vector<std::uint8_t> bm(nb);
  Dev<std::uint8_t> dbm(nb);
  EXPECT_EQ(tk::cuda::mask_block(ds.cs(), rows, cols, 8, 0.25, dbm.s(), dmask.s(), ctx),
            tk::cpu::mask_block(s, rows, cols, 8, 0.25, bm, mask));
  EXPECT_EQ(dbm.host(), bm);
  EXPECT_EQ(dmask.host(), mask);
  EXPECT_EQ(tk::cuda::mask_nm(ds.cs(), rows, cols, 2, 4, dmask.s(), ctx), tk::cpu::mask_nm(s, rows, cols, 2, 4, mask));
  ctx.synchronize();
  EXPECT_EQ(dmask.host(), mask);
  // Masked updates on the 2:4 mask.
  auto p = random_vector(n, 9), mom = m0, v = random_vector(n, 10);
  for (auto& x : v) x = std::fabs(x);
  Dev<float> dp(p), dmom(mom), dv(v);
  tk::cpu::masked_sgd(p, g, mom, mask, {0.1f, 0.9f, 0.01f});
  tk::cuda::masked_sgd(dp.s(), dg.cs(), dmom.s(), dmask.cs(), {0.1f, 0.9f, 0.01f}, ctx);
  ctx.synchronize();
  EXPECT_EQ(dp.host(), p);
  EXPECT_EQ(dmom.host(), mom);
  tk::cpu::masked_adam(p, g, mom, v, mask, {}, 3);
  tk::cuda::masked_adam(dp.s(), dg.cs(), dmom.s(), dv.s(), dmask.cs(), {}, 3, ctx);
  ctx.synchronize();
  expect_near_rel(dp.host(), p, 1e-6f);
  expect_near_rel(dmom.host(), mom, 1e-6f);
  expect_near_rel(dv.host(), v, 1e-6f);
}

TEST_F(CudaTwins, GemmsAgree) {
  tk::cuda::Context ctx;
  const std::size_t batch = 37, in = 96, out = 64, b = 32;
  const auto x = random_vector(batch * in, 11), w = random_vector(out * in, 12);
  const float tol = 1e-5f * std::sqrt(static_cast<float>(in)) * 4.0f;
  Dev<float> dx(x), dw(w), dy(batch * out);
  std::vector<float> y(batch * out);
  tk::cpu::gemm_nt(x, batch, in, w, out, y);
  tk::cuda::gemm_nt(dx.cs(), batch, in, dw.cs(), out, dy.s(), ctx);
  ctx.synchronize();
  expect_near_rel(dy.host(), y, tol);
  std::vector<std::uint8_t> bm = {1, 0, 1, 0, 1, 1};  // 2 × 3 blocks of 32
  const tk::BsrMatrix bsr = tk::bsr_from_dense(w, out, in, b, bm);
  Dev<std::uint32_t> rp(bsr.row_ptr), ci(bsr.col_idx);
  Dev<float> vals(bsr.values);
  const tk::BsrView dview{out, in, b, rp.cs(), ci.cs(), vals.cs()};
  tk::cpu::bsr_gemm_nt(x, batch, bsr.view(), y);
  tk::cuda::bsr_gemm_nt(dx.cs(), batch, dview, dy.s(), ctx);
  ctx.synchronize();
  expect_near_rel(dy.host(), y, tol);
  const tk::Sparse24Matrix sp = tk::prune_24(w, out, in);
  Dev<float> sv(sp.values);
  Dev<std::uint8_t> sc(sp.columns);
  const tk::Sparse24View sview{out, in, sv.cs(), sc.cs()};
  tk::cpu::sparse24_gemm_nt(x, batch, sp.view(), y);
  tk::cuda::sparse24_gemm_nt(dx.cs(), batch, sview, dy.s(), ctx);
  ctx.synchronize();
  expect_near_rel(dy.host(), y, tol);
}

TEST_F(CudaTwins, LoraAgrees) {
  tk::cuda::Context ctx;
  const tk::LoraShape s{13, 64, 48, 8, 16.0f};
  const auto x = random_vector(s.batch * s.in, 13), w = random_vector(s.out * s.in, 14, 0.1f),
             a = random_vector(s.rank * s.in, 15, 0.1f), b = random_vector(s.out * s.rank, 16, 0.1f),
             dy = random_vector(s.batch * s.out, 17);
  std::vector<float> h(s.batch * s.rank), y(s.batch * s.out), da(a.size()), db(b.size()), dx(x.size());
  tk::cpu::lora_forward(s, x, w, a, b, h, y);
  tk::cpu::lora_backward(s, x, w, a, b, h, dy, da, db, dx);
  Dev<float> ddx_in(x), dw(w), dA(a), dB(b), dh(h.size()), dyy(y.size()), ddy(dy), dda(da.size()), ddb(db.size()),
      ddx(dx.size());
  tk::cuda::lora_forward(s, ddx_in.cs(), dw.cs(), dA.cs(), dB.cs(), dh.s(), dyy.s(), ctx);
  tk::cuda::lora_backward(s, ddx_in.cs(), dw.cs(), dA.cs(), dB.cs(), dh.cs(), ddy.cs(), dda.s(), ddb.s(), ddx.s(), ctx);
  ctx.synchronize();
  const float tol = 1e-5f * 8.0f * 4.0f;
  expect_near_rel(dyy.host(), y, tol);
  expect_near_rel(dda.host(), da, tol);
  expect_near_rel(ddb.host(), db, tol);
  expect_near_rel(ddx.host(), dx, tol);
  auto wm = w;
  tk::cpu::lora_merge(s, wm, a, b);
  tk::cuda::lora_merge(s, dw.s(), dA.cs(), dB.cs(), ctx);
  ctx.synchronize();
  expect_near_rel(dw.host(), wm, 1e-5f);
}

#else

TEST_F(CudaTwins, NotBuilt) { GTEST_SKIP() << "built without CUDA"; }

#endif

}  // namespace
