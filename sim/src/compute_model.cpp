#include "twinbed/sim/compute_model.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <vector>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "twinbed/core/error.hpp"

namespace twinbed::sim {

using nlohmann::json;

namespace {

// ---- flash-attention kernels, as their papers measured them ---------------------------------------
// Both papers run one benchmark (FlashAttention-2, Dao 2023, arXiv:2307.08691 §4.1; FlashAttention-3,
// Shah et al. 2024, arXiv:2407.08608 §4.1): "we vary the sequence length as 512, 1k, ..., 16k, and set
// batch size so that the total number of tokens is 16k. We set the hidden dimension to 2048, and head
// dimension to be either 64, 128 [...]"; FP16; FLOPs 4·seqlen²·head_dim·heads, halved under a causal
// mask, × 2.5 for the backward pass — the count flash_attention() in core/src/model.cpp makes. Speeds in
// TFLOP/s as printed on the bars, at these lengths:
constexpr std::array<std::int64_t, 6> kFlashBenchSeq{512, 1024, 2048, 4096, 8192, 16384};
constexpr std::int64_t kFlashBenchTokens = 16384, kFlashBenchHidden = 2048;
using BenchSpeeds = std::array<double, 6>;

// One kernel on Hopper at one head dimension: FlashAttention-3 paper, H100 80GB SXM5 (clock fixed at
// 1,830 MHz, the clock of the 989 TFLOP/s peak; appendix C.1), Figure 5 (forward; (b), (d) with a causal
// mask, (a), (c) without, head dimension 64, 128) and Figure 6 (backward, (a), (b): without a causal mask
// only, the paper has no causal backward figure). Training masks causally, so the backward's causal
// speed is taken as its non-causal one times the forward's causal / non-causal ratio at that length: the
// mask costs both passes the same way (the blocks above the diagonal skipped, the diagonal ones masked,
// the work per thread block uneven). The one figure of both passes under the mask agrees: on A100,
// FlashAttention-2's forward + backward falls by about what its forward alone does on H100 (head
// dimension 64, 512 to 8k: 88/132 to 165/175, against 180/282 to 295/322).
struct HopperFigures {
  std::int64_t head_dim;
  BenchSpeeds forward_causal, forward, backward;
};

constexpr double kH100Peak = 989;  // TFLOP/s, dense FP16/BF16 at 1,830 MHz (the paper's peak; device.cpp)
constexpr double kA100Peak = 312;

FlashRates hopper(const std::array<HopperFigures, 2>& figures) {
  FlashRates r;
  for (const HopperFigures& f : figures) {
    for (std::size_t i = 0; i < kFlashBenchSeq.size(); ++i) {
      const double causal_ratio = f.forward_causal[i] / f.forward[i];
      r.push_back({f.head_dim, kFlashBenchSeq[i], f.forward_causal[i] / kH100Peak,
                   f.backward[i] * causal_ratio / kH100Peak});
    }
  }
  return r;
}

std::array<FlashRates, kFlashKernels> flash_rates_hopper() {
  //                        head dim, forward causal,                   forward,                      backward
  const FlashRates flash2 = hopper({{{64, {180, 229, 262, 284, 295, 299}, {282, 306, 318, 321, 322, 324},
                                      {198, 238, 264, 279, 287, 291}},
                                     {128, {191, 260, 298, 319, 333, 335}, {309, 350, 362, 368, 370, 370},
                                      {214, 260, 291, 310, 318, 322}}}});
  const FlashRates flash3 = hopper({{{64, {197, 265, 371, 420, 460, 473}, {333, 392, 460, 476, 496, 497},
                                      {272, 363, 422, 453, 472, 474}},
                                     {128, {292, 423, 521, 579, 602, 616}, {467, 565, 625, 638, 646, 648},
                                      {316, 424, 501, 542, 559, 561}}}});
  const FlashRates cudnn = hopper({{{64, {225, 288, 334, 363, 379, 388}, {335, 373, 395, 408, 412, 413},
                                     {266, 348, 395, 417, 432, 433}},
                                    {128, {315, 410, 484, 518, 529, 539}, {497, 574, 617, 609, 600, 595},
                                     {305, 408, 465, 499, 518, 516}}}});
  // The paper's "cuDNN" is cuDNN 9.1.1's fused flash attention, what Transformer Engine's FusedAttention
  // calls. No figure there for the first FlashAttention. NVIDIA's own run of cuDNN 9.1 (cudnn-frontend,
  // benchmark/benchmark_results.csv: an H200 with its clocks locked at 1,980 MHz, causal, head dimension
  // 128) reads 542 and 573 TFLOP/s forward and 444 and 464 backward at 4k and 8k: these figures scaled by
  // 1,980 / 1,830 give 560, 572, 459 and 494, within 7 %.
  return {flash3, {}, flash2, flash3, cudnn};
}

// A100: FlashAttention-2 paper, A100 80GB SXM4, Figure 4 (forward + backward; (c), (d) with a causal
// mask, head dimension 64, 128). Only the combined speed is taken, the same for both passes, so a
// step's fwd + bwd attention time is the figure's. Head dimension 64, every length: figure 4(c) as the
// arXiv source's figs/flash2_causal_True_hdim_64_fwd_bwd_speed.pdf prints it. Head dimension 128: 8k
// only (FlashAttention 80, FlashAttention-2 182), the one column of 4(d) found in public text, a review's
// reading of the rendered arXiv v1 page ("causal, 128 | 34 / 80 / 91 / 78 / 182"; its 4(c) column,
// 18 / 92 / 69 / 79 / 165, is the source file's exactly). No figure for FlashAttention-3 (Hopper only)
// or cuDNN.
FlashRates a100(const BenchSpeeds& hdim64, double hdim128_8k) {
  FlashRates r;
  for (std::size_t i = 0; i < kFlashBenchSeq.size(); ++i) {
    r.push_back({64, kFlashBenchSeq[i], hdim64[i] / kA100Peak, hdim64[i] / kA100Peak});
  }
  r.push_back({128, 8192, hdim128_8k / kA100Peak, hdim128_8k / kA100Peak});
  return r;
}

std::array<FlashRates, kFlashKernels> flash_rates_a100() {
  const FlashRates flash1 = a100({58, 70, 77, 87, 92, 97}, 80);
  const FlashRates flash2 = a100({88, 119, 140, 156, 165, 171}, 182);
  return {flash2, flash1, flash2, {}, {}};
}

// A flash-attention kernel runs one thread block per (query block, head, sequence): FlashAttention-2
// (§3.2-3.3) splits the queries into blocks of 128 rows for head dimensions up to 128 (block sizes
// {64, 128} × {64, 128}, the larger for the query side), as FlashAttention-3 does on Hopper. Its
// blocks quantise into waves over the SMs as a GEMM's tiles do: `queries` rows, `heads` (head, sequence)
// pairs.
constexpr std::int64_t kFlashQueryBlock = 128;

double flash_block_efficiency(std::int64_t queries, std::int64_t heads, const KernelShapeModel& shapes) {
  KernelShapeModel blocks = shapes;
  blocks.tile_m = blocks.tile_n = kFlashQueryBlock;
  return tile_efficiency(queries, kFlashQueryBlock, 1, heads, blocks);
}

// A flash kernel's rate for `op` (its queries op.m, head dimension op.k, pass op.phase; a recomputed
// forward is a forward) from the measured points: those of the nearest measured head dimension (in
// ratio), interpolated linearly in log length between the lengths measured, the nearest measured length
// beyond them. A point with head_dim 0 (or seq 0) stands for every head dimension (length). `rates` must
// not be empty.
double flash_rate(const FlashRates& rates, const OpCost& op) {
  const auto log_distance = [](std::int64_t a, std::int64_t b) {
    return a <= 0 || b <= 0 ? 0.0 : std::abs(std::log(static_cast<double>(a) / static_cast<double>(b)));
  };
  std::int64_t head_dim = rates.front().head_dim;
  for (const FlashRatePoint& r : rates) {
    if (log_distance(r.head_dim, op.k) < log_distance(head_dim, op.k)) head_dim = r.head_dim;
  }
  std::vector<FlashRatePoint> points;
  for (const FlashRatePoint& r : rates) {
    if (r.head_dim == head_dim) points.push_back(r);
  }
  std::sort(points.begin(), points.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
  const bool backward = op.phase == OpCost::Phase::BackwardData || op.phase == OpCost::Phase::BackwardWeight;
  const auto at = [&](const FlashRatePoint& r) { return backward ? r.backward : r.forward; };
  if (op.m <= points.front().seq) return at(points.front());
  for (std::size_t i = 1; i < points.size(); ++i) {
    if (op.m <= points[i].seq) {
      const double f = std::log(static_cast<double>(op.m) / static_cast<double>(points[i - 1].seq)) /
                       std::log(static_cast<double>(points[i].seq) / static_cast<double>(points[i - 1].seq));
      return at(points[i - 1]) + f * (at(points[i]) - at(points[i - 1]));
    }
  }
  return at(points.back());
}

}  // namespace

std::array<FlashRates, kFlashKernels> uniform_flash_rates(double fraction) {
  std::array<FlashRates, kFlashKernels> r;
  for (FlashRates& k : r) k = {FlashRatePoint{0, 0, fraction, fraction}};
  return r;
}

Efficiency default_efficiency(const std::string& device_name) {
  // The large-GEMM ceiling: the rate a large dense GEMM sustains on training data. A GPU runs large GEMMs at
  // its power limit, and random-valued operands switch more transistors than benign ones, so the clock, and
  // the rate, settle lower than a peak measured on zeros or integers. A100: 8192^3 in PyTorch (cuBLAS) ran
  // at 295 TFLOP/s on zeros and 257 on torch.randn (H. He, "Strangely, Matrix Multiplications on GPUs Run
  // Faster When Given 'Predictable' Data!", thonking.ai, 2024); Azure's ND A100 v4 benchmark
  // (A100-SXM4-80GB, cuBLASLt, FP16, random initialisation, 10,000 warm-up iterations) 253.7 TFLOP/s at
  // 8192^3 and 256.5 at 16384^3 (github.com/Azure/AI-benchmarking-guide, Azure_Results/ND_A100_v4_results.md
  // @3bb66ca); on a V100, zeros read "up to ~15% higher" than realistic operands (baidu-research/DeepBench
  // issue #104). Those shapes fill whole waves (tile_efficiency about 1), so the ceiling is about 256 of
  // 312: 0.82. (The peak ../shared/REFERENCE.md lists, 271, states neither its data nor its duration.)
  // H100 and H200: 0.76 — the Maximum Sustainable Matmul FLOPS (MSMF) of stas00/ml-engineering's
  // mamf-finder.py, benchmark version 4 (compute/accelerator/benchmarks/mamf-finder.py @0359db89: BF16
  // operands from torch.randn, the L2 flushed before every call; the clock first settled under full load,
  // then the best shape's rate held steady over a 4 s window): on an 8x H200 node with every GPU computing,
  // 755 TFLOP/s on the median GPU and 745 on the slowest, and one GPU alone 743-746 over five runs, of 989
  // (compute/accelerator/benchmarks/README.md, "How MAMF and MSMF are defined" and "What was measured:
  // alone vs all-8 concurrent"). The median GPU describes the GPU model, as the source says: 755/989. The
  // H100 SXM has the H200's GH100 die, clocks and 700 W power limit (only HBM differs), and a power-limited
  // rate follows the die and its limit, so it takes the same ceiling. (REFERENCE.md's 795 for H100 is the
  // same tool's earlier short-run figure, a mean of 100 calls after 50 warm-ups: like 271 on the A100, a
  // rate before the power limit holds the clock down.) FP8 on Hopper, measured apart: Azure's ND H100 v5
  // benchmark (cuBLASLt, FP8, random initialisation, 10,000 warm-up iterations) 1,377.3 TFLOP/s at 16384^3
  // and 1,382.2 at 32768^3 of 1,979: 0.70 (Azure_Results/ND_H100_v5_results.md @f350e7e in the guide
  // above); ND H200 v5 1,366.3 and 1,349.5 (0.69, ND_H200_v5_results.md @7f20e5f).
  // mamf-finder's MSMF (above) reads "about 1330" to 1,337 on H200 FP8 (0.68), the same within 3 %.
  // The two differ in accumulation, and so stand for all three of a layer's FP8 GEMMs: Azure's runs
  // superbenchmark's cublaslt_gemm, which sets CUBLASLT_MATMUL_DESC_FAST_ACCUM to 1
  // (superbench/benchmarks/micro_benchmarks/cublaslt_gemm/cublaslt_utils.cc), as Transformer Engine's
  // forward GEMM runs (_2X_ACC_FPROP = False in transformer_engine/pytorch/module/base.py); mamf-finder
  // calls torch._scaled_mm without use_fast_accum, whose default is off, as Transformer Engine's input-
  // and weight-gradient GEMMs run (_2X_ACC_DGRAD = _2X_ACC_WGRAD = True: partial sums promoted to FP32).
  // Sustained, at the best shapes, the promotion costs no more than those 3 %.
  // Memory: a copy-class kernel's measured share of the HBM datasheet bandwidth. A100: 0.87 — CUB's
  // BabelStream on an A100-SXM4-80GB, 2^28 16-byte elements, "mul" (a scaled copy) 4.849 ms for 8.59 GB,
  // 86.9% of 2,039 GB/s, and "add" 87.7% (NVIDIA/cccl pull request #7019, 2025-12); a memcopy measured
  // at 1,355 GB/s on an A100 40GB, 87.1% of 1,555 (PTsolvers/gpu-workshop-JuliaCon23 issue #7, 2023).
  // H100/H200: 0.90 — PyTorch's element-wise ReLU on 2^29 FP16 elements, 0.704 ms for a read and a
  // write, 3.05 TB/s, 91% of 3.35 (pytorch/pytorch pull request #145746, "Hopper H100", 2025-01). A
  // STREAM figure found later reads 4 % lower: BabelStream's copy and mul at 2.90 TB/s, 0.87, on ND H100 v5
  // (Azure_Results/ND_H100_v5_results.md in the guide above, as a fork of it stores it); left as it is,
  // within the spread the two kernels show. The same share for every memory-bound kernel.
  // A GEMM's fixed costs (compute_model.hpp): each output tile's 135 k-steps and each kernel's 530, of a
  // BF16 mainloop. Fitted on XLA's table of cuBLAS GEMMs measured on H100 (openxla/xla,
  // xla/service/gpu/model/default_matmul_perf_table.txtpb @336bb15c, "sm_90", "bf16xbf16->bf16"): m = n =
  // 4096, k = 256 to 4096, batch 1, 2 and 4 (4, 8 and 16 waves of the tiles here), fifteen points, which
  // the two constants and a scale fit within 3 % (rms 1.5 %): k_tile + k_kernel/W is 268 k-steps at 4 waves
  // and 168 at 16. The table times short runs, so only how its rate moves with k and W is taken, not its
  // level. Two sustained sweeps, from the source of the ceilings above (cuBLASLt, random data, 10,000
  // warm-ups: 4096³ to 32768³ and 6144×12288×12288), check it within 2 % at every one of those sizes:
  // ND H100 v5 in FP8, where the same time is 1.84 times the k-steps (4096³ 1,218 TFLOP/s modelled,
  // 1,216.9 measured; 8192³ 1,315 and 1,290.1), and ND A100 v4 in FP16 with the k-step counts as they are
  // (4096³ 231 and 228.0; 8192³ 252.5 and 253.7). Without these costs 4096³ read +10 % (H100 FP8) and +6 %
  // (A100). Shapes of one wave or less (2048³ and below) read 15 to 48 % slow in both sweeps: cuBLAS takes
  // smaller tiles there than the one tile shape modelled. The clock is held: on H200, mamf-finder's K walk
  // (above) finds a one-wave shape sustaining 727 TFLOP/s at k = 20480, 749 at 6144 and 722 at 4096, the
  // power cap letting the clock climb as k shortens; such shapes read up to 10 % slow at k ≤ 6144.
  // Flash attention: the papers' benchmark figures (flash_rates_a100, flash_rates_hopper above).
  if (device_name == "a100") {
    return {.gemm = 0.82, .gemm_tile_overhead_k = 135, .gemm_kernel_overhead_k = 530, .memory = 0.87,
            .flash_attention = flash_rates_a100()};
  }
  if (device_name == "h100" || device_name == "h200") {
    return {.gemm = 0.76, .gemm_fp8 = 0.70, .gemm_tile_overhead_k = 135, .gemm_kernel_overhead_k = 530,
            .memory = 0.9, .flash_attention = flash_rates_hopper()};
  }
  return {.gemm = 0.80, .memory = 0.9};
}

ComputeProfile roofline_profile(const DeviceSpec& device, Efficiency eff) {
  ComputeProfile p;
  p.device = device.name;
  auto put = [&](DType t, FlopsPerSec peak, double efficiency) {
    if (peak > 0) p.gemm_rate[t] = peak * efficiency;
  };
  put(DType::BF16, device.peak_bf16, eff.gemm);
  put(DType::FP16, device.peak_bf16, eff.gemm);
  put(DType::TF32, device.peak_tf32, eff.gemm);
  put(DType::FP8, device.peak_fp8, eff.gemm_fp8 > 0 ? eff.gemm_fp8 : eff.gemm);
  put(DType::FP32, device.peak_fp32, eff.gemm);
  p.memory_bandwidth = device.memory_bandwidth * eff.memory;
  p.launch_overhead = device.launch_overhead;
  p.sparse_speedup = device.sparse_speedup;
  p.shapes.sms = device.sms;
  p.shapes.tile_m = device.gemm_tile_m;
  p.shapes.tile_n = device.gemm_tile_n;
  p.shapes.persistent = device.persistent_gemm;
  p.shapes.tile_overhead_k = eff.gemm_tile_overhead_k;
  p.shapes.kernel_overhead_k = eff.gemm_kernel_overhead_k;
  // Flash rates relative to the dense rate, and at whole waves: the benchmark's own quantisation (its
  // blocks over this device's SMs) is taken out of each figure, as op_time puts the op's back in.
  for (std::size_t k = 0; k < kFlashKernels; ++k) {
    FlashRates& rates = p.shapes.flash_attention[k];
    rates = eff.flash_attention[k];
    for (FlashRatePoint& r : rates) {
      double scale = eff.gemm > 0 ? 1 / eff.gemm : 1;
      if (r.seq > 0 && r.head_dim > 0) {
        const std::int64_t heads = kFlashBenchHidden / r.head_dim, batch = kFlashBenchTokens / r.seq;
        scale /= flash_block_efficiency(r.seq, heads * batch, p.shapes);
      }
      r.forward *= scale;
      r.backward *= scale;
    }
  }
  return p;
}

ComputeProfile profile_from_json(const json& j, const DeviceSpec& device, const std::string& path) {
  return twinbed::profile_from_json(j, roofline_profile(device), device, path);
}

ComputeProfile load_profile(const std::string& file, const DeviceSpec& device) {
  return twinbed::load_profile(file, roofline_profile(device), device);
}

namespace {

double ln(std::int64_t v) { return std::log(static_cast<double>(std::max<std::int64_t>(v, 1))); }

// The measured GEMM rate for `op`'s shape. Efficiency depends on each dimension (a skinny GEMM is
// slower than a square one of the same size), so shapes are compared dimension by dimension: where the
// samples of the op's dtype form a full (m, n, k) grid, log(rate) is interpolated trilinearly in
// (log m, log n, log k) (clamped at the grid's edges); otherwise the nearest sample in that space
// is used. 0 when none was measured.
FlopsPerSec sampled_rate(const OpCost& op, const ComputeProfile& profile) {
  std::map<std::array<std::int64_t, 3>, FlopsPerSec> rate;
  std::array<std::vector<std::int64_t>, 3> axis;
  for (const GemmSample& s : profile.gemm_samples) {
    if (s.dtype != op.dtype) continue;
    rate[{s.m, s.n, s.k}] = s.rate;
    for (int d = 0; d < 3; ++d) axis[d].push_back(d == 0 ? s.m : d == 1 ? s.n : s.k);
  }
  if (rate.empty()) return 0;
  for (auto& a : axis) {
    std::sort(a.begin(), a.end());
    a.erase(std::unique(a.begin(), a.end()), a.end());
  }
  const std::array<std::int64_t, 3> want{op.m, op.n, op.k};
  // Per dimension: the bracketing grid values and the weight of the upper one.
  std::array<std::int64_t, 3> lo{}, hi{};
  std::array<double, 3> w{};
  for (int d = 0; d < 3; ++d) {
    const auto& a = axis[d];
    auto it = std::lower_bound(a.begin(), a.end(), want[d]);
    if (it == a.end()) {
      lo[d] = hi[d] = a.back();  // beyond the grid: clamp
    } else if (*it == want[d] || it == a.begin()) {
      lo[d] = hi[d] = *it;       // on a grid value, or below the grid: clamp
    } else {
      hi[d] = *it;
      lo[d] = *(it - 1);
    }
    w[d] = hi[d] == lo[d] ? 0 : (ln(want[d]) - ln(lo[d])) / (ln(hi[d]) - ln(lo[d]));
  }
  double log_rate = 0;
  for (int corner = 0; corner < 8; ++corner) {
    std::array<std::int64_t, 3> at{};
    double weight = 1;
    for (int d = 0; d < 3; ++d) {
      const bool upper = (corner >> d) & 1;
      at[d] = upper ? hi[d] : lo[d];
      weight *= upper ? w[d] : 1 - w[d];
    }
    if (weight == 0) continue;
    auto it = rate.find(at);
    if (it == rate.end()) {  // not a full grid here: nearest sample instead
      FlopsPerSec best = 0;
      double best_distance = 0;
      for (const auto& [shape, r] : rate) {
        double distance = 0;
        for (int d = 0; d < 3; ++d) distance += (ln(shape[d]) - ln(want[d])) * (ln(shape[d]) - ln(want[d]));
        if (best == 0 || distance < best_distance) {
          best = r;
          best_distance = distance;
        }
      }
      return best;
    }
    log_rate += weight * std::log(it->second);
  }
  return std::exp(log_rate);
}

// The streaming bandwidth measured for the working set nearest `bytes` in log size; the profile's
// memory bandwidth when it has no samples.
BytesPerSec memory_rate(Bytes bytes, const ComputeProfile& profile) {
  BytesPerSec best = profile.memory_bandwidth;
  double best_distance = 0;
  bool found = false;
  for (const StreamSample& m : profile.memory_samples) {
    const double distance = std::abs(ln(m.bytes) - ln(bytes));
    if (!found || distance < best_distance) {
      best = m.bandwidth;
      best_distance = distance;
      found = true;
    }
  }
  return best;
}

// The FLOPs a matmul's time is set by, at the device's dense rate. A technique's sparsity (OpCost::
// sparsity; flops count the non-zero work, density × the dense work):
//  - Unstructured: dense hardware multiplies the zeros too: the dense work.
//  - Block: zero blocks are skipped: the non-zero work, at the dense rate — an optimistic bound (a
//    block-sparse kernel does not beat the dense GEMM's efficiency); a calibrated profile can say more.
//  - TwoFour: the sparse tensor cores run it `sparse_speedup` times faster than dense (1 without them).
double matmul_work(const OpCost& op, const ComputeProfile& profile) {
  const double dense = op.density > 0 ? op.flops / op.density : op.flops;
  switch (op.sparsity) {
    case OpCost::Sparsity::Dense: return op.flops;
    case OpCost::Sparsity::Unstructured: return dense;
    case OpCost::Sparsity::Block: return op.flops;
    case OpCost::Sparsity::TwoFour: return dense / profile.sparse_speedup;
  }
  return op.flops;
}

// The tiles of an m×n output (`batch` times, k split `splits` ways) in one orientation, tm×tn: how many
// waves they take over the SMs, and the share of those waves' tile-slots the useful work fills.
struct Tiling {
  double waves = 1, quantisation = 1;
};

// Output tiles of tm×tn an m×n output takes, `batch` times.
double tile_count(std::int64_t m, std::int64_t n, std::int64_t batch, std::int64_t tm, std::int64_t tn) {
  const auto ceil_div = [](std::int64_t a, std::int64_t b) { return static_cast<double>((a + b - 1) / b); };
  return ceil_div(m, tm) * ceil_div(n, tn) * static_cast<double>(batch);
}

Tiling tiling(std::int64_t m, std::int64_t n, double depth, double slice, std::int64_t batch, std::int64_t splits,
              std::int64_t tm, std::int64_t tn, int sms) {
  const double units = tile_count(m, n, batch, tm, tn) * static_cast<double>(splits);
  const double waves = std::ceil(units / sms);
  // Useful work over what the SMs could have done in that many full waves of full tiles and slices.
  const double useful = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(batch) * depth;
  return {waves, useful / (waves * sms * static_cast<double>(tm) * static_cast<double>(tn) * slice)};
}

bool has_tiles(const KernelShapeModel& s) { return s.sms > 0 && s.tile_m > 0 && s.tile_n > 0; }

// Both orientations of the tile (cuBLAS has both, 256×128 and 128×256), each scored by `score`; the better.
template <class Score>
double best_orientation(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t batch, const KernelShapeModel& s,
                        std::int64_t splits, Score score) {
  const double depth = static_cast<double>(std::max<std::int64_t>(k, 1));
  splits = std::clamp<std::int64_t>(splits, 1, static_cast<std::int64_t>(depth));
  const double slice = std::ceil(depth / static_cast<double>(splits));
  double best = 0;
  for (const auto& [tm, tn] : {std::pair{s.tile_m, s.tile_n}, std::pair{s.tile_n, s.tile_m}}) {
    best = std::max(best, score(tiling(m, n, depth, slice, batch, splits, tm, tn, s.sms), slice));
  }
  return best;
}

// The share of a tile's time its k-steps take, slices `slice` deep in `waves` waves (the fixed costs).
double fixed_cost_share(double slice, double waves, const KernelShapeModel& s) {
  return slice / (slice + s.tile_overhead_k + s.kernel_overhead_k / waves);
}

// The ceilings stand for large GEMMs, which pay the fixed costs too: each is taken as a 16384³ GEMM's
// rate, the size it was measured at (A100, H100 FP8; H200's BF16 at its best sustained shape, k ≥ 6144).
constexpr std::int64_t kCeilingShape = 16384;

// shape_efficiency where only shapes.sms of the device's `device_sms` SMs are free: the ceiling was
// measured on all of them.
double shape_efficiency_on(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t batch,
                           const KernelShapeModel& shapes, std::int64_t splits, int device_sms) {
  if (!has_tiles(shapes) || m <= 0 || n <= 0 || batch <= 0) return 1;
  const Tiling c = tiling(kCeilingShape, kCeilingShape, kCeilingShape, kCeilingShape, 1, 1, shapes.tile_m, shapes.tile_n,
                          device_sms);
  const double ceiling = fixed_cost_share(kCeilingShape, c.waves, shapes);
  return best_orientation(m, n, k, batch, shapes, splits, [&](const Tiling& t, double slice) {
    return t.quantisation * std::min(1.0, fixed_cost_share(slice, t.waves, shapes) / ceiling);
  });
}

}  // namespace

double tile_efficiency(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t batch, const KernelShapeModel& shapes,
                       std::int64_t splits) {
  if (!has_tiles(shapes) || m <= 0 || n <= 0 || batch <= 0) return 1;
  return best_orientation(m, n, k, batch, shapes, splits, [](const Tiling& t, double) { return t.quantisation; });
}

double shape_efficiency(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t batch, const KernelShapeModel& shapes,
                        std::int64_t splits) {
  return shape_efficiency_on(m, n, k, batch, shapes, splits, shapes.sms);
}

int persistent_ctas(const OpCost& op, const KernelShapeModel& shapes) {
  if (!shapes.persistent || !has_tiles(shapes) || op.kind != OpCost::Kind::Gemm) return 0;
  if (op.m <= 0 || op.n <= 0 || op.batch <= 0) return 0;
  const double fewest = std::min(tile_count(op.m, op.n, op.batch, shapes.tile_m, shapes.tile_n),
                                 tile_count(op.m, op.n, op.batch, shapes.tile_n, shapes.tile_m));
  return static_cast<int>(std::min(fewest, static_cast<double>(shapes.sms)));
}

namespace {

// Split-K (CUTLASS, media/docs/efficient_gemm.md, "Parallelized Reductions"): a GEMM with fewer output
// tiles than SMs leaves SMs idle, so the library splits k over up to ⌊SMs / tiles⌋ thread blocks per
// tile, each at least one k-step of the mainloop deep (64 for the 16-bit tiles above:
// "tilesize128x256x64"), and sums their FP32 partial tiles in a reduction that writes and reads them
// once more. The split count that gives the shortest time is taken, as the library's heuristic would.
constexpr std::int64_t kSplitStep = 64;
constexpr double kPartialBytes = 4;  // FP32 accumulators

double gemm_seconds(const OpCost& op, double work, FlopsPerSec rate, BytesPerSec memory, const KernelShapeModel& shapes,
                    int device_sms) {
  const auto memory_seconds = [&](double bytes) { return memory > 0 ? bytes / memory : 0.0; };
  const double outputs = static_cast<double>(op.m) * static_cast<double>(op.n) * static_cast<double>(op.batch);
  const auto compute_seconds = [&](std::int64_t splits) {
    return work / (rate * shape_efficiency_on(op.m, op.n, op.k, op.batch, shapes, splits, device_sms));
  };
  double best = std::max(memory_seconds(static_cast<double>(op.bytes)), compute_seconds(1));
  if (!has_tiles(shapes)) return best;
  const double tiles = tile_count(op.m, op.n, op.batch, shapes.tile_m, shapes.tile_n);
  const auto max_splits = std::min<std::int64_t>(static_cast<std::int64_t>(shapes.sms / std::max(tiles, 1.0)), op.k / kSplitStep);
  for (std::int64_t splits = 2; splits <= max_splits; ++splits) {
    const double partials = 2 * static_cast<double>(splits) * outputs * kPartialBytes;
    const double t = std::max(memory_seconds(static_cast<double>(op.bytes) + partials), compute_seconds(splits));
    best = std::min(best, t);
  }
  return best;
}

// op_time, with the matmul roof of `sms` of the device's SMs: the device's rates scaled by
// sms / profile.shapes.sms (each SM computes at the device's per-SM rate) and the tile, wave and
// split-K model over `sms`; and the memory roof at `memory_share` of the memory bandwidth. `shape_model`
// (out) says whether the shape model timed the op, rather than a measurement that knows nothing of a
// smaller SM count (a technique kernel, a sparse rate, GEMM samples).
Time op_time_with_sms(const OpCost& op, const ComputeProfile& profile, int sms, double memory_share,
                      bool& shape_model) {
  shape_model = false;
  // Technique kernels and sparse GEMMs at the rates a calibrated profile measured for them.
  if (const auto k = profile.kernel_seconds_per_element.find(technique_kernel_key(op)); k != profile.kernel_seconds_per_element.end()) {
    double seconds = technique_kernel_elements(op) * k->second;
    if (op.kernel == OpCost::Kernel::Compress && op.adaptive) {  // the adaptive rule runs before the encoding
      if (const auto c = profile.kernel_seconds_per_element.find("tgc.choose_bits"); c != profile.kernel_seconds_per_element.end())
        seconds += technique_kernel_elements(op) * c->second;
    }
    if (op.kernel == OpCost::Kernel::MaskedStep) {
      const Bytes rest = masked_step_rest_bytes(op);
      const BytesPerSec memory = memory_rate(rest, profile);
      if (memory > 0) seconds += static_cast<double>(rest) / memory;
    }
    return profile.launch_overhead + Time::from_seconds(seconds);
  }
  if (op.is_matmul() && (op.sparsity == OpCost::Sparsity::Block || op.sparsity == OpCost::Sparsity::TwoFour)) {
    const auto g = profile.sparse_gemm_rate.find(op.sparsity == OpCost::Sparsity::Block ? "block" : "2:4");
    if (g != profile.sparse_gemm_rate.end()) return profile.launch_overhead + Time::from_seconds(op.flops / g->second);
  }
  double seconds = 0;
  const BytesPerSec memory = memory_rate(op.bytes, profile) * memory_share;
  if (memory > 0) seconds = static_cast<double>(op.bytes) / memory;
  if (op.is_matmul()) {
    // Measured shapes hold the shape effects already; otherwise the large-GEMM rate under the tile,
    // wave and split-K model (a flash kernel: its own rate, its query blocks as the tiles).
    // A chunk of a split GEMM (OpCost::split) at the whole GEMM's shape: its work, its bytes.
    OpCost split_whole;
    if (op.split > 1) {
      split_whole = op;
      split_whole.m = op.m * op.split;
    }
    const OpCost& whole = op.split > 1 ? split_whole : op;
    const FlopsPerSec sampled = op.flash ? 0 : sampled_rate(whole, profile);
    if (sampled > 0) return profile.launch_overhead + Time::from_seconds(std::max(seconds, matmul_work(op, profile) / sampled));
    auto it = profile.gemm_rate.find(op.dtype);
    if (it == profile.gemm_rate.end() || it->second <= 0) {
      throw InvalidArgument("op_time: no " + dtype_name(op.dtype) + " matmul rate for device '" + profile.device + "'");
    }
    KernelShapeModel shapes = profile.shapes;
    FlopsPerSec rate = it->second;
    if (shapes.sms > 0 && sms < shapes.sms) {
      rate *= static_cast<double>(sms) / shapes.sms;
      shapes.sms = sms;
    }
    shape_model = true;
    if (op.flash) {
      const FlashRates& rates = shapes.flash_attention[static_cast<std::size_t>(op.flash_kernel)];
      if (rates.empty()) {
        throw InvalidArgument("op_time: no " + flash_kernel_title(op.flash_kernel) + " rate for device '" +
                              profile.device + "' (" +
                              (op.flash_kernel == FlashKernel::Flash3 ? "it runs on Hopper GPUs only"
                                                                      : "no public figure for it there") +
                              "); the model's attention \"flash\" takes the device's newest FlashAttention");
      }
      rate *= flash_rate(rates, op) * flash_block_efficiency(op.m, op.batch, shapes);
      seconds = std::max(seconds, matmul_work(op, profile) / rate);
    } else {
      // The fixed costs are a time: as k-steps of this dtype's mainloop, BF16's count times its rate over BF16's.
      if (const auto bf16 = profile.gemm_rate.find(DType::BF16); bf16 != profile.gemm_rate.end() && bf16->second > 0) {
        shapes.tile_overhead_k *= it->second / bf16->second;
        shapes.kernel_overhead_k *= it->second / bf16->second;
      }
      seconds = gemm_seconds(whole, matmul_work(op, profile), rate, memory, shapes, profile.shapes.sms);
    }
  }
  return profile.launch_overhead + Time::from_seconds(seconds);
}

}  // namespace

Time op_time(const OpCost& op, const ComputeProfile& profile) {
  bool shape_model = false;
  return op_time_with_sms(op, profile, profile.shapes.sms, 1, shape_model);
}

Time cold_data_time(const OpCost& op, const ComputeProfile& profile, double cold_bytes) {
  if (op.is_matmul() || cold_bytes <= 0 || profile.memory_bandwidth <= 0 || !technique_kernel_key(op).empty())
    return Time{};
  const BytesPerSec warm = memory_rate(op.bytes, profile);
  if (warm <= profile.memory_bandwidth) return Time{};
  return Time::from_seconds(cold_bytes * (1 / profile.memory_bandwidth - 1 / warm));
}

Time op_time_on_sms(const OpCost& op, const ComputeProfile& profile, int sms, double memory_share) {
  const int device_sms = profile.shapes.sms;
  const bool fewer_sms = op.is_matmul() && device_sms > 0 && sms < device_sms;
  if (!(memory_share > 0 && memory_share <= 1)) {
    throw InvalidArgument("op_time_on_sms: memory_share must be in (0, 1] (got " + std::to_string(memory_share) + ")");
  }
  if (!fewer_sms && memory_share == 1) return op_time(op, profile);
  sms = fewer_sms ? std::max(sms, 1) : device_sms;
  bool shape_model = false;
  const Time t = op_time_with_sms(op, profile, sms, memory_share, shape_model);
  if (!fewer_sms || shape_model) return t;
  // A measured rate: the same work on fewer SMs, in proportion.
  const std::int64_t work = (t - profile.launch_overhead).picoseconds();
  return profile.launch_overhead + Time::ps((work * device_sms + sms / 2) / sms);
}

}  // namespace twinbed::sim
