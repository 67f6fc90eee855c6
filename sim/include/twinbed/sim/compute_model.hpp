// Compute cost model: a roofline whose compute roof knows the shape.
//
//   time = launch_overhead + max(flops / (peak(dtype) · gemm_efficiency · shape_efficiency(m, n, k, batch)),
//                                bytes / (memory_bandwidth · memory_efficiency))
//
// for a matmul (GEMM or attention matmul); a memory-bound op takes launch_overhead + bytes / achieved
// memory bandwidth (its arithmetic never limits it on these devices).
//
// Tile and wave quantisation (NVIDIA, "Matrix Multiplication Background User's Guide", §3): a GEMM's
// m×n output is cut into tiles of the device's tile shape (DeviceSpec::gemm_tile_m × gemm_tile_n; the
// better of its two orientations), `batch` times; each SM computes one tile at a time, so the tiles run
// in ⌈tiles / SMs⌉ waves, and the last wave and the partial tiles at the edges leave SMs idle:
//
//   tile_efficiency = m·n·batch / (waves · SMs · tile_m · tile_n)        (1 for a whole number of full waves)
//
// gemm_efficiency is the ceiling large GEMMs reach (measured; below), so shape_efficiency, which is
// tile_efficiency times the fixed costs' share below, only takes away. Each output tile also pays a
// fixed cost, its mainloop's prologue and epilogue, and each kernel one more (filling and draining the
// pipeline): a GEMM of W waves of slices k deep takes as long as W·(k + k_tile) + k_kernel k-steps of
// the mainloop would, so the tile model keeps
//
//   k / (k + k_tile + k_kernel / W),  over the same for the ceiling's own shape (16384³), at most 1
//
// (k_tile and k_kernel: KernelShapeModel's tile_overhead_k and kernel_overhead_k, defaults and sources
// in compute_model.cpp, counted in k-steps of a BF16 mainloop; being a time, they count as more k-steps
// in a faster dtype: times its rate over BF16's).
// A GEMM with fewer tiles than SMs may split k over several thread blocks per tile (split-K, as CUTLASS
// and cuBLAS do), at the price of writing and reading FP32 partial tiles: the split count (1 to
// ⌊SMs / tiles⌋, slices at least 64 deep) with the shortest time is taken.
// A GEMM of small k moves m·n outputs for little arithmetic: its fixed costs, the epilogue writing those
// outputs among them, bring it to about its memory roof. A flash-attention op (OpCost::flash) runs at
// its kernel's measured rate for its pass, head dimension and query length instead (the nearest
// measured head dimension; interpolated in log length between the measured lengths, the nearest beyond
// them), its query blocks of 128 rows per head quantised in waves the same way (the benchmark's own
// quantisation taken out of the figure). A matmul a technique made sparse (OpCost::sparsity) is timed by the work the hardware really does: unstructured zeros are multiplied
// anyway (the dense FLOPs), zero blocks are skipped (the non-zero FLOPs at the dense rate: an optimistic
// bound), and a 2:4 operand runs `sparse_speedup` times faster than dense on sparse tensor cores
// (device.hpp; 1.0 where there are none, e.g. a CPU profile).
//
// Default efficiencies come from public hardware facts, never from a training throughput
// (compute_model.cpp has the sources): large dense GEMMs on random data at steady state (power-limited)
// reach about 82% of the datasheet peak on A100 (256 of 312 TFLOP/s) and 76% on H200 (755 of 989), whose
// die, clocks and power limit H100 shares, so the same; FP8 GEMMs on Hopper 70% (1,380 of 1,979).
// Memory: copy-class kernels reach about 87% of HBM datasheet bandwidth on A100 (0.87) and about 90% on
// H100/H200 (0.9). Unknown devices: 0.8 and 0.9.
//
// A measured profile (core/profile.hpp; what the real backend's `calibrate` writes) replaces these
// guesses. A technique kernel it measured (profile.hpp's technique_kernel_key) takes launch overhead +
// processed elements × its measured time per element (a masked step adds its other parameters' bytes
// at the memory rate); a block-sparse or 2:4 GEMM with a measured rate takes its non-zero FLOPs at it. When it holds measured GEMM shapes, a matmul other than a flash-attention op takes the rate interpolated (in log space)
// over the grid of measured (m, n, k) of its dtype, or the nearest measured shape off the grid (small
// and skinny GEMMs are slower than large square ones) — the measurement replaces the tile and wave
// model; else the per-dtype rate (measured or a fraction of the peak), under the tile and wave model of
// the device. When it holds streaming bandwidths by working-set size, an op's bytes move at the one
// measured for the nearest size (small working sets stay in cache); where it also holds a cache
// half-life (CPU ranks), the plan simulator adds what the bytes that have left the cache cost
// (cold_data_time, sim/cache_residency.hpp).
#pragma once

#include <array>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "twinbed/core/device.hpp"
#include "twinbed/core/model.hpp"
#include "twinbed/core/profile.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed::sim {

// Achieved rates of one device: a roofline guess from a DeviceSpec, or a measured profile.
using ComputeProfile = MachineProfile;

// Every flash-attention kernel at `fraction` of the datasheet peak, whatever its shape.
std::array<FlashRates, kFlashKernels> uniform_flash_rates(double fraction);

struct Efficiency {
  double gemm = 0.8;
  double gemm_fp8 = 0;  // FP8 GEMMs' ceiling where it was measured apart from the others; 0: gemm's
  // A GEMM's fixed costs per output tile and per kernel, in k-steps of a BF16 mainloop (above); 0: none.
  double gemm_tile_overhead_k = 0, gemm_kernel_overhead_k = 0;
  double memory = 0.9;
  // Each flash-attention kernel's rates (by FlashKernel), fractions of the datasheet peak at the shapes
  // measured; empty: no figure for that kernel on the device.
  std::array<FlashRates, kFlashKernels> flash_attention = uniform_flash_rates(0.8);
  bool operator==(const Efficiency&) const = default;
};

// The defaults above, by device name ("a100" 0.82, "h100"/"h200" 0.76 and FP8 0.70, else 0.80; fixed
// costs on A100, H100 and H200 135 k-steps a tile and 530 a kernel, else none; memory: a100 0.87, else
// 0.9). Flash attention, from the FlashAttention-2 and -3 papers' benchmarks
// (compute_model.cpp): on A100 FlashAttention and FlashAttention-2 (the newest) by head dimension and
// sequence length, one rate for both passes; no FlashAttention-3 (Hopper only) or cuDNN figure. On
// H100/H200 FlashAttention-2, FlashAttention-3 (the newest) and cuDNN, forward and backward, by head
// dimension and sequence length; no figure for the first FlashAttention. Else 0.8 for every kernel.
Efficiency default_efficiency(const std::string& device_name);

// Achieved rates = peak · efficiency for every dtype the device has (peak 0: absent). FP16 uses the
// BF16 peak. The device's SMs and GEMM tile become the profile's shape model.
ComputeProfile roofline_profile(const DeviceSpec& device, Efficiency eff);
inline ComputeProfile roofline_profile(const DeviceSpec& device) {
  return roofline_profile(device, default_efficiency(device.name));
}

// A profile JSON (core/profile.hpp) over the roofline defaults of `device`: keys it leaves out keep
// the roofline figures. ConfigError names the path ("/gemm_TFLOPs/bf16").
ComputeProfile profile_from_json(const nlohmann::json& j, const DeviceSpec& device, const std::string& path = "");
ComputeProfile load_profile(const std::string& file, const DeviceSpec& device);

// The tile and wave quantisation factor above of an m×n×k GEMM, `batch` times, with k split over
// `splits` thread blocks per output tile (split-K; 1: none), in (0, 1]; 1 when `shapes` has no SM count
// (a CPU). O(1).
double tile_efficiency(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t batch, const KernelShapeModel& shapes,
                       std::int64_t splits = 1);
// The whole shape factor the ceiling is multiplied by: tile_efficiency with the fixed costs of the tiles
// and the kernel (shapes.tile_overhead_k, kernel_overhead_k, in k-steps of the GEMM's own dtype), the
// better tile orientation. In (0, tile_efficiency]. O(1).
double shape_efficiency(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t batch, const KernelShapeModel& shapes,
                        std::int64_t splits = 1);

// The CTAs of a GEMM (OpCost::Kind::Gemm) where the device's GEMMs are persistent kernels
// (KernelShapeModel::persistent): one per SM, or one per output tile where there are fewer tiles (in the
// orientation with fewer); 0 for any other op, or without a persistent tile model.
int persistent_ctas(const OpCost& op, const KernelShapeModel& shapes);

// Time of one op under the model. Throws InvalidArgument when the op is a matmul in a dtype the
// profile has no rate for. O(GEMM samples · log + stream samples + SMs): the split-K search tries up to
// SMs / tiles splits.
Time op_time(const OpCost& op, const ComputeProfile& profile);

// Time of one op when only `sms` of the device's SMs are free for it (NCCL's CTAs hold the others;
// sim/plan_sim.cpp): a matmul timed by the tile, wave and split-K model over `sms` SMs, each at the
// device's per-SM rate — so a GEMM of exactly one full wave takes two waves on one SM fewer, as an
// NVIDIA forum report measured with Nsight Systems (an H100 GEMM of 132 thread blocks beside a
// 24-block NCCL all-gather: "the gemm kernel's execution time nearly doubles", forums.developer.
// nvidia.com/t/337991). A matmul a measurement times (GEMM samples, a technique kernel, a sparse
// rate) has no shape model: its time above the launch overhead × device SMs / `sms`. Fewer SMs leave
// memory-bound ops, and the memory roof of a shape-model matmul, unchanged (a measured matmul is scaled
// whole): no source here says what a few SMs fewer cost their bandwidth. What NCCL's own memory traffic
// costs them is `memory_share`, in (0, 1]: the share of the memory bandwidth left to the op (sim/
// plan_sim.cpp), its memory roof (the op's bytes over the bandwidth) stretched by 1 / memory_share; a
// technique kernel and a sparse rate keep their measured time. `sms` at or above the device's (or no SM
// count: a CPU) and a share of 1: op_time. Throws InvalidArgument for a share outside (0, 1].
Time op_time_on_sms(const OpCost& op, const ComputeProfile& profile, int sms, double memory_share = 1);

// What op_time leaves out when `cold_bytes` of a memory-bound op's bytes come from memory, not from
// cache (sim/cache_residency.hpp): those bytes at the memory's own bandwidth (memory_bandwidth, the
// largest working set's) instead of the rate of the op's working set. Zero for a matmul, whose
// operands stream under its arithmetic (compute-bound), for a technique kernel (its own buffers, its own
// measured rate) and where the working set's rate is the memory's already.
Time cold_data_time(const OpCost& op, const ComputeProfile& profile, double cold_bytes);

}  // namespace twinbed::sim
