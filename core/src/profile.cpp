#include "twinbed/core/profile.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "enum_names.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/topology_json.hpp"

namespace twinbed {

using nlohmann::json;
using namespace json_read;

FlopsPerSec device_peak(const DeviceSpec& d, DType t) {
  switch (t) {
    case DType::BF16:
    case DType::FP16: return d.peak_bf16;
    case DType::TF32: return d.peak_tf32;
    case DType::FP8: return d.peak_fp8;
    case DType::FP32: return d.peak_fp32;
  }
  return 0;
}

namespace {

// Bandwidths (GB/s) and latencies (us) take the ranges of topology files (topology_json.hpp); the
// rest are bounded here. 10^9 TFLOP/s (10^21 FLOP/s per device) and a sparse speedup of 100 (2:4
// sparsity gives 2) are far above any machine and low enough that no rate becomes infinite.
constexpr double kMaxTFLOPs = 1e9;
constexpr double kMaxSparseSpeedup = 100;
constexpr double kMaxCacheHalfLifeMs = 1e6;  // 1,000 s: beyond any run

// A number in (0, max].
double read_positive(const json& v, const std::string& path, double max, const std::string& unit) {
  const std::string range = "a number in (0, " + number_text(max) + "] (" + unit + ")";
  const double x = read_number(v, path, range);
  if (!(x > 0 && x <= max)) fail(path, "expected " + range + ", got " + got(v));
  return x;
}

GemmSample read_sample(const json& v, const std::string& path) {
  require_object(v, path);
  check_keys(v, path, {"m", "n", "k", "dtype", "TFLOPs"});
  GemmSample s;
  s.m = read_int(required(v, path, "m"), child(path, "m"), 1, std::int64_t{1} << 30);
  s.n = read_int(required(v, path, "n"), child(path, "n"), 1, std::int64_t{1} << 30);
  s.k = read_int(required(v, path, "k"), child(path, "k"), 1, std::int64_t{1} << 30);
  s.dtype = read_named(required(v, path, "dtype"), child(path, "dtype"), parse_dtype);
  s.rate = read_positive(required(v, path, "TFLOPs"), child(path, "TFLOPs"), kMaxTFLOPs, "TFLOP/s") * 1e12;
  return s;
}

constexpr enum_names::Table<CommProgress, 2> kProgressNames = {{CommProgress::Independent, "independent"},
                                                               {CommProgress::Polled, "polled"}};

}  // namespace

std::string to_string(CommProgress p) { return enum_names::name_of(kProgressNames, p, "not a CommProgress"); }
CommProgress parse_comm_progress(const std::string& name) {
  return enum_names::parse(kProgressNames, name, "communication progress");
}
std::vector<std::string> comm_progress_names() { return enum_names::names(kProgressNames); }

std::vector<std::string> technique_kernel_keys() {
  return {"tgc.compress.topk",        "tgc.compress.quantize",    "tgc.choose_bits",         "tgc.requantize",
          "tgc.decompress.sparse",    "tgc.decompress.quantized", "dsa.mask_refresh.unstructured", "dsa.mask_refresh.block",
          "dsa.mask_refresh.2:4",     "dsa.masked_step",          "precision.loss_scale",    "precision.statistics"};
}

std::string technique_kernel_key(const OpCost& op) {
  using K = OpCost::Kernel;
  switch (op.kernel) {
    case K::Compress:
      if (op.name == "tgc.requantize") return "tgc.requantize";
      return op.keep_fraction < 1 ? "tgc.compress.topk" : "tgc.compress.quantize";
    case K::Decompress: return op.keep_fraction < 1 ? "tgc.decompress.sparse" : "tgc.decompress.quantized";
    case K::MaskRefresh:
      return op.sparsity == OpCost::Sparsity::Block     ? "dsa.mask_refresh.block"
             : op.sparsity == OpCost::Sparsity::TwoFour ? "dsa.mask_refresh.2:4"
                                                         : "dsa.mask_refresh.unstructured";
    case K::MaskedStep: return "dsa.masked_step";
    case K::LossScale: return "precision.loss_scale";
    case K::Precision: return "precision.statistics";
    case K::Lora:
    case K::None: return "";
  }
  return "";
}

double technique_kernel_elements(const OpCost& op) {
  const bool amortised = op.kernel == OpCost::Kernel::MaskRefresh || op.kernel == OpCost::Kernel::Precision;
  return static_cast<double>(op.elements) / (amortised ? std::max(1, op.every) : 1);
}

Bytes masked_step_rest_bytes(const OpCost& op) {
  const auto active = static_cast<Bytes>(std::llround(op.density * static_cast<double>(op.elements)));
  return std::max<Bytes>(0, op.bytes - 28 * active - op.elements);
}

MachineProfile profile_from_json(const json& j, const MachineProfile& base, const DeviceSpec& device,
                                 const std::string& path) {
  require_object(j, path);
  check_keys(j, path,
             {"device", "gemm_TFLOPs", "gemm_efficiency", "gemm_samples", "memory_bandwidth_GBps", "memory_samples",
              "launch_overhead_us", "cache_half_life_ms", "sparse_speedup", "link", "progress", "kernel_ns_per_element", "sparse_gemm_TFLOPs", "provenance"});
  MachineProfile p = base;
  if (j.contains("device")) p.device = read_name(j["device"], child(path, "device"));
  for (const char* key : {"gemm_TFLOPs", "gemm_efficiency"}) {
    if (!j.contains(key)) continue;
    const std::string at = child(path, key);
    require_object(j[key], at);
    for (const auto& [name, value] : j[key].items()) {
      const std::string where = child(at, name);
      DType t;
      try {
        t = parse_dtype(name);
      } catch (const UnknownName& e) {
        fail(where, e.what());
      }
      if (std::string(key) == "gemm_TFLOPs") {
        p.gemm_rate[t] = read_positive(value, where, kMaxTFLOPs, "TFLOP/s") * 1e12;
      } else {
        const double eff = read_positive(value, where, 1, "a fraction of the datasheet peak");
        const FlopsPerSec peak = device_peak(device, t);
        if (peak <= 0) fail(where, "device '" + device.name + "' has no " + name + " peak to take a fraction of");
        p.gemm_rate[t] = eff * peak;
      }
    }
  }
  if (j.contains("gemm_samples")) {
    const std::string at = child(path, "gemm_samples");
    if (!j["gemm_samples"].is_array()) fail(at, "expected an array of {m, n, k, dtype, TFLOPs}, got " + got(j["gemm_samples"]));
    p.gemm_samples.clear();
    for (std::size_t i = 0; i < j["gemm_samples"].size(); ++i) p.gemm_samples.push_back(read_sample(j["gemm_samples"][i], child(at, i)));
  }
  if (j.contains("memory_bandwidth_GBps")) {
    p.memory_bandwidth = read_bandwidth_GBps(j["memory_bandwidth_GBps"], child(path, "memory_bandwidth_GBps"));
  }
  if (j.contains("memory_samples")) {
    const std::string at = child(path, "memory_samples");
    if (!j["memory_samples"].is_array()) fail(at, "expected an array of {bytes, GBps}, got " + got(j["memory_samples"]));
    p.memory_samples.clear();
    for (std::size_t i = 0; i < j["memory_samples"].size(); ++i) {
      const std::string where = child(at, i);
      const json& v = j["memory_samples"][i];
      require_object(v, where);
      check_keys(v, where, {"bytes", "GBps"});
      StreamSample m;
      m.bytes = read_int(required(v, where, "bytes"), child(where, "bytes"), 1, std::int64_t{1} << 50);
      m.bandwidth = read_bandwidth_GBps(required(v, where, "GBps"), child(where, "GBps"));
      p.memory_samples.push_back(m);
    }
  }
  if (j.contains("launch_overhead_us")) {
    p.launch_overhead = read_latency_us(j["launch_overhead_us"], child(path, "launch_overhead_us"));
  }
  if (j.contains("cache_half_life_ms")) {
    p.cache_half_life =
        Time::ms(read_positive(j["cache_half_life_ms"], child(path, "cache_half_life_ms"), kMaxCacheHalfLifeMs, "milliseconds"));
  }
  if (j.contains("sparse_speedup")) {
    p.sparse_speedup = read_positive(j["sparse_speedup"], child(path, "sparse_speedup"), kMaxSparseSpeedup, "a factor");
  }
  if (j.contains("link")) {
    const std::string at = child(path, "link");
    const json& l = j["link"];
    require_object(l, at);
    check_keys(l, at, {"latency_us", "bandwidth_GBps"});
    LinkProfile link;
    link.latency = read_latency_us(required(l, at, "latency_us"), child(at, "latency_us"));
    link.bandwidth = read_bandwidth_GBps(required(l, at, "bandwidth_GBps"), child(at, "bandwidth_GBps"));
    p.link = link;
  }
  if (j.contains("progress")) p.progress = read_named(j["progress"], child(path, "progress"), parse_comm_progress);
  if (j.contains("kernel_ns_per_element")) {
    const std::string at = child(path, "kernel_ns_per_element");
    require_object(j["kernel_ns_per_element"], at);
    const std::vector<std::string> keys = technique_kernel_keys();
    check_keys(j["kernel_ns_per_element"], at, keys);
    for (const auto& [name, value] : j["kernel_ns_per_element"].items())
      p.kernel_seconds_per_element[name] = read_positive(value, child(at, name), 1e9, "nanoseconds per element") * 1e-9;
  }
  if (j.contains("sparse_gemm_TFLOPs")) {
    const std::string at = child(path, "sparse_gemm_TFLOPs");
    require_object(j["sparse_gemm_TFLOPs"], at);
    check_keys(j["sparse_gemm_TFLOPs"], at, {"block", "2:4"});
    for (const auto& [name, value] : j["sparse_gemm_TFLOPs"].items())
      p.sparse_gemm_rate[name] = read_positive(value, child(at, name), kMaxTFLOPs, "TFLOP/s of the non-zero work") * 1e12;
  }
  if (j.contains("provenance")) {
    const std::string at = child(path, "provenance");
    const json& v = j["provenance"];
    require_object(v, at);
    check_keys(v, at, {"machine", "date", "git_revision", "ranks", "tool", "cores"});
    Provenance prov;
    if (v.contains("machine")) prov.machine = read_string(v["machine"], child(at, "machine"));
    if (v.contains("date")) prov.date = read_string(v["date"], child(at, "date"));
    if (v.contains("git_revision")) prov.git_revision = read_string(v["git_revision"], child(at, "git_revision"));
    if (v.contains("ranks")) prov.ranks = static_cast<int>(read_int(v["ranks"], child(at, "ranks"), 1, kMaxCount));
    if (v.contains("tool")) prov.tool = read_string(v["tool"], child(at, "tool"));
    if (v.contains("cores")) prov.cores = static_cast<int>(read_int(v["cores"], child(at, "cores"), 1, kMaxCount));
    p.provenance = prov;
  }
  return p;
}

json profile_to_json(const MachineProfile& p) {
  json rates = json::object();
  for (const auto& [t, r] : p.gemm_rate) rates[dtype_name(t)] = r / 1e12;
  json j = {{"device", p.device},
            {"gemm_TFLOPs", rates},
            {"memory_bandwidth_GBps", p.memory_bandwidth / GBps},
            {"launch_overhead_us", p.launch_overhead.microseconds()},
            {"sparse_speedup", p.sparse_speedup}};
  if (!p.gemm_samples.empty()) {
    json samples = json::array();
    for (const auto& s : p.gemm_samples) {
      samples.push_back({{"m", s.m}, {"n", s.n}, {"k", s.k}, {"dtype", dtype_name(s.dtype)}, {"TFLOPs", s.rate / 1e12}});
    }
    j["gemm_samples"] = samples;
  }
  if (!p.memory_samples.empty()) {
    json samples = json::array();
    for (const auto& m : p.memory_samples) samples.push_back({{"bytes", m.bytes}, {"GBps", m.bandwidth / GBps}});
    j["memory_samples"] = samples;
  }
  if (p.cache_half_life > Time{}) j["cache_half_life_ms"] = p.cache_half_life.seconds() * 1e3;
  if (p.link) j["link"] = {{"latency_us", p.link->latency.microseconds()}, {"bandwidth_GBps", p.link->bandwidth / GBps}};
  j["progress"] = to_string(p.progress);
  if (!p.kernel_seconds_per_element.empty()) {
    json k = json::object();
    for (const auto& [name, s] : p.kernel_seconds_per_element) k[name] = s * 1e9;
    j["kernel_ns_per_element"] = k;
  }
  if (!p.sparse_gemm_rate.empty()) {
    json g = json::object();
    for (const auto& [name, r] : p.sparse_gemm_rate) g[name] = r / 1e12;
    j["sparse_gemm_TFLOPs"] = g;
  }
  if (p.provenance) {
    j["provenance"] = {{"machine", p.provenance->machine}, {"date", p.provenance->date},
                       {"git_revision", p.provenance->git_revision}, {"ranks", p.provenance->ranks},
                       {"tool", p.provenance->tool}};
    if (p.provenance->cores > 0) j["provenance"]["cores"] = p.provenance->cores;
  }
  return j;
}

MachineProfile load_profile(const std::string& file, const MachineProfile& base, const DeviceSpec& device) {
  const json j = read_json_file(file, "profile");
  try {
    return profile_from_json(j, base, device, "");
  } catch (const ConfigError& e) {
    throw ConfigError(file + ":" + e.path(), e.message());
  }
}

void save_profile(const MachineProfile& p, const std::string& file) {
  namespace fs = std::filesystem;
  const fs::path target(file);
  std::error_code ec;
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const fs::path tmp = target.string() + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out) throw Error("cannot write " + tmp.string());
    out << profile_to_json(p).dump(2) << "\n";
    if (!out) throw Error("cannot write " + tmp.string());
  }
  fs::rename(tmp, target, ec);
  if (ec) throw Error("cannot rename " + tmp.string() + " to " + file + ": " + ec.message());
}

std::int64_t speed_probe_dim(const std::vector<std::int64_t>& dims) {
  std::int64_t side = 0;
  for (std::int64_t d : dims)
    if (d <= kSpeedProbeMaxDim) side = std::max(side, d);
  return side;
}

std::optional<GemmSample> speed_probe_sample(const MachineProfile& p) {
  const auto square_fp32 = [](const GemmSample& s) { return s.dtype == DType::FP32 && s.m == s.n && s.n == s.k; };
  std::vector<std::int64_t> sides;
  for (const GemmSample& s : p.gemm_samples)
    if (square_fp32(s)) sides.push_back(s.m);
  const std::int64_t side = speed_probe_dim(sides);
  for (const GemmSample& s : p.gemm_samples)
    if (square_fp32(s) && s.m == side) return s;
  return std::nullopt;
}

MachineProfile with_gemm_speed(MachineProfile p, double factor) {
  if (!(factor > 0) || !std::isfinite(factor)) throw InvalidArgument("with_gemm_speed: the factor must be positive and finite");
  for (auto& [dtype, rate] : p.gemm_rate) rate *= factor;
  for (GemmSample& s : p.gemm_samples) s.rate *= factor;
  for (auto& [kind, rate] : p.sparse_gemm_rate) rate *= factor;
  return p;
}

}  // namespace twinbed
