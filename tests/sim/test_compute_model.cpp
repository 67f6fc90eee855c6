// The compute model's shape effects (sim/compute_model.hpp): tile and wave quantisation of GEMMs over
// the device's SMs, the large-GEMM ceiling, the launch-overhead floor, flash attention, and a measured
// profile replacing the tables. Deterministic: times come from the model, never from a clock.
#include <algorithm>
#include <cmath>
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

// A device's roofline with the tile and wave model alone: no fixed cost per tile or kernel (those have
// tests of their own below).
ComputeProfile tiles_only(const std::string& device) {
  ComputeProfile p = roofline_profile(device_preset(device));
  p.shapes.tile_overhead_k = p.shapes.kernel_overhead_k = 0;
  return p;
}

TEST(ComputeModel, PresetsCarryTheirSmsAndTiles) {
  EXPECT_EQ(device_preset("a100").sms, 108);
  EXPECT_EQ(device_preset("h100").sms, 132);
  EXPECT_EQ(device_preset("h200").sms, 132);
  const KernelShapeModel a100 = roofline_profile(device_preset("a100")).shapes;
  EXPECT_EQ(a100.sms, 108);
  EXPECT_EQ(a100.tile_m, 256);
  EXPECT_EQ(a100.tile_n, 128);
  // Flash kernels: the newest is FlashAttention-2; no FlashAttention-3 (Hopper only) or cuDNN figure.
  const auto rates = [&](FlashKernel k) { return a100.flash_attention[static_cast<std::size_t>(k)]; };
  EXPECT_EQ(rates(FlashKernel::Newest), rates(FlashKernel::Flash2));
  EXPECT_FALSE(rates(FlashKernel::Flash1).empty());
  EXPECT_TRUE(rates(FlashKernel::Flash3).empty());
  EXPECT_TRUE(rates(FlashKernel::Cudnn).empty());
  // A CPU profile's (no figures): every kernel at the dense rate.
  for (const FlashRates& r : KernelShapeModel{}.flash_attention) EXPECT_EQ(r, (FlashRates{FlashRatePoint{0, 0, 1, 1}}));
}

// The required test: on an A100 (108 SMs, 256×128 tiles), 108 tiles fill exactly one wave; one tile
// more needs a second wave in which 107 SMs idle.
TEST(ComputeModel, GemmEfficiencyFallsWhereAShapeLeavesAPartialWave) {
  const ComputeProfile p = tiles_only("a100");
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
  const ComputeProfile p = tiles_only("a100");
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
  const ComputeProfile p = tiles_only("h100");
  EXPECT_GT(op_time(gemm(1, 1, 1), p), p.launch_overhead);
  EXPECT_LT(op_time(gemm(1, 1, 1), p), p.launch_overhead + Time::us(1));
  OpCost empty;  // a memory-bound op moving nothing
  EXPECT_EQ(op_time(empty, p), p.launch_overhead);
}

TEST(ComputeModel, SmallKMeetsTheMemoryRoof) {
  const ComputeProfile p = tiles_only("a100");
  const OpCost thin = gemm(8192, 8192, 16);
  EXPECT_EQ(op_time(thin, p), p.launch_overhead + Time::from_seconds(static_cast<double>(thin.bytes) / p.memory_bandwidth));
}

// ---- each tile's and each kernel's fixed cost (compute_model.hpp) -----------------------------------
// A GEMM of W waves of slices k deep takes as long as W·(k + 135) + 530 k-steps would: the tile model's
// factor times k / (k + 135 + 530/W), over the same for the ceiling's 16384³ (76 waves on an A100, 63 on
// an H100), at most 1.
double fixed_cost_share(double k, double waves) { return k / (k + 135 + 530 / waves); }

TEST(ComputeModel, EachTileAndKernelPaysAFixedCost) {
  const ComputeProfile p = roofline_profile(device_preset("a100"));
  const double ceiling = fixed_cost_share(16384, 76);
  // 4 full waves (432 tiles of 256×128), k = 8192: no quantisation, only the fixed costs.
  const OpCost four_waves = gemm(256 * 108, 128 * 4, 8192);
  const double expected = four_waves.flops / (0.82 * 312e12 * fixed_cost_share(8192, 4) / ceiling);
  EXPECT_NEAR((op_time(four_waves, p) - p.launch_overhead).seconds() / expected, 1, 1e-9);
  EXPECT_NEAR(shape_efficiency(256 * 108, 128 * 4, 8192, 1, p.shapes), fixed_cost_share(8192, 4) / ceiling, 1e-12);
  // The same in one wave: the kernel's cost over one wave instead of four.
  EXPECT_NEAR(shape_efficiency(256 * 108, 128, 8192, 1, p.shapes), fixed_cost_share(8192, 1) / ceiling, 1e-12);
  // Deeper k amortises them; at the ceiling's own depth and beyond, a full-wave GEMM runs at the ceiling.
  EXPECT_LT(shape_efficiency(256 * 108, 128 * 4, 1024, 1, p.shapes), shape_efficiency(256 * 108, 128 * 4, 8192, 1, p.shapes));
  EXPECT_DOUBLE_EQ(shape_efficiency(256 * 108, 128 * 76, 16384, 1, p.shapes), 1.0);
  EXPECT_DOUBLE_EQ(shape_efficiency(256 * 108, 128 * 4, 65536, 1, p.shapes), 1.0);
  // With a partial wave, both factors: 109 tiles are two waves.
  EXPECT_NEAR(shape_efficiency(256, 128, 8192, 109, p.shapes), 109.0 / 216 * fixed_cost_share(8192, 2) / ceiling, 1e-12);
  // The smallest GEMM: one tile on one SM, its one k-step and the fixed costs, 1 + 135 + 530 k-steps of
  // one SM's share of the rate (2·256·128 FLOPs each).
  const ComputeProfile h100 = roofline_profile(device_preset("h100"));
  const double k_step = 2.0 * 256 * 128 / (h100.gemm_rate.at(DType::BF16) / 132);
  EXPECT_NEAR((op_time(gemm(1, 1, 1), h100) - h100.launch_overhead).seconds(),
              (1 + 135 + 530) * k_step * fixed_cost_share(16384, 63), 1e-11);
}

// The costs are a time, so a faster dtype's k-steps count more of them: an FP8 GEMM on H100 (0.70 of
// 1,979 TFLOP/s against BF16's 0.76 of 989) pays 1.84 times as many.
TEST(ComputeModel, AFasterDtypePaysTheSameTimeInMoreKSteps) {
  const ComputeProfile h100 = roofline_profile(device_preset("h100"));
  const double scale = (0.70 * 1979) / (0.76 * 989);
  const auto share = [&](double k, double waves) { return k / (k + scale * (135 + 530 / waves)); };
  OpCost fp8 = gemm(4096, 4096, 4096);
  fp8.dtype = DType::FP8;
  // 512 tiles: 4 waves of 132, 512/528 of their slots filled.
  const double eff = 512.0 / 528 * share(4096, 4) / share(16384, 63);
  EXPECT_NEAR((op_time(fp8, h100) - h100.launch_overhead).seconds() / (fp8.flops / (0.70 * 1979e12 * eff)), 1, 1e-6);
}

// The sustained sweeps the costs were checked against (compute_model.cpp: Azure's cuBLASLt runs on
// random data after 10,000 warm-ups): every size from 4096³ up within 2 %.
TEST(ComputeModel, FixedCostsReproduceTheSustainedSweeps) {
  struct Point {
    const char* device;
    DType dtype;
    std::int64_t m, n, k;
    double tflops;
  };
  const Point sweep[] = {{"a100", DType::FP16, 4096, 4096, 4096, 228.0},     {"a100", DType::FP16, 8192, 8192, 8192, 253.7},
                         {"a100", DType::FP16, 16384, 16384, 16384, 256.5},  {"a100", DType::FP16, 6144, 12288, 12288, 250.8},
                         {"h100", DType::FP8, 4096, 4096, 4096, 1216.9},     {"h100", DType::FP8, 8192, 8192, 8192, 1290.1},
                         {"h100", DType::FP8, 16384, 16384, 16384, 1377.3},  {"h100", DType::FP8, 32768, 32768, 32768, 1382.2},
                         {"h100", DType::FP8, 6144, 12288, 12288, 1351.4}};
  for (const Point& s : sweep) {
    const ComputeProfile p = roofline_profile(device_preset(s.device));
    OpCost op = gemm(s.m, s.n, s.k);
    op.dtype = s.dtype;
    const double tflops = op.flops / (op_time(op, p) - p.launch_overhead).seconds() / 1e12;
    EXPECT_NEAR(tflops / s.tflops, 1, 0.02) << s.device << " " << s.m << "x" << s.n << "x" << s.k;
  }
}

// A memory-bound kernel on an H100: PyTorch's FP16 ReLU (pull request #145746; device.cpp), one read
// and one write of n elements, timed back to back. The bandwidth share came from the 2^29 point; the
// others check the per-kernel fixed cost and that time grows with the bytes: every one within 2 %.
TEST(ComputeModel, MemoryBoundKernelsReproduceAnElementwiseSweep) {
  const ComputeProfile p = roofline_profile(device_preset("h100"));
  const std::pair<int, double> sweep[] = {{25, 48.4}, {26, 92.2}, {27, 180.3}, {28, 355.1}, {29, 704.5}};  // log2 n, us
  for (const auto& [log2_n, us] : sweep) {
    OpCost relu;
    relu.name = "relu";
    relu.kind = OpCost::Kind::MemoryBound;
    relu.bytes = 2 * 2 * (std::int64_t{1} << log2_n);
    EXPECT_NEAR(op_time(relu, p).microseconds() / us, 1, 0.02) << "2^" << log2_n << " elements";
  }
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
  ComputeProfile p = tiles_only("a100");
  const OpCost odd = gemm(13 * 256, 9 * 128, 8192);  // 117 tiles: a partial second wave under the tile model
  p.gemm_samples = {{13 * 256, 9 * 128, 8192, DType::BF16, 200e12}};
  EXPECT_EQ(op_time(odd, p), p.launch_overhead + Time::from_seconds(odd.flops / 200e12));
  // A per-dtype rate alone (no shapes measured) is a large-GEMM rate: the tile model still applies.
  ComputeProfile rate_only = tiles_only("a100");
  rate_only.gemm_rate[DType::BF16] = 250e12;
  EXPECT_EQ(op_time(odd, rate_only), p.launch_overhead + Time::from_seconds(odd.flops / (250e12 * 117.0 / 216)));
}

// On fewer SMs (NCCL's CTAs hold the rest; op_time_on_sms): each SM computes at the same rate, the
// tiles quantise into waves over the SMs left. One wave on all 108 is two on 100 (the tail effect);
// 117 tiles, two waves on 108, stay two on 100; memory-bound ops (on fewer SMs alone) and the device's
// own count are unchanged; a measured GEMM shape knows nothing of SMs and slows in proportion.
TEST(ComputeModel, FewerSmsQuantiseTheWavesOverWhatIsLeft) {
  const ComputeProfile p = tiles_only("a100");
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

// What NCCL's memory traffic leaves an op (op_time_on_sms's memory_share): a memory-bound op's bytes at
// that share of the bandwidth; a GEMM whose arithmetic binds is unchanged, one whose memory binds slows
// as the copy does; with fewer SMs too, both roofs apply. A share outside (0, 1] is refused.
TEST(ComputeModel, AMemoryShareStretchesTheMemoryRoofAlone) {
  const ComputeProfile p = tiles_only("a100");
  const auto above_launch = [&](Time t) { return (t - p.launch_overhead).seconds(); };
  OpCost copy;
  copy.name = "copy";
  copy.kind = OpCost::Kind::MemoryBound;
  copy.bytes = 1 << 28;
  EXPECT_NEAR(above_launch(op_time_on_sms(copy, p, 108, 0.5)), 2 * above_launch(op_time(copy, p)), 1e-11);
  EXPECT_NEAR(above_launch(op_time_on_sms(copy, p, 108, 0.8)),
              static_cast<double>(copy.bytes) / (0.8 * p.memory_bandwidth), 1e-11);
  EXPECT_EQ(op_time_on_sms(copy, p, 108, 1), op_time(copy, p));
  const OpCost square = gemm(8192, 8192, 8192);  // 2.2 GFLOP per MB moved: the arithmetic binds
  EXPECT_EQ(op_time_on_sms(square, p, 108, 0.5), op_time(square, p));
  const OpCost skinny = gemm(8192, 8192, 16);  // reads and writes 8192² outputs for 16 deep: memory binds
  ASSERT_NEAR(above_launch(op_time(skinny, p)), static_cast<double>(skinny.bytes) / p.memory_bandwidth, 1e-11);
  EXPECT_NEAR(above_launch(op_time_on_sms(skinny, p, 108, 0.5)), 2 * above_launch(op_time(skinny, p)), 1e-11);
  EXPECT_EQ(op_time_on_sms(square, p, 100, 0.5), op_time_on_sms(square, p, 100));
  EXPECT_THROW(op_time_on_sms(copy, p, 108, 0), InvalidArgument);
  EXPECT_THROW(op_time_on_sms(copy, p, 108, 1.5), InvalidArgument);
}

// A GEMM split into chunks along m whose chunks run back to back on concurrent streams (OpCost::split:
// Transformer Engine's userbuffers) is timed chunk by chunk at the whole GEMM's shape: each chunk takes
// its share of the whole's time above the launch, whatever partial waves the chunk alone would leave.
// Alone, a quarter of 4 × 108 tiles is one wave of 108 and pays the kernel's fixed cost by itself.
TEST(ComputeModel, AChunkOfASplitGemmTakesItsShareOfTheWhole) {
  const ComputeProfile p = roofline_profile(device_preset("a100"));
  const auto above_launch = [&](const OpCost& op) { return (op_time(op, p) - p.launch_overhead).seconds(); };
  const OpCost whole = gemm(4 * 12 * 256, 9 * 128, 8192);  // four waves of 108 tiles
  OpCost chunk = gemm(12 * 256, 9 * 128, 8192);            // a quarter of its rows
  EXPECT_GT(above_launch(chunk), above_launch(whole) / 4);  // alone: one wave, the kernel's cost paid by it
  chunk.split = 4;
  const double share = above_launch(whole) / 4;
  EXPECT_NEAR(above_launch(chunk), share, 3e-12);  // whole picoseconds
  // Hand-computed: the whole's four full waves pay only the fixed costs (EachTileAndKernelPaysAFixedCost).
  const double expected = chunk.flops / (0.82 * 312e12 * fixed_cost_share(8192, 4) / fixed_cost_share(16384, 76));
  EXPECT_NEAR(above_launch(chunk) / expected, 1, 1e-8);  // whole picoseconds
  // On fewer SMs (NCCL's CTAs beside it) the whole's waves are requantised, and the chunk takes its share.
  EXPECT_NEAR((op_time_on_sms(chunk, p, 100) - p.launch_overhead).seconds(),
              (op_time_on_sms(whole, p, 100) - p.launch_overhead).seconds() / 4, 1e-12);
}

// The flash op of one layer, forward or backward, of `m` under `c`.
OpCost flash_op(const TransformerModel& m, const OpContext& c, bool backward = false) {
  for (const OpCost& op : backward ? layer_backward_ops(m, c) : layer_forward_ops(m, c)) {
    if (op.flash) return op;
  }
  throw std::runtime_error("no flash op");
}

double above_launch(const ComputeProfile& p, const OpCost& op) { return (op_time(op, p) - p.launch_overhead).seconds(); }

// The benchmark both FlashAttention papers run: 16k tokens, hidden 2048, head dimension 128 (16 heads):
// 2,048 query blocks at every length, in ⌈2048 / SMs⌉ waves, whose quantisation each figure includes.
double bench_block_efficiency(int sms) { return 2048.0 / (std::ceil(2048.0 / sms) * sms); }

TEST(ComputeModel, FlashAttentionRunsAtItsOwnRateOverQueryBlocks) {
  const ComputeProfile p = roofline_profile(device_preset("a100"));
  TransformerModel m = model_preset("gpt3-1.3b");  // head dimension 2048 / 16 = 128, sequence 2048
  m.attention = AttentionImpl::Flash;
  // b = 27, t = 4: 27·4 = 108 heads of 16 query blocks: 16 whole waves. FlashAttention-2 on A100 at head
  // dimension 128 has one figure, forward + backward at 8k (182 TFLOP/s), the benchmark's 19 waves of
  // 108 SMs taken out of it.
  const OpCost flash = flash_op(m, {27, 4, false, 1});
  EXPECT_NEAR(above_launch(p, flash), flash.flops / (182e12 / bench_block_efficiency(108)), 1e-12);
  // One more head spills into a 17th wave.
  OpCost spill = flash;
  spill.batch += 1;
  spill.flops *= 109.0 / 108;
  EXPECT_GT(seconds_per_flop(spill, p), seconds_per_flop(flash, p));
  // Measured GEMM shapes say nothing of a flash kernel.
  ComputeProfile measured = p;
  measured.gemm_samples = {{2048, 2048, 128, DType::BF16, 10e12}};
  EXPECT_EQ(op_time(flash, measured), op_time(flash, p));
}

// Each kernel at its own rate: on A100 "flash" is FlashAttention-2's, "flash1" the first FlashAttention's,
// and neither FlashAttention-3 (Hopper only) nor cuDNN has a figure; on H100 "flash" is FlashAttention-3's,
// "flash2" and "cudnn" their own, and the first FlashAttention no figure.
TEST(ComputeModel, FlashAttentionKernelsHaveTheirOwnRates) {
  const auto op = [](AttentionImpl impl) {
    TransformerModel m = model_preset("gpt3-1.3b");
    m.attention = impl;
    return flash_op(m, {27, 4, false, 1});
  };
  const auto no_rate = [&](const ComputeProfile& p, AttentionImpl impl, const std::string& kernel, const std::string& why) {
    try {
      (void)op_time(op(impl), p);
      ADD_FAILURE() << kernel << " timed on " << p.device;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(kernel), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  const ComputeProfile a100 = roofline_profile(device_preset("a100"));
  const OpCost newest = op(AttentionImpl::Flash);
  EXPECT_EQ(newest.flash_kernel, FlashKernel::Newest);
  EXPECT_EQ(op_time(op(AttentionImpl::Flash2), a100), op_time(newest, a100));
  // Figure 4(d) of the FlashAttention-2 paper at 8k: FlashAttention 80, FlashAttention-2 182 TFLOP/s.
  EXPECT_NEAR(above_launch(a100, op(AttentionImpl::Flash1)) / above_launch(a100, newest), 182.0 / 80, 1e-6);
  no_rate(a100, AttentionImpl::Flash3, "FlashAttention-3", "Hopper");
  no_rate(a100, AttentionImpl::Cudnn, "cuDNN attention", "no public figure");
  const ComputeProfile h100 = roofline_profile(device_preset("h100"));
  EXPECT_EQ(op_time(op(AttentionImpl::Flash3), h100), op_time(newest, h100));
  // Forward, causal, head dimension 128, 2k (FlashAttention-3 paper, figure 5(d)): FlashAttention-3 521,
  // FlashAttention-2 298, cuDNN 484 TFLOP/s.
  EXPECT_NEAR(above_launch(h100, op(AttentionImpl::Flash2)) / above_launch(h100, newest), 521.0 / 298, 1e-6);
  EXPECT_NEAR(above_launch(h100, op(AttentionImpl::Cudnn)) / above_launch(h100, newest), 521.0 / 484, 1e-6);
  no_rate(h100, AttentionImpl::Flash1, "FlashAttention", "no public figure");
}

// On Hopper, the figures of the FlashAttention-3 paper at the benchmark's own shape (16k tokens, hidden
// 2048): the forward at its causal speed; the backward at its non-causal speed times the forward's
// causal / non-causal ratio (the paper has no causal backward figure); a recomputed forward is a
// forward. Between measured lengths the rate is interpolated in log length.
TEST(ComputeModel, FlashAttentionOnHopperFollowsThePapersFigures) {
  const ComputeProfile h100 = roofline_profile(device_preset("h100"));
  TransformerModel m = model_preset("gpt3-1.3b");
  m.attention = AttentionImpl::Flash3;
  m.seq_len = 4096;
  const OpContext bench{4, 1, false, 1};  // 4 sequences of 4k, 16 heads: the benchmark's shape at 4k
  const OpCost fwd = flash_op(m, bench), bwd = flash_op(m, bench, true);
  ASSERT_EQ(fwd.m, 4096);
  ASSERT_EQ(fwd.k, 128);
  ASSERT_EQ(fwd.batch, 64);
  EXPECT_NEAR(above_launch(h100, fwd), fwd.flops / 579e12, 1e-12);
  EXPECT_NEAR(above_launch(h100, bwd), bwd.flops / (542e12 * 579 / 638), 1e-12);
  OpCost recomputed = fwd;
  recomputed.phase = OpCost::Phase::Recompute;
  EXPECT_EQ(op_time(recomputed, h100), op_time(fwd, h100));
  // Half way (in log length) between 2k and 4k, with the same 2,048 query blocks: half way in rate.
  m.seq_len = 2896;
  const OpCost mid = flash_op(m, {4, 1, false, 1});
  // 23 query blocks (the last partial) of 64 heads: 1,472 blocks in 12 waves of 132.
  const double quantisation = (2896.0 / 128 * 64) / (12 * 132) / bench_block_efficiency(132);
  const double half = std::log(2896.0 / 2048) / std::log(2.0);
  EXPECT_NEAR(above_launch(h100, mid) / (mid.flops / ((521e12 + half * (579e12 - 521e12)) * quantisation)), 1, 1e-9);
}

// The lookup over measured points: the nearest measured head dimension, log-length interpolation,
// the nearest length beyond the measured ones. No shape model (sms 0), so no quantisation.
TEST(ComputeModel, FlashRatesComeFromTheNearestHeadDimensionAndLength) {
  ComputeProfile p;
  p.device = "test";
  p.gemm_rate[DType::BF16] = 100e12;
  p.shapes.flash_attention[static_cast<std::size_t>(FlashKernel::Newest)] = {
      {64, 1024, 0.5, 0.4}, {64, 4096, 0.7, 0.6}, {128, 1024, 0.9, 0.8}};
  const auto rate = [&](std::int64_t seq, std::int64_t head_dim, OpCost::Phase phase) {
    OpCost op = matmul_cost("flash", OpCost::Kind::Attention, phase, seq, seq, head_dim, 4096, DType::BF16);
    op.flash = true;
    return op.flops / above_launch(p, op) / 100e12;
  };
  const auto fwd = OpCost::Phase::Forward, bwd = OpCost::Phase::BackwardData;
  EXPECT_NEAR(rate(2048, 64, fwd), 0.6, 1e-9);  // log-midpoint of 1k and 4k
  EXPECT_NEAR(rate(2048, 64, bwd), 0.5, 1e-9);
  EXPECT_NEAR(rate(512, 64, fwd), 0.5, 1e-9);   // below the shortest: its rate
  EXPECT_NEAR(rate(16384, 64, fwd), 0.7, 1e-9);  // beyond the longest: its rate
  EXPECT_NEAR(rate(2048, 80, fwd), 0.6, 1e-9);   // 80 is nearer 64 than 128 (in ratio)
  EXPECT_NEAR(rate(2048, 100, bwd), 0.8, 1e-9);  // 100 nearer 128: its one length
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
