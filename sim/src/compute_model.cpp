#include "twinbed/sim/compute_model.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "twinbed/core/error.hpp"

namespace twinbed::sim {

using nlohmann::json;

Efficiency default_efficiency(const std::string& device_name) {
  // Dense BF16 GEMM peaks measured publicly (../shared/REFERENCE.md): A100 271 of 312 TFLOP/s (0.87),
  // H100 795 of 989 (0.80). H200 has H100's GH100 die and clocks (only HBM differs): 0.80.
  // Memory: STREAM-style copy kernels reach about 90% of HBM datasheet bandwidth on these parts.
  if (device_name == "a100") return {0.87, 0.9};
  return {0.80, 0.9};
}

ComputeProfile roofline_profile(const DeviceSpec& device, Efficiency eff) {
  ComputeProfile p;
  p.device = device.name;
  auto put = [&](DType t, FlopsPerSec peak) {
    if (peak > 0) p.gemm_rate[t] = peak * eff.gemm;
  };
  put(DType::BF16, device.peak_bf16);
  put(DType::FP16, device.peak_bf16);
  put(DType::TF32, device.peak_tf32);
  put(DType::FP8, device.peak_fp8);
  put(DType::FP32, device.peak_fp32);
  p.memory_bandwidth = device.memory_bandwidth * eff.memory;
  p.launch_overhead = device.launch_overhead;
  return p;
}

ComputeProfile profile_from_json(const json& j, const DeviceSpec& device, const std::string& path) {
  return twinbed::profile_from_json(j, roofline_profile(device), device, path);
}

ComputeProfile load_profile(const std::string& file, const DeviceSpec& device) {
  return twinbed::load_profile(file, roofline_profile(device), device);
}

namespace {

// The measured rate of the sample of `op`'s dtype nearest in log(m·n·k); 0 when none was measured.
FlopsPerSec sampled_rate(const OpCost& op, const ComputeProfile& profile) {
  const double size = std::log(std::max(1.0, static_cast<double>(op.m) * static_cast<double>(op.n) * static_cast<double>(op.k)));
  FlopsPerSec best = 0;
  double best_distance = 0;
  for (const GemmSample& s : profile.gemm_samples) {
    if (s.dtype != op.dtype) continue;
    const double distance = std::abs(std::log(static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k)) - size);
    if (best == 0 || distance < best_distance) {
      best = s.rate;
      best_distance = distance;
    }
  }
  return best;
}

}  // namespace

Time op_time(const OpCost& op, const ComputeProfile& profile) {
  double seconds = 0;
  if (profile.memory_bandwidth > 0) seconds = static_cast<double>(op.bytes) / profile.memory_bandwidth;
  if (op.is_matmul()) {
    FlopsPerSec rate = sampled_rate(op, profile);
    if (rate <= 0) {
      auto it = profile.gemm_rate.find(op.dtype);
      if (it == profile.gemm_rate.end() || it->second <= 0) {
        throw InvalidArgument("op_time: no " + dtype_name(op.dtype) + " matmul rate for device '" + profile.device + "'");
      }
      rate = it->second;
    }
    seconds = std::max(seconds, op.flops / rate);
  }
  return profile.launch_overhead + Time::from_seconds(seconds);
}

}  // namespace twinbed::sim
