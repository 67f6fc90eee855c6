// A machine profile: the achieved rates of one device and of the link between two ranks, as measured
// by the real backend's `twinbed calibrate` (or derived from a datasheet by the simulator's roofline
// defaults). The simulator reads it, so that `compare` measures the model, not a guess of the hardware.
//
// JSON (strict: unknown keys are ConfigErrors naming the path; every key optional, absent ones keeping the base's values;
// inside "link" and each sample every key is required):
//   {"device": "cpu-fp32",                    // name, informational
//    "gemm_TFLOPs": {"fp32": 0.09, ...},      // achieved dense GEMM rate per dtype, TFLOP/s, or
//    "gemm_efficiency": {"bf16": 0.82, ...},  // a fraction of the device's datasheet peak
//    "gemm_samples": [{"m": 512, "n": 512, "k": 512, "dtype": "fp32", "TFLOPs": 0.08}, ...],
//    "memory_bandwidth_GBps": 12.5,           // achieved streaming bandwidth (calibrate.hpp), GB/s
//    "memory_samples": [{"bytes": 262144, "GBps": 40.1}, ...],  // by bytes moved per pass
//    "launch_overhead_us": 4.0,               // fixed cost per kernel
//    "cache_half_life_ms": 9.0,               // data left in cache half gone after this long (CPU ranks)
//    "sparse_speedup": 1.25,                  // 2:4-sparse GEMM against dense (1: no sparse tensor cores)
//    "link": {"latency_us": 1.2, "bandwidth_GBps": 5.1},   // point-to-point: latency + bytes/bandwidth
//    "progress": "polled",                    // when communication is seen to finish (CommProgress)
//    "kernel_ns_per_element": {"tgc.compress.topk": 2.2, ...},  // technique kernels as measured, below
//    "sparse_gemm_TFLOPs": {"block": 0.05, "2:4": 0.02},  // DSA's sparse GEMMs: FLOP/s of the non-zero work
//    "provenance": {"machine": "host", "date": "2026-11-22T14:00:00Z", "git_revision": "abc123",
//                   "ranks": 2, "tool": "twinbed calibrate"}}
#pragma once

#include <array>

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

// A streaming pass (calibrate.hpp says which) moving `bytes` in all (reads + writes) ran at `bandwidth`: small
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
  // The machine's cores (its online CPUs) that those ranks shared; 0: not recorded. Where ranks exceed
  // cores, every measured time is that of a rank holding cores / ranks of a core (compare's simulation
  // has the ranks take the cores in turn: PlanSimOptions::shared_cores).
  int cores = 0;
  bool operator==(const Provenance&) const = default;
};

// A flash-attention kernel's measured rate at one shape, as a fraction of the device's dense GEMM rate of
// its dtype: forward and backward, under a causal mask, at head dimension `head_dim` and `seq` queries
// (sim/compute_model.cpp has the tables and their sources). head_dim and seq 0: one rate for every shape.
struct FlashRatePoint {
  std::int64_t head_dim = 0, seq = 0;
  double forward = 1, backward = 1;
  bool operator==(const FlashRatePoint&) const = default;
};
using FlashRates = std::vector<FlashRatePoint>;

// How a GPU's kernels depend on shape (sim/compute_model.hpp): GEMMs run as output tiles of
// tile_m × tile_n, one per SM at a time, over `sms` SMs, each tile and kernel paying fixed costs besides
// its k-steps; a flash-attention kernel (OpCost::flash_kernel) runs at the rates `flash_attention[kernel]`
// gives for its shape, empty where the device has no figure for that kernel. From the device (DeviceSpec)
// and the simulator's defaults, never from a profile file. sms 0: no shape model (a CPU, or an unknown
// device): every matmul runs at the per-dtype rate.
struct KernelShapeModel {
  int sms = 0;
  std::int64_t tile_m = 0, tile_n = 0;
  // A GEMM's fixed costs, in k-steps of a BF16 tile's mainloop: each output tile's (its prologue and
  // epilogue) and each kernel's (filling and draining the pipeline); 0 where unknown.
  double tile_overhead_k = 0, kernel_overhead_k = 0;
  // GEMMs run as persistent kernels (DeviceSpec::persistent_gemm): min(tiles, sms) CTAs.
  bool persistent = false;
  // By default every kernel at the dense rate, whatever its shape (one FlashRatePoint{}).
  std::array<FlashRates, kFlashKernels> flash_attention{FlashRates(1), FlashRates(1), FlashRates(1), FlashRates(1),
                                                        FlashRates(1)};
  bool operator==(const KernelShapeModel&) const = default;
};

// ---- technique kernels, as measured --------------------------------------------------------------
// A technique kernel's time is not its bytes over the bandwidth: a top-k selection, a mask selection
// and a quantisation compute as much as they move. A calibrated profile holds each kernel's measured
// time per element it processes; the simulator then times a kernel op as launch overhead + processed
// elements × that time (sim/compute_model.hpp), and the ops without a measurement by their bytes.
// Keys (technique_kernel_key), each measured by `calibrate` at one setting the key names:
//   tgc.compress.topk       error feedback + exact top-10% + 8-bit values, per gradient element
//   tgc.compress.quantize   error feedback + 8-bit quantisation, per gradient element
//   tgc.choose_bits         the adaptive rule (kernels' choose_bits, tolerance 0.05, blocks of 256) over
//                           gradient + residual, per gradient element: added to an adaptive compress
//   tgc.requantize          decode + add + encode at 8 bits, per element of the hops
//   tgc.decompress.sparse   zero the gradient, decode and scatter-add every rank's top-10% payload
//                           (the calibrating ranks' count of them), per gradient element
//   tgc.decompress.quantized decode one 8-bit payload and add, per gradient element
//   dsa.mask_refresh.unstructured / .block / .2:4   importance + the mask's selection (density 0.3,
//                           32×32 blocks, 2:4), per element refreshed
//   dsa.masked_step         masked Adam at density 0.3, per target parameter
//   precision.loss_scale    the overflow check and unscale, per gradient
//   precision.statistics    max|g| and Σg², per gradient read
// An op's processed elements (technique_kernel_elements): OpCost::elements, divided by OpCost::every
// for the amortised ones (mask refresh, statistics). A masked step also streams the rest of the
// optimizer step's bytes (masked_step_rest_bytes).
std::string technique_kernel_key(const OpCost& op);  // "" for ops that are not technique kernels
double technique_kernel_elements(const OpCost& op);
// The bytes of a masked optimizer step beyond masked Adam's own: the step's other parameters (its
// bytes less 28 per active target parameter — optimizer_step_cost's Adam bytes — and the 1-byte mask).
Bytes masked_step_rest_bytes(const OpCost& op);
// The keys calibrate measures, in that order.
std::vector<std::string> technique_kernel_keys();

// When a rank sees its communication finish. `independent` (the default): as soon as the transfer
// is done — a GPU's NCCL kernels and copy engines run beside its compute kernels. `polled`: only where
// the rank polls, between its compute ops — MPI without an asynchronous progress thread (Open MPI's
// default) advances and completes requests inside MPI calls only, and the CPU backend's single thread
// calls MPI_Test between one compute op and the next (real/src/cpu/cpu_backend.cpp), so a message or
// collective that finishes during a compute op is seen to, and releases what waits on it, when that op
// ends. `calibrate` of the CPU backend writes `polled`.
enum class CommProgress { Independent, Polled };
std::string to_string(CommProgress p);          // "independent", "polled"
CommProgress parse_comm_progress(const std::string& name);  // UnknownName listing them otherwise
std::vector<std::string> comm_progress_names();

struct MachineProfile {
  std::string device;
  std::map<DType, FlopsPerSec> gemm_rate;  // achieved dense matmul FLOP/s per dtype: large GEMMs
  KernelShapeModel shapes;                 // how smaller and odd shapes fall below gemm_rate
  std::vector<GemmSample> gemm_samples;    // measured shapes, when calibrated
  BytesPerSec memory_bandwidth = 0;        // achieved, for working sets beyond the caches
  std::vector<StreamSample> memory_samples;  // measured by size, when calibrated
  Time launch_overhead;
  // How long data a rank stops touching stays in the caches: half of it is read from memory again after
  // this long (calibrate measures it on CPU ranks, whose caches other processes share and empty; the
  // simulator's cache model, sim/cache_residency.hpp). Zero: not measured, no such model.
  Time cache_half_life;
  double sparse_speedup = 1;               // a 2:4-sparse GEMM against the dense one (1: no such hardware)
  std::optional<LinkProfile> link;
  CommProgress progress = CommProgress::Independent;
  std::map<std::string, double> kernel_seconds_per_element;  // by technique_kernel_key; measured only
  std::map<std::string, FlopsPerSec> sparse_gemm_rate;       // "block", "2:4": non-zero FLOP/s; measured only
  std::optional<Provenance> provenance;
  bool operator==(const MachineProfile&) const = default;
};

// The GEMM sample that checks how fast a calibrated machine runs at another moment (calibrate and
// compare time it again): the largest square fp32 sample of at most kSpeedProbeMaxDim (1024^3 in a full
// CPU calibration, 512^3 in a quick one); none when the profile has no such sample.
constexpr std::int64_t kSpeedProbeMaxDim = 1024;
// How far the probe's rate may move before calibrate and compare say the machine drifted: the 10 % GEMM
// error issue 12 allows compare, which a drift that size would decide by itself.
constexpr double kSpeedDriftTolerance = 0.1;
std::optional<GemmSample> speed_probe_sample(const MachineProfile& p);
// The probe's side among a grid's dimensions (calibrate picks it before the grid is measured): the
// largest of at most kSpeedProbeMaxDim; 0 when there is none.
std::int64_t speed_probe_dim(const std::vector<std::int64_t>& dims);
// The profile of the same machine with its GEMMs running `factor` times as fast as when it was measured
// (compare's speed probe says by how much): every GEMM rate scaled (per dtype, the measured shapes, the
// sparse GEMMs'), nothing else; the probe is a GEMM and says nothing of memory or messages. factor > 0.
MachineProfile with_gemm_speed(MachineProfile p, double factor);

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
