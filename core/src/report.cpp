#include "twinbed/core/report.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <utility>

#include "twinbed/core/error.hpp"

namespace twinbed {

namespace {

using Interval = std::pair<std::int64_t, std::int64_t>;  // [start, end) in picoseconds

// Sorts, clips to [lo, hi) and merges overlapping or touching intervals.
std::vector<Interval> merged(std::vector<Interval> v, std::int64_t lo, std::int64_t hi) {
  std::sort(v.begin(), v.end());
  std::vector<Interval> out;
  for (auto [s, e] : v) {
    s = std::max(s, lo);
    e = std::min(e, hi);
    if (e <= s) continue;
    if (!out.empty() && s <= out.back().second) out.back().second = std::max(out.back().second, e);
    else out.emplace_back(s, e);
  }
  return out;
}

std::int64_t measure(const std::vector<Interval>& v) {
  std::int64_t sum = 0;
  for (const auto& [s, e] : v) sum += e - s;
  return sum;
}

// Measure of the union of two merged lists.
std::int64_t union_measure(const std::vector<Interval>& a, const std::vector<Interval>& b) {
  std::vector<Interval> all(a);
  all.insert(all.end(), b.begin(), b.end());
  return measure(merged(std::move(all), INT64_MIN, INT64_MAX));
}

constexpr std::size_t kSpanKinds = static_cast<std::size_t>(SpanKind::Other) + 1;

std::string human_bytes(Bytes b) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(b) / static_cast<double>(GiB));
  return buf;
}

std::string human_time(Time t) {
  char buf[64];
  const double s = t.seconds();
  if (s >= 1) std::snprintf(buf, sizeof buf, "%.3f s", s);
  else if (s >= 1e-3) std::snprintf(buf, sizeof buf, "%.3f ms", s * 1e3);
  else std::snprintf(buf, sizeof buf, "%.3f us", s * 1e6);
  return buf;
}

}  // namespace

FlopsPerSec peak_flops(const DeviceSpec& device, DType dtype) {
  switch (dtype) {
    case DType::FP32: return device.peak_fp32;
    case DType::TF32: return device.peak_tf32;
    case DType::BF16:
    case DType::FP16: return device.peak_bf16;
    case DType::FP8: return device.peak_fp8 > 0 ? device.peak_fp8 : device.peak_bf16;
  }
  return device.peak_bf16;
}

ReportInputs report_inputs(const Plan& plan, const DeviceSpec& device) {
  ReportInputs in;
  in.model_flops = plan.model_flops;
  in.executed_flops = plan.executed_flops();
  in.tokens = static_cast<double>(plan.layout.global_batch) * static_cast<double>(plan.model.seq_len);
  in.peak_flops = peak_flops(device, plan.model.dtype);
  in.device_memory = device.memory;
  return in;
}

Report report(const Trace& trace, const ReportInputs& inputs) {
  const int world = trace.world_size;
  if (world < 1) throw InvalidArgument("report: trace world_size must be >= 1, got " + std::to_string(world));
  if (!trace.recorded_rank.empty() && static_cast<int>(trace.recorded_rank.size()) != world) {
    throw InvalidArgument("report: recorded_rank has " + std::to_string(trace.recorded_rank.size()) +
                          " entries for a world of " + std::to_string(world));
  }
  const auto recorded = [&](int r) { return trace.recorded_rank.empty() ? r : trace.recorded_rank[static_cast<std::size_t>(r)]; };
  // How many ranks each recorded rank stands for: its spans count that many times.
  std::vector<std::int64_t> weight(static_cast<std::size_t>(world), 0);
  for (int r = 0; r < world; ++r) {
    const int rec = recorded(r);
    if (rec < 0 || rec >= world || recorded(rec) != rec) {
      throw InvalidArgument("report: rank " + std::to_string(r) + " stands in for rank " + std::to_string(rec) +
                            ", which is not a recorded rank");
    }
    ++weight[static_cast<std::size_t>(rec)];
  }

  std::int64_t t0 = INT64_MAX;
  std::int64_t t_end = INT64_MIN;
  for (const Span& s : trace.spans) {
    if (s.rank < 0 || s.rank >= world) throw InvalidArgument("report: a span's rank " + std::to_string(s.rank) + " is outside the world");
    if (s.end < s.start) throw InvalidArgument("report: a span ends before it starts on rank " + std::to_string(s.rank));
    if (!trace.names.empty() && s.name >= trace.names.size()) throw InvalidArgument("report: a span's name index is out of range");
    if (recorded(s.rank) != s.rank) {
      throw InvalidArgument("report: rank " + std::to_string(s.rank) + " has spans but is marked as a stand-in");
    }
    t0 = std::min(t0, s.start.picoseconds());
    t_end = std::max(t_end, s.end.picoseconds());
  }
  Time step = trace.step_time;
  if (step == Time{} && !trace.spans.empty()) step = Time::ps(t_end - t0);
  if (step <= Time{}) throw InvalidArgument("report: the step time must be positive (an empty trace?)");
  if (trace.spans.empty()) t0 = 0;
  const std::int64_t t1 = t0 + step.picoseconds();

  Report rep;
  rep.backend = trace.backend;
  rep.world_size = world;
  rep.inputs = inputs;
  rep.step_time = step;

  // Per recorded rank: stream intervals; per kind: weighted totals.
  std::vector<std::vector<Interval>> compute(static_cast<std::size_t>(world)), comm(static_cast<std::size_t>(world));
  std::vector<int> span_count(static_cast<std::size_t>(world), 0);
  std::array<OpKindRow, kSpanKinds> kinds{};
  // Per (name index, kind): dense when the trace names its ops (indices < names.size()), else a map.
  std::vector<OpRow> dense(trace.names.size() * kSpanKinds);
  std::map<std::pair<std::uint32_t, SpanKind>, OpRow> sparse;
  for (const Span& s : trace.spans) {
    const auto r = static_cast<std::size_t>(s.rank);
    const std::int64_t w = weight[r];
    // By what the span did, not by its stream: a plan may issue communication on the compute stream
    // (Megatron's tensor-parallel all-reduces), and it is still communication.
    const bool communicates = s.kind == SpanKind::Collective || s.kind == SpanKind::SendRecv;
    (communicates ? comm : compute)[r].emplace_back(s.start.picoseconds(), s.end.picoseconds());
    ++span_count[r];
    OpKindRow& k = kinds[static_cast<std::size_t>(s.kind)];
    k.kind = s.kind;
    k.count += w;
    k.total += (s.end - s.start) * w;
    k.flops += s.flops * static_cast<double>(w);
    k.bytes += s.bytes * w;
    OpRow& o = trace.names.empty() ? sparse[{s.name, s.kind}]
                                   : dense[static_cast<std::size_t>(s.name) * kSpanKinds + static_cast<std::size_t>(s.kind)];
    if (o.count == 0) {
      o.kind = s.kind;
      o.name = trace.names.empty() ? "op " + std::to_string(s.name) : trace.names[s.name];
    }
    o.count += w;
    o.total += (s.end - s.start) * w;
  }
  for (const auto& [key, o] : sparse) dense.push_back(o);
  for (OpRow& o : dense) {
    if (o.count == 0) continue;
    o.mean_s = o.total.seconds() / static_cast<double>(o.count);
    rep.ops.push_back(std::move(o));
  }
  std::sort(rep.ops.begin(), rep.ops.end(),
            [](const OpRow& a, const OpRow& b) { return std::tie(a.kind, a.name) < std::tie(b.kind, b.name); });
  std::int64_t all_kinds = 0;
  for (const OpKindRow& k : kinds) all_kinds += k.total.picoseconds();
  for (OpKindRow& k : kinds) {
    if (k.count == 0) continue;
    k.per_rank = Time::ps(k.total.picoseconds() / world);
    k.share = all_kinds > 0 ? static_cast<double>(k.total.picoseconds()) / static_cast<double>(all_kinds) : 0;
    rep.op_kinds.push_back(k);
  }

  // Memory peaks per recorded rank.
  std::vector<Bytes> peak(static_cast<std::size_t>(world), 0);
  for (const MemorySample& m : trace.memory) {
    if (m.rank < 0 || m.rank >= world) throw InvalidArgument("report: a memory sample's rank is outside the world");
    if (recorded(m.rank) != m.rank) {
      throw InvalidArgument("report: rank " + std::to_string(m.rank) + " has memory samples but is marked as a stand-in");
    }
    peak[static_cast<std::size_t>(m.rank)] = std::max(peak[static_cast<std::size_t>(m.rank)], m.bytes);
  }
  rep.memory_recorded = !trace.memory.empty();
  if (!trace.resident_peak.empty()) {
    if (trace.resident_peak.size() != static_cast<std::size_t>(world))
      throw InvalidArgument("report: the trace has " + std::to_string(trace.resident_peak.size()) +
                            " resident peaks for a world of " + std::to_string(world) + " ranks");
    rep.resident_measured = true;
    for (int r = 0; r < world; ++r)
      if (trace.resident_peak[static_cast<std::size_t>(r)] > rep.resident_peak) {
        rep.resident_peak = trace.resident_peak[static_cast<std::size_t>(r)];
        rep.resident_peak_rank = r;
      }
  }

  // The three-way split of each recorded rank's window.
  std::vector<RankSummary> per_recorded(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) {
    const auto i = static_cast<std::size_t>(r);
    if (recorded(r) != r) continue;
    const std::vector<Interval> c = merged(std::move(compute[i]), t0, t1);
    const std::vector<Interval> m = merged(std::move(comm[i]), t0, t1);
    const std::int64_t busy_compute = measure(c);
    const std::int64_t busy_any = union_measure(c, m);
    RankSummary& s = per_recorded[i];
    s.recorded_as = r;
    s.stream_spans = span_count[i];
    s.compute = Time::ps(busy_compute);
    s.exposed_communication = Time::ps(busy_any - busy_compute);
    s.bubble = Time::ps(step.picoseconds() - busy_any);
    s.communication = Time::ps(measure(m));
    s.peak_memory = peak[i];
    s.fits = inputs.device_memory <= 0 || peak[i] <= inputs.device_memory;
  }
  double sum_compute = 0, sum_exposed = 0, sum_bubble = 0;
  rep.ranks.reserve(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) {
    RankSummary s = per_recorded[static_cast<std::size_t>(recorded(r))];
    s.rank = r;
    sum_compute += static_cast<double>(s.compute.picoseconds());
    sum_exposed += static_cast<double>(s.exposed_communication.picoseconds());
    sum_bubble += static_cast<double>(s.bubble.picoseconds());
    if (s.peak_memory > rep.peak_memory) {
      rep.peak_memory = s.peak_memory;
      rep.peak_memory_rank = r;
    }
    rep.memory_fits = rep.memory_fits && s.fits;
    rep.ranks.push_back(s);
  }
  const double denom = static_cast<double>(step.picoseconds()) * world;
  rep.compute_fraction = sum_compute / denom;
  rep.exposed_comm_fraction = sum_exposed / denom;
  rep.bubble_fraction = sum_bubble / denom;

  const double seconds = step.seconds();
  rep.tokens_per_s = inputs.tokens / seconds;
  rep.tflops_per_gpu = inputs.model_flops / seconds / world / 1e12;
  rep.executed_tflops_per_gpu = inputs.executed_flops / seconds / world / 1e12;
  rep.mfu = inputs.peak_flops > 0 ? inputs.model_flops / seconds / world / inputs.peak_flops : 0;
  return rep;
}

std::string format_summary(const Report& r) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "step time        %s   (%d ranks, %s backend)\n", human_time(r.step_time).c_str(),
                r.world_size, r.backend.c_str());
  out += line;
  std::snprintf(line, sizeof line, "throughput       %.0f tokens/s\n", r.tokens_per_s);
  out += line;
  std::snprintf(line, sizeof line, "per GPU          %.1f TFLOP/s (model FLOPs), MFU %.1f%% of %.0f TFLOP/s peak; %.1f TFLOP/s executed\n",
                r.tflops_per_gpu, 100 * r.mfu, r.inputs.peak_flops / 1e12, r.executed_tflops_per_gpu);
  out += line;
  std::snprintf(line, sizeof line, "step breakdown   compute %.1f%%, exposed communication %.1f%%, bubble %.1f%%\n",
                100 * r.compute_fraction, 100 * r.exposed_comm_fraction, 100 * r.bubble_fraction);
  out += line;
  if (r.memory_recorded) {
    std::snprintf(line, sizeof line, "peak memory      %s on rank %d of %s per device: %s\n", human_bytes(r.peak_memory).c_str(),
                  r.peak_memory_rank, human_bytes(r.inputs.device_memory).c_str(),
                  r.memory_fits ? "fits" : "DOES NOT FIT");
  } else {
    std::snprintf(line, sizeof line, "peak memory      not recorded\n");
  }
  out += line;
  if (r.resident_measured) {
    std::snprintf(line, sizeof line, "resident peak    %s on rank %d (measured by the system, above the rank's memory before the plan)\n",
                  human_bytes(r.resident_peak).c_str(), r.resident_peak_rank);
    out += line;
  }
  out += "op kind          count/rank   time/rank   share\n";
  for (const OpKindRow& k : r.op_kinds) {
    std::snprintf(line, sizeof line, "  %-14s %10.1f  %10s  %5.1f%%\n", to_string(k.kind).c_str(),
                  static_cast<double>(k.count) / r.world_size, human_time(k.per_rank).c_str(), 100 * k.share);
    out += line;
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace twinbed
