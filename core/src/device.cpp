// <vector> first: device.hpp declares device_preset_names() returning std::vector without including it.
#include <vector>

#include "twinbed/core/device.hpp"

#include "twinbed/core/error.hpp"

namespace twinbed {

namespace {

// Fixed cost per kernel launch. An assumption, not a datasheet figure: an empty CUDA kernel launch
// measures about 2-5 us of host-side overhead on current drivers; we use 4 us for every preset.
constexpr Time kLaunchOverhead = Time::us(4);

// 2:4 structured sparsity doubles the datasheet tensor-core rate on Ampere and later, but the GEMM
// speedups reported publicly for A100 linear layers are about 1.2-1.3x (../shared/REFERENCE.md,
// "Techniques"): we use the middle, 1.25, for A100 and — no other public figure being at hand — for
// the Hopper parts too.
constexpr double kSparse24Speedup = 1.25;

// Figures: ../shared/REFERENCE.md, "Hardware" (NVIDIA A100/H100/H200 datasheets). Dense tensor-core
// rates (no 2:4 sparsity). Memory capacity in decimal GB as the datasheets quote it (80 GB, 141 GB),
// which is at or below what the devices expose, so memory-fit checks err on the safe side.
DeviceSpec a100() {
  return {.name = "a100",
          .peak_bf16 = 312e12,
          .peak_tf32 = 156e12,
          .peak_fp8 = 0,  // Ampere has no FP8 tensor cores
          .peak_fp32 = 19.5e12,
          .memory = 80'000'000'000,
          .memory_bandwidth = 2.039e12,
          .launch_overhead = kLaunchOverhead,
          .sparse_speedup = kSparse24Speedup};
}

DeviceSpec h100() {
  return {.name = "h100",
          .peak_bf16 = 989e12,
          .peak_tf32 = 494.5e12,
          .peak_fp8 = 1979e12,
          .peak_fp32 = 67e12,
          .memory = 80'000'000'000,
          .memory_bandwidth = 3.35e12,
          .launch_overhead = kLaunchOverhead,
          .sparse_speedup = kSparse24Speedup};
}

// H200: the H100 compute die with larger, faster HBM3e.
DeviceSpec h200() {
  return {.name = "h200",
          .peak_bf16 = 989e12,
          .peak_tf32 = 494.5e12,
          .peak_fp8 = 1979e12,
          .peak_fp32 = 67e12,
          .memory = 141'000'000'000,
          .memory_bandwidth = 4.8e12,
          .launch_overhead = kLaunchOverhead,
          .sparse_speedup = kSparse24Speedup};
}

}  // namespace

DeviceSpec device_preset(const std::string& name) {
  if (name == "a100") return a100();
  if (name == "h100") return h100();
  if (name == "h200") return h200();
  throw UnknownName("device preset", name, device_preset_names());
}

std::vector<std::string> device_preset_names() { return {"a100", "h100", "h200"}; }

}  // namespace twinbed
