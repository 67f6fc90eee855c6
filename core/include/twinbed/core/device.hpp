// What a compute device can do, as the cost models need it. Figures of the presets come from
// ../shared/REFERENCE.md (NVIDIA datasheets); every field is in base units (FLOP/s, bytes, bytes/s).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "twinbed/core/units.hpp"

namespace twinbed {

struct DeviceSpec {
  std::string name = "generic";
  FlopsPerSec peak_bf16 = 0;      // dense tensor-core BF16/FP16
  FlopsPerSec peak_tf32 = 0;
  FlopsPerSec peak_fp8 = 0;       // 0 where the device has none
  FlopsPerSec peak_fp32 = 0;      // without tensor cores
  Bytes memory = 0;               // device memory capacity
  BytesPerSec memory_bandwidth = 0;
  Time launch_overhead;           // fixed cost per kernel launch
  double sparse_speedup = 1;      // a GEMM with a 2:4-sparse operand on the sparse tensor cores,
                                  // against the dense GEMM (1: no such hardware)
  // What the GEMM tile and wave model needs (sim/compute_model.hpp): the streaming multiprocessors,
  // and the output tile (rows × columns of C) one SM computes at a time in the library's kernel for
  // large 16-bit GEMMs, one tile per SM. 0: unknown, no tile model (every GEMM at the ceiling rate).
  int sms = 0;
  std::int64_t gemm_tile_m = 0;
  std::int64_t gemm_tile_n = 0;
  // Whether the library's large GEMMs are persistent kernels: as many CTAs as SMs, each computing its
  // share of the output tiles in turn, rather than one CTA per tile. Beside NCCL's CTAs, which hold SMs
  // of their own, some of a persistent kernel's CTAs find no SM and start only once one is free
  // (sim/plan_sim.cpp).
  bool persistent_gemm = false;

  bool operator==(const DeviceSpec&) const = default;
};

// Presets: "a100" (SXM 80GB), "h100" (SXM), "h200". Throws UnknownName listing them otherwise.
DeviceSpec device_preset(const std::string& name);
std::vector<std::string> device_preset_names();

}  // namespace twinbed
