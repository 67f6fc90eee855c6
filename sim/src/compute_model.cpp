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
  p.sparse_speedup = device.sparse_speedup;
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

}  // namespace

Time op_time(const OpCost& op, const ComputeProfile& profile) {
  double seconds = 0;
  const BytesPerSec memory = memory_rate(op.bytes, profile);
  if (memory > 0) seconds = static_cast<double>(op.bytes) / memory;
  if (op.is_matmul()) {
    FlopsPerSec rate = sampled_rate(op, profile);
    if (rate <= 0) {
      auto it = profile.gemm_rate.find(op.dtype);
      if (it == profile.gemm_rate.end() || it->second <= 0) {
        throw InvalidArgument("op_time: no " + dtype_name(op.dtype) + " matmul rate for device '" + profile.device + "'");
      }
      rate = it->second;
    }
    seconds = std::max(seconds, matmul_work(op, profile) / rate);
  }
  return profile.launch_overhead + Time::from_seconds(seconds);
}

}  // namespace twinbed::sim
