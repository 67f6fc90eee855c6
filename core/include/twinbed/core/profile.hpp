// A machine profile: the achieved rates of one device and of the link between two ranks, as measured
// by the real backend's `twinbed calibrate` (or derived from a datasheet by the simulator's roofline
// defaults). The simulator reads it, so that `compare` measures the model, not a guess of the hardware.
//
// JSON (strict: unknown keys are ConfigErrors naming the path; every key but "device" optional):
//   {"device": "cpu-fp32",                    // name, informational
//    "gemm_TFLOPs": {"fp32": 0.09, ...},      // achieved dense GEMM rate per dtype, TFLOP/s, or
//    "gemm_efficiency": {"bf16": 0.87, ...},  // a fraction of the device's datasheet peak
//    "gemm_samples": [{"m": 512, "n": 512, "k": 512, "dtype": "fp32", "TFLOPs": 0.08}, ...],
//    "memory_bandwidth_GBps": 12.5,           // achieved streaming bandwidth (STREAM triad), GB/s
//    "memory_samples": [{"bytes": 393216, "GBps": 40.1}, ...],  // triad by bytes moved per pass
//    "launch_overhead_us": 4.0,               // fixed cost per kernel
//    "sparse_speedup": 1.25,                  // 2:4-sparse GEMM against dense (1: no sparse tensor cores)
//    "link": {"latency_us": 1.2, "bandwidth_GBps": 5.1},   // point-to-point: latency + bytes/bandwidth
//    "provenance": {"machine": "host", "date": "2026-11-22T14:00:00Z", "git_revision": "abc123",
//                   "ranks": 2, "tool": "twinbed calibrate"}}
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "twinbed/core/device.hpp"
#include "twinbed/core/model.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed {

// One measured GEMM: C[m×n] = A[m×k]·B[k×n] in `dtype` ran at `rate` FLOP/s (2·m·n·k per GEMM).
struct GemmSample {
  std::int64_t m = 0, n = 0, k = 0;
  DType dtype = DType::FP32;
  FlopsPerSec rate = 0;
  bool operator==(const GemmSample&) const = default;
};

// A streaming pass (STREAM triad) moving `bytes` in all (reads + writes) ran at `bandwidth`: small
// working sets stay in cache and run faster than the memory's own bandwidth.
struct StreamSample {
  Bytes bytes = 0;
  BytesPerSec bandwidth = 0;
  bool operator==(const StreamSample&) const = default;
};

// Point-to-point between two ranks: a message of b bytes takes latency + b / bandwidth.
struct LinkProfile {
  Time latency;
  BytesPerSec bandwidth = 0;
  bool operator==(const LinkProfile&) const = default;
};

// Where a measured profile came from (results carry provenance).
struct Provenance {
  std::string machine;
  std::string date;          // ISO 8601, UTC
  std::string git_revision;
  int ranks = 0;             // ranks that ran at once while measuring
  std::string tool;
  bool operator==(const Provenance&) const = default;
};

// How a GPU's kernels depend on shape (sim/compute_model.hpp): GEMMs run as output tiles of
// tile_m × tile_n, one per SM at a time, over `sms` SMs; a flash-attention kernel runs at
// `flash_attention` times the dense GEMM rate of its dtype. From the device (DeviceSpec) and the
// simulator's defaults, never from a profile file. sms 0: no shape model (a CPU, or an unknown device):
// every matmul runs at the per-dtype rate.
struct KernelShapeModel {
  int sms = 0;
  std::int64_t tile_m = 0, tile_n = 0;
  double flash_attention = 1;
  bool operator==(const KernelShapeModel&) const = default;
};

struct MachineProfile {
  std::string device;
  std::map<DType, FlopsPerSec> gemm_rate;  // achieved dense matmul FLOP/s per dtype: large GEMMs
  KernelShapeModel shapes;                 // how smaller and odd shapes fall below gemm_rate
  std::vector<GemmSample> gemm_samples;    // measured shapes, when calibrated
  BytesPerSec memory_bandwidth = 0;        // achieved, for working sets beyond the caches
  std::vector<StreamSample> memory_samples;  // measured by size, when calibrated
  Time launch_overhead;
  double sparse_speedup = 1;               // a 2:4-sparse GEMM against the dense one (1: no such hardware)
  std::optional<LinkProfile> link;
  std::optional<Provenance> provenance;
  bool operator==(const MachineProfile&) const = default;
};

// The datasheet peak of `device` for dtype t (FP16 uses the BF16 peak); 0 when it has none.
FlopsPerSec device_peak(const DeviceSpec& device, DType t);

// Strict parse. `base` supplies everything the JSON leaves out (e.g. the simulator's roofline profile
// of the cluster's device); `device` supplies the peaks that "gemm_efficiency" multiplies.
MachineProfile profile_from_json(const nlohmann::json& j, const MachineProfile& base, const DeviceSpec& device,
                                 const std::string& path = "");
nlohmann::json profile_to_json(const MachineProfile& p);
// Reads a file; ConfigError (path = file name) when unreadable or not JSON.
MachineProfile load_profile(const std::string& file, const MachineProfile& base, const DeviceSpec& device);
// Writes atomically (temporary file, then rename); throws Error when the folder cannot be written.
void save_profile(const MachineProfile& p, const std::string& file);

}  // namespace twinbed
