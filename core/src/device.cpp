// <vector> first: device.hpp declares device_preset_names() returning std::vector without including it.
#include <vector>

#include "twinbed/core/device.hpp"

#include "twinbed/core/error.hpp"

namespace twinbed {

namespace {

// Fixed cost per kernel: what a kernel in a stream of back-to-back kernels takes beyond its work (the
// gap between kernels, the ramp up and the tail). PyTorch's element-wise ReLU on an H100, timed over
// six back-to-back calls (pytorch/pytorch pull request #145746, 2025-01: FP16, 2^25 to 2^29
// elements, 48.4, 92.2, 180.3, 355.1 and 704.5 us), fits 4.7 to 5.4 us plus the bytes over 3.07 TB/s;
// with compute_model.cpp's 0.90 of 3.35 TB/s (taken from the last of those points), 4 us reproduces
// every one of them within 2 %. The same 4 us for every preset: no such sweep for the A100 is at hand.
constexpr Time kLaunchOverhead = Time::us(4);

// 2:4 structured sparsity doubles the datasheet tensor-core rate on Ampere and later, but the GEMM
// speedups reported publicly for A100 linear layers are about 1.2-1.3x (../shared/REFERENCE.md,
// "Techniques"): we use the middle, 1.25, for A100 and — no other public figure being at hand — for
// the Hopper parts too.
constexpr double kSparse24Speedup = 1.25;

// Streaming multiprocessors: NVIDIA A100 Tensor Core GPU Architecture whitepaper (2020), "the A100
// SXM4 GPU has 108 SMs"; NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022), "the H100 SXM5 GPU
// has 132 SMs". H200 is the same GH100 die with HBM3e (NVIDIA H200 datasheet): 132.
constexpr int kA100Sms = 108;
constexpr int kHopperSms = 132;

// GEMM output tiles, one thread block per SM:
//  - A100: 256×128. NVIDIA, "Matrix Multiplication Background User's Guide" (DU-09799-001, §2.3 and
//    §3.2): cuBLAS's 16-bit tiles range from 64×64 to 256×128, the largest reuse data best and are
//    picked for large GEMMs; "in the particular case of 256x128 thread block tiles, [an A100] can
//    execute one thread block per SM, leading to a wave size of 108 tiles".
//  - H100/H200: 128×256. cuBLAS 12's Hopper kernels for large BF16 GEMMs are named
//    "sm90_xmma_gemm_bf16bf16_..._tilesize128x256x64_warpgroupsize2x1x1" in Nsight traces, and CUTLASS
//    3's default SM90 warp-specialized cooperative GEMM uses a 128×256×64 tile, one CTA per SM.
constexpr std::int64_t kA100TileM = 256, kA100TileN = 128;
constexpr std::int64_t kHopperTileM = 128, kHopperTileN = 256;

// Persistent GEMM kernels on Hopper: "upon inspection, all the matmuls look like they are using
// 'persistent' kernels. That is, they launch as many CUDA blocks as there are SMs on the GPU (i.e., 132)
// and each of these blocks will process several tiles in a row", and beside an NCCL kernel "the matmuls
// take 2x as long": "due to NCCL occupying some SMs, not all blocks of the matmuls can be scheduled at
// once, thus breaking them into two waves" (pytorch/pytorch issue #143988, 2024-12, cuBLAS on H100 under
// FSDP; pull request #144974, 2025-01: "Newer matmul kernels, e.g. those targeting Hopper GPUs, sometime
// use a 'persistent' schedule"; CUTLASS 3's SM90 kernels default to a persistent tile scheduler). The
// A100's cuBLAS kernels launch a CTA per output tile (the waves of the DU-09799 guide above).
constexpr bool kHopperPersistentGemm = true;

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
          .sparse_speedup = kSparse24Speedup,
          .sms = kA100Sms,
          .gemm_tile_m = kA100TileM,
          .gemm_tile_n = kA100TileN};
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
          .sparse_speedup = kSparse24Speedup,
          .sms = kHopperSms,
          .gemm_tile_m = kHopperTileM,
          .gemm_tile_n = kHopperTileN,
          .persistent_gemm = kHopperPersistentGemm};
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
          .sparse_speedup = kSparse24Speedup,
          .sms = kHopperSms,
          .gemm_tile_m = kHopperTileM,
          .gemm_tile_n = kHopperTileN,
          .persistent_gemm = kHopperPersistentGemm};
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
