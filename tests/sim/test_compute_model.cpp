// The compute model's shape effects (sim/compute_model.hpp): tile and wave quantisation of GEMMs over
// the device's SMs, the large-GEMM ceiling, the launch-overhead floor, flash attention, and a measured
// profile replacing the tables. Deterministic: times come from the model, never from a clock.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "twinbed/core/device.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/model.hpp"
#include "twinbed/sim/compute_model.hpp"

namespace twinbed::sim {
namespace {

OpCost gemm(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t batch = 1) {
  return matmul_cost("g", OpCost::Kind::Gemm, OpCost::Phase::Forward, m, n, k, batch, DType::BF16);
}

// Seconds per FLOP of an op, without the fixed launch cost.
double seconds_per_flop(const OpCost& op, const ComputeProfile& p) {
  return (op_time(op, p) - p.launch_overhead).seconds() / op.flops;
}

TEST(ComputeModel, PresetsCarryTheirSmsAndTiles) {
  EXPECT_EQ(device_preset("a100").sms, 108);
  EXPECT_EQ(device_preset("h100").sms, 132);
  EXPECT_EQ(device_preset("h200").sms, 132);
  const ComputeProfile p = roofline_profile(device_preset("a100"));
  // FlashAttention generations (the newest, 1, 2, 3) against the GEMM ceiling; no FlashAttention-3 on Ampere.
  EXPECT_EQ(p.shapes, (KernelShapeModel{108, 256, 128, {0.61 / 0.82, 0.325 / 0.82, 0.61 / 0.82, 0}}));
}

// The required test: on an A100 (108 SMs, 256×128 tiles), 108 tiles fill exactly one wave; one tile
// more needs a second wave in which 107 SMs idle.
TEST(ComputeModel, GemmEfficiencyFallsWhereAShapeLeavesAPartialWave) {
  const ComputeProfile p = roofline_profile(device_preset("a100"));
  EXPECT_DOUBLE_EQ(tile_efficiency(256, 128, 8192, 108, p.shapes), 1.0);
  EXPECT_DOUBLE_EQ(tile_efficiency(256, 128, 8192, 109, p.shapes), 109.0 / 216);
  // In time, on compute-bound shapes (a 256×128 output per GEMM is memory-bound whatever k): 12×9
  // tiles is one wave, 13×9 spills into a second, and each FLOP takes 216/117 times as long.
  const std::int64_t k = 8192;
  const double full = seconds_per_flop(gemm(12 * 256, 9 * 128, k), p);
  const double spill = seconds_per_flop(gemm(13 * 256, 9 * 128, k), p);
  EXPECT_NEAR(spill / full, 216.0 / 117, 1e-6);
  // A whole number of full waves runs at the measured large-GEMM ceiling (0.82 of 312 TFLOP/s).
  const OpCost big = gemm(256 * 108, 128 * 4, k);
  EXPECT_EQ(op_time(big, p), p.launch_overhead + Time::from_seconds(big.flops / (0.82 * 312e12)));
  // Partial tiles at the edges cost as whole ones: 257 rows take two tile rows.
  EXPECT_NEAR(tile_efficiency(257, 128 * 54, 4096, 1, p.shapes), 257.0 * 128 * 54 / (108 * 256 * 128.0), 1e-12);
}

TEST(ComputeModel, TheBetterTileOrientationIsUsed) {
  const KernelShapeModel a100 = roofline_profile(device_preset("a100")).shapes;
  // 128 × 256·108: as 256×128 tiles, half of each tile is empty; as 128×256, 108 full tiles.
  EXPECT_DOUBLE_EQ(tile_efficiency(128, 256 * 108, 64, 1, a100), 1.0);
  EXPECT_DOUBLE_EQ(tile_efficiency(256 * 108, 128, 64, 1, a100), 1.0);
}

// A GEMM with few output tiles splits k over idle SMs; the FP32 partials it then writes and reads keep
// the split from paying where k is shallow.
TEST(ComputeModel, SplitKFillsIdleSmsOfSmallGemms) {
  const ComputeProfile p = roofline_profile(device_preset("a100"));
  // 4 tiles of 256×128 and k = 16384: one wave with 104 SMs idle, unless k is split 27 ways.
  EXPECT_DOUBLE_EQ(tile_efficiency(1024, 128, 16384, 1, p.shapes), 4.0 / 108);
  EXPECT_DOUBLE_EQ(tile_efficiency(1024, 128, 16384, 1, p.shapes, 27), 4.0 * 16384 / (108 * 607.0));  // 108 slices of 607
  const OpCost deep = gemm(1024, 128, 16384);
  const double unsplit = deep.flops / (p.gemm_rate.at(DType::BF16) * 4.0 / 108);
  EXPECT_LT((op_time(deep, p) - p.launch_overhead).seconds(), unsplit / 10);
  // Shallow k: no split (slices of 64 at least), the one-wave time stands.
  const OpCost shallow = gemm(1024, 128, 64);
  EXPECT_EQ(op_time(shallow, p), p.launch_overhead + Time::from_seconds(std::max(
                                     static_cast<double>(shallow.bytes) / p.memory_bandwidth,
                                     shallow.flops / (p.gemm_rate.at(DType::BF16) * 4.0 / 108))));
}

TEST(ComputeModel, TimeNeverFallsAsAGemmGrows) {
  for (const char* device : {"a100", "h100"}) {
    const ComputeProfile p = roofline_profile(device_preset(device));
    for (std::int64_t k : {64, 1024, 12288}) {
      Time last;
      for (std::int64_t m = 64; m <= 16384; m += 192) {
        const Time t = op_time(gemm(m, 4608, k), p);
        EXPECT_GE(t, last) << device << " m=" << m << " k=" << k;
        last = t;
      }
      last = Time();
      for (std::int64_t n = 64; n <= 16384; n += 192) {
        const Time t = op_time(gemm(2048, n, k), p);
        EXPECT_GE(t, last) << device << " n=" << n << " k=" << k;
        last = t;
      }
    }
    Time last;
    for (std::int64_t k = 16; k <= 32768; k *= 2) {
      const Time t = op_time(gemm(2048, 6144, k), p);
      EXPECT_GT(t, last) << device << " k=" << k;
      last = t;
    }
  }
}

TEST(ComputeModel, EfficiencyStaysWithinTheCeiling) {
  const ComputeProfile p = roofline_profile(device_preset("h100"));
  for (std::int64_t m : {1, 100, 2048, 8191, 8192}) {
    for (std::int64_t n : {1, 129, 4608, 12288}) {
      const double e = tile_efficiency(m, n, 4096, 3, p.shapes);
      EXPECT_GT(e, 0);
      EXPECT_LE(e, 1);
      const OpCost op = gemm(m, n, 4096, 3);
      EXPECT_GE(seconds_per_flop(op, p) * 1.0000001, 1 / p.gemm_rate.at(DType::BF16)) << m << "x" << n;
    }
  }
}

TEST(ComputeModel, LaunchOverheadIsTheFloor) {
  const ComputeProfile p = roofline_profile(device_preset("h100"));
  EXPECT_GT(op_time(gemm(1, 1, 1), p), p.launch_overhead);
  EXPECT_LT(op_time(gemm(1, 1, 1), p), p.launch_overhead + Time::us(1));
  OpCost empty;  // a memory-bound op moving nothing
  EXPECT_EQ(op_time(empty, p), p.launch_overhead);
}

TEST(ComputeModel, SmallKMeetsTheMemoryRoof) {
  const ComputeProfile p = roofline_profile(device_preset("a100"));
  const OpCost thin = gemm(8192, 8192, 16);
  EXPECT_EQ(op_time(thin, p), p.launch_overhead + Time::from_seconds(static_cast<double>(thin.bytes) / p.memory_bandwidth));
}

TEST(ComputeModel, NoSmsNoTileModel) {
  EXPECT_DOUBLE_EQ(tile_efficiency(3, 5, 11, 7, KernelShapeModel{}), 1.0);
  DeviceSpec cpu;
  cpu.name = "cpu";
  cpu.peak_bf16 = 1e12;
  cpu.memory_bandwidth = 1e11;
  const ComputeProfile p = roofline_profile(cpu);
  const OpCost op = gemm(257, 129, 4096);
  EXPECT_EQ(op_time(op, p), Time::from_seconds(op.flops / (0.8 * 1e12)));
}

TEST(ComputeModel, MeasuredGemmShapesReplaceTheTileModel) {
  const DeviceSpec a100 = device_preset("a100");
  ComputeProfile p = roofline_profile(a100);
  const OpCost odd = gemm(13 * 256, 9 * 128, 8192);  // 117 tiles: a partial second wave under the tile model
  p.gemm_samples = {{13 * 256, 9 * 128, 8192, DType::BF16, 200e12}};
  EXPECT_EQ(op_time(odd, p), p.launch_overhead + Time::from_seconds(odd.flops / 200e12));
  // A per-dtype rate alone (no shapes measured) is a large-GEMM rate: the tile model still applies.
  ComputeProfile rate_only = roofline_profile(a100);
  rate_only.gemm_rate[DType::BF16] = 250e12;
  EXPECT_EQ(op_time(odd, rate_only), p.launch_overhead + Time::from_seconds(odd.flops / (250e12 * 117.0 / 216)));
}

// On fewer SMs (NCCL's CTAs hold the rest; op_time_on_sms): each SM computes at the same rate, the
// tiles quantise into waves over the SMs left. One wave on all 108 is two on 100 (the tail effect);
// 117 tiles, two waves on 108, stay two on 100; memory-bound ops and the device's own count are
// unchanged; a measured GEMM shape knows nothing of SMs and slows in proportion.
TEST(ComputeModel, FewerSmsQuantiseTheWavesOverWhatIsLeft) {
  const ComputeProfile p = roofline_profile(device_preset("a100"));
  const auto above_launch = [&](Time t) { return (t - p.launch_overhead).seconds(); };
  // Times are whole picoseconds: a ratio of two holds to a few picoseconds over the time.
  const auto ps_tolerance = [](double seconds) { return 3e-12 / seconds; };
  const OpCost one_wave = gemm(12 * 256, 9 * 128, 8192);
  const double one_wave_s = above_launch(op_time(one_wave, p));
  EXPECT_NEAR(above_launch(op_time_on_sms(one_wave, p, 100)) / one_wave_s, 2.0, ps_tolerance(one_wave_s));
  const OpCost two_waves = gemm(13 * 256, 9 * 128, 8192);
  const double two_waves_s = above_launch(op_time(two_waves, p));
  EXPECT_NEAR(above_launch(op_time_on_sms(two_waves, p, 100)) / two_waves_s, 1.0, ps_tolerance(two_waves_s));
  // 54 tiles would split k in two on 108 SMs (split-K); on 50 they cannot: one wave of 54 > 50 is two.
  const OpCost small = gemm(6 * 256, 9 * 128, 8192);
  EXPECT_GT(op_time_on_sms(small, p, 50), op_time(small, p));
  EXPECT_EQ(op_time_on_sms(one_wave, p, 108), op_time(one_wave, p));
  EXPECT_EQ(op_time_on_sms(one_wave, p, 200), op_time(one_wave, p));
  OpCost copy;
  copy.name = "copy";
  copy.kind = OpCost::Kind::MemoryBound;
  copy.bytes = 1 << 28;
  EXPECT_EQ(op_time_on_sms(copy, p, 50), op_time(copy, p));
  ComputeProfile measured = p;
  measured.gemm_samples = {{13 * 256, 9 * 128, 8192, DType::BF16, 200e12}};
  EXPECT_NEAR(above_launch(op_time_on_sms(two_waves, measured, 100)), two_waves.flops / 200e12 * 108 / 100, 1e-12);
  // A CPU profile (no SM count): unchanged.
  ComputeProfile cpu = p;
  cpu.shapes.sms = 0;
  EXPECT_EQ(op_time_on_sms(one_wave, cpu, 10), op_time(one_wave, cpu));
}

TEST(ComputeModel, FlashAttentionRunsAtItsOwnRateOverQueryBlocks) {
  const ComputeProfile p = roofline_profile(device_preset("a100"));
  TransformerModel m = model_preset("gpt3-1.3b");
  m.attention = AttentionImpl::Flash;
  // b = 27, t = 4: 27·4 = 108 heads of 16 query blocks: 16 whole waves.
  const auto ops = layer_forward_ops(m, {27, 4, false, 1});
  const OpCost* flash = nullptr;
  for (const OpCost& op : ops) {
    if (op.flash) flash = &op;
  }
  ASSERT_NE(flash, nullptr);
  EXPECT_EQ(op_time(*flash, p), p.launch_overhead + Time::from_seconds(flash->flops / (0.61 * 312e12)));
  // One more head spills into a 17th wave.
  OpCost spill = *flash;
  spill.batch += 1;
  spill.flops *= 109.0 / 108;
  EXPECT_GT(seconds_per_flop(spill, p), seconds_per_flop(*flash, p));
  // Measured GEMM shapes say nothing of a flash kernel.
  ComputeProfile measured = p;
  measured.gemm_samples = {{2048, 2048, 128, DType::BF16, 10e12}};
  EXPECT_EQ(op_time(*flash, measured), op_time(*flash, p));
}

// Each generation of the kernel at its own rate: on A100 "flash" is FlashAttention-2's, "flash1" the first
// FlashAttention's 0.325 of peak, and FlashAttention-3 (Hopper only) has no rate; on H100 "flash" is
// FlashAttention-3's, "flash2" 0.35, and the first FlashAttention no public figure.
TEST(ComputeModel, FlashAttentionGenerationsHaveTheirOwnRates) {
  const auto flash_op = [](AttentionImpl impl) {
    TransformerModel m = model_preset("gpt3-1.3b");
    m.attention = impl;
    for (const OpCost& op : layer_forward_ops(m, {27, 4, false, 1})) {
      if (op.flash) return op;
    }
    throw std::runtime_error("no flash op");
  };
  const auto above_launch = [](const ComputeProfile& p, const OpCost& op) {
    return (op_time(op, p) - p.launch_overhead).seconds();
  };
  const ComputeProfile a100 = roofline_profile(device_preset("a100"));
  const OpCost newest = flash_op(AttentionImpl::Flash);
  EXPECT_EQ(newest.flash_generation, 0);
  EXPECT_EQ(op_time(flash_op(AttentionImpl::Flash2), a100), op_time(newest, a100));
  EXPECT_NEAR(above_launch(a100, flash_op(AttentionImpl::Flash1)), newest.flops / (0.325 * 312e12), 1e-12);
  try {
    (void)op_time(flash_op(AttentionImpl::Flash3), a100);
    ADD_FAILURE() << "FlashAttention-3 timed on an A100";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("FlashAttention-3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Hopper"), std::string::npos) << e.what();
  }
  const ComputeProfile h100 = roofline_profile(device_preset("h100"));
  EXPECT_EQ(op_time(flash_op(AttentionImpl::Flash3), h100), op_time(newest, h100));
  EXPECT_NEAR(above_launch(h100, flash_op(AttentionImpl::Flash2)) / above_launch(h100, newest), 0.64 / 0.35, 1e-6);
  EXPECT_THROW((void)op_time(flash_op(AttentionImpl::Flash1), h100), InvalidArgument);
}

}  // namespace
}  // namespace twinbed::sim

// ---- technique kernels and sparse GEMMs at their measured rates (profile.hpp) ---------------------

namespace twinbed::sim::technique {

OpCost kernel_op(OpCost::Kernel kernel, std::int64_t elements, Bytes bytes) {
  OpCost c;
  c.name = "k";
  c.kernel = kernel;
  c.elements = elements;
  c.bytes = bytes;
  return c;
}

ComputeProfile measured() {
  ComputeProfile p;
  p.gemm_rate[DType::BF16] = 1e12;
  p.memory_bandwidth = 1e10;
  p.launch_overhead = Time::us(1);
  p.kernel_seconds_per_element = {{"tgc.compress.topk", 2e-9}, {"dsa.mask_refresh.block", 10e-9}, {"dsa.masked_step", 1e-9}};
  p.sparse_gemm_rate = {{"block", 2e10}};
  return p;
}

TEST(ComputeModel, TechniqueKernelsTakeTheirMeasuredTimePerElement) {
  const ComputeProfile p = measured();
  OpCost compress = kernel_op(OpCost::Kernel::Compress, 1'000'000, 16'000'000);
  compress.keep_fraction = 0.1;
  EXPECT_EQ(technique_kernel_key(compress), "tgc.compress.topk");
  EXPECT_NEAR((op_time(compress, p) - p.launch_overhead).seconds(), 2e-3, 1e-12);  // not 16 MB / 10 GB/s
  // Adaptive width: the rule's measured time per element comes first, where the profile has it.
  compress.adaptive = true;
  EXPECT_NEAR((op_time(compress, p) - p.launch_overhead).seconds(), 2e-3, 1e-12);
  ComputeProfile with_rule = p;
  with_rule.kernel_seconds_per_element["tgc.choose_bits"] = 3e-9;
  EXPECT_NEAR((op_time(compress, with_rule) - p.launch_overhead).seconds(), 2e-3 + 3e-3, 1e-12);
  // Amortised: a refresh every 10 iterations does a tenth of the elements per iteration.
  OpCost refresh = kernel_op(OpCost::Kernel::MaskRefresh, 1'000'000, 0);
  refresh.sparsity = OpCost::Sparsity::Block;
  refresh.every = 10;
  EXPECT_EQ(technique_kernel_key(refresh), "dsa.mask_refresh.block");
  EXPECT_NEAR((op_time(refresh, p) - p.launch_overhead).seconds(), 1e-3, 1e-12);
  // A masked step: masked Adam per target parameter, and the rest of the step's bytes streamed.
  OpCost step = kernel_op(OpCost::Kernel::MaskedStep, 1000, 28 * 300 + 1000 + 5000);
  step.density = 0.3;
  EXPECT_EQ(masked_step_rest_bytes(step), 5000);
  EXPECT_NEAR((op_time(step, p) - p.launch_overhead).seconds(), 1e-6 + 5000 / 1e10, 1e-15);
  // No measurement: the bytes at the memory bandwidth, as before.
  const OpCost quantize = kernel_op(OpCost::Kernel::Compress, 1000, 10'000);
  EXPECT_EQ(technique_kernel_key(quantize), "tgc.compress.quantize");
  EXPECT_NEAR((op_time(quantize, p) - p.launch_overhead).seconds(), 1e-6, 1e-15);
}

TEST(ComputeModel, SparseGemmsRunAtTheirMeasuredRateWhereOneWasMeasured) {
  const ComputeProfile p = measured();
  OpCost block = matmul_cost("b", OpCost::Kind::Gemm, OpCost::Phase::Forward, 1024, 1024, 1024, 1, DType::BF16);
  block.sparsity = OpCost::Sparsity::Block;
  block.density = 0.25;
  block.flops *= 0.25;
  EXPECT_NEAR((op_time(block, p) - p.launch_overhead).seconds(), block.flops / 2e10, 1e-12);
  OpCost two_four = block;
  two_four.sparsity = OpCost::Sparsity::TwoFour;  // no 2:4 rate measured: the model's own
  EXPECT_LT(op_time(two_four, p), op_time(block, p));
}

}  // namespace twinbed::sim::technique
