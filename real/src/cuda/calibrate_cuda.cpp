// GPU calibration (calibrate_cuda.hpp), written over the CUDA API of cuda_collectives.hpp alone, so it
// builds in every configuration and throws that API's Unavailable where there is no GPU.
#include "twinbed/real/calibrate_cuda.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <string>

#include "twinbed/core/error.hpp"
#include "twinbed/real/cuda_collectives.hpp"
#include "twinbed/real/hardware.hpp"

namespace twinbed::real {
namespace {

std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

MachineProfile calibrate_cuda(const CudaCalibrateOptions& o) {
  if (const auto why = cuda_unavailable_reason()) throw Unavailable(*why);
  if (o.gemm_dims.empty() || o.copy_bytes.empty()) throw InvalidArgument("calibrate_cuda: no GEMM sizes or copy sizes");
  MachineProfile p;
  p.device = probe_hardware().gpu_name;

  for (DType t : {DType::FP32, DType::TF32, DType::BF16, DType::FP16}) {
    FlopsPerSec best = 0;
    for (std::int64_t m : o.gemm_dims)
      for (std::int64_t n : o.gemm_dims)
        for (std::int64_t k : o.gemm_dims) {
          const double seconds = time_gemm_cuda(m, n, k, t, o.gemm_iters);
          const FlopsPerSec rate = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) / seconds;
          p.gemm_samples.push_back({m, n, k, t, rate});
          best = std::max(best, rate);
        }
    p.gemm_rate[t] = best;
  }
  // fp8 GEMMs run in bf16 on this backend: the profile says what they will do.
  p.gemm_rate[DType::FP8] = p.gemm_rate.at(DType::BF16);
  const std::size_t measured = p.gemm_samples.size();
  for (std::size_t i = 0; i < measured; ++i)
    if (p.gemm_samples[i].dtype == DType::BF16) {
      GemmSample s = p.gemm_samples[i];
      s.dtype = DType::FP8;
      p.gemm_samples.push_back(s);
    }

  // A copy of b bytes reads b and writes b: the bytes a streaming op of 2b moves.
  for (Bytes b : o.copy_bytes) p.memory_samples.push_back({2 * b, 2 * copy_bandwidth_cuda(b, o.copy_iters)});
  p.memory_bandwidth = p.memory_samples.back().bandwidth;
  p.launch_overhead = Time::from_seconds(time_gemm_cuda(8, 8, 8, DType::FP32, 100));

  if (o.ranks == 2 && o.link_sizes.size() >= 2) {
    MeasureOptions m;
    m.check = true;
    const std::vector<CollectiveRow> rows =
        measure_collectives_cuda(CollectiveOp::Broadcast, kNativeAlgorithm, o.link_sizes, 0, 0, m);
    for (const CollectiveRow& r : rows)
      if (r.wrong.value_or(0) != 0) throw Error("calibrate_cuda: the link's broadcast delivered wrong floats");
    const CollectiveRow& a = rows[rows.size() - 2];
    const CollectiveRow& b = rows.back();
    const double dt = (b.time_us - a.time_us) * 1e-6;
    LinkProfile link;
    link.latency = Time::from_seconds(rows.front().time_us * 1e-6);
    link.bandwidth = dt > 0 ? static_cast<double>(b.size_bytes - a.size_bytes) / dt
                            : static_cast<double>(b.size_bytes) / (b.time_us * 1e-6);
    p.link = link;
  }
  Provenance prov;
  prov.machine = p.device;
  prov.date = utc_now();
  prov.ranks = o.ranks;
  p.provenance = prov;
  return p;
}

}  // namespace twinbed::real
