#include "twinbed/core/compare.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "twinbed/core/error.hpp"

namespace twinbed {

double error_pct(double simulated, double measured) { return measured > 0 ? 100.0 * (simulated - measured) / measured : 0; }

double median(std::vector<double> values) {
  if (values.empty()) return NAN;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

Spread spread_of(const std::vector<double>& values) {
  if (values.empty()) return {NAN, NAN, NAN};
  const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  return {median(values), *lo, *hi};
}

namespace {

// Per kind: time per rank in seconds.
std::map<SpanKind, double> per_rank_by_kind(const Report& r) {
  std::map<SpanKind, double> out;
  for (const OpKindRow& k : r.op_kinds) out[k.kind] = k.total.seconds() / std::max(1, r.world_size);
  return out;
}

// The mean span duration of each op of `kind`, by name.
std::map<std::string, double> mean_by_name(const Report& r, SpanKind kind) {
  std::map<std::string, double> out;
  for (const OpRow& o : r.ops)
    if (o.kind == kind) out[o.name] = o.mean_s;
  return out;
}

}  // namespace

Comparison compare(const Report& simulated, const Report& measured) {
  if (simulated.world_size != measured.world_size)
    throw InvalidArgument("compare: the simulated report has " + std::to_string(simulated.world_size) +
                          " ranks and the measured one " + std::to_string(measured.world_size) +
                          ": they are not of one plan");
  Comparison c;
  const auto real_kinds = per_rank_by_kind(measured), sim_kinds = per_rank_by_kind(simulated);
  for (const auto& [kind, real_s] : real_kinds) {
    const auto it = sim_kinds.find(kind);
    const double sim_s = it == sim_kinds.end() ? 0 : it->second;
    c.kinds.push_back({kind, real_s, sim_s, error_pct(sim_s, real_s)});
  }
  c.step_measured_s = measured.step_time.seconds();
  c.step_simulated_s = simulated.step_time.seconds();
  c.step_error_pct = error_pct(c.step_simulated_s, c.step_measured_s);

  for (SpanKind kind : {SpanKind::Gemm, SpanKind::Attention, SpanKind::MemoryBound, SpanKind::Collective, SpanKind::SendRecv}) {
    const auto real_ops = mean_by_name(measured, kind), sim_ops = mean_by_name(simulated, kind);
    KindOpsComparison k;
    k.kind = kind;
    std::vector<double> errors;
    for (const auto& [name, real_s] : real_ops) {
      const auto it = sim_ops.find(name);
      if (it == sim_ops.end()) continue;
      errors.push_back(std::abs(error_pct(it->second, real_s)));
      k.ops.push_back({name, real_s, it->second});
    }
    if (errors.empty()) continue;
    k.median_abs_error_pct = median(errors);
    c.per_op.push_back(std::move(k));
  }
  return c;
}

RepeatedComparison compare_repeated(const Report& simulated, const std::vector<Report>& measured) {
  return compare_repeated(std::vector<Report>(measured.size(), simulated), measured);
}

RepeatedComparison compare_repeated(const std::vector<Report>& simulated, const std::vector<Report>& measured) {
  if (measured.empty()) throw InvalidArgument("compare_repeated: no measured run");
  if (simulated.size() != measured.size())
    throw InvalidArgument("compare_repeated: " + std::to_string(simulated.size()) + " simulations for " +
                          std::to_string(measured.size()) + " measured runs; give one per run");
  std::vector<Comparison> runs;
  for (std::size_t r = 0; r < measured.size(); ++r) runs.push_back(compare(simulated[r], measured[r]));
  RepeatedComparison out;
  out.runs = static_cast<int>(runs.size());
  const Comparison& first = runs.front();
  std::vector<std::map<SpanKind, double>> simulated_kinds;
  for (const Report& s : simulated) simulated_kinds.push_back(per_rank_by_kind(s));
  for (const KindComparison& k : first.kinds) {
    std::vector<double> times, simulated_times, errors;
    for (std::size_t r = 0; r < runs.size(); ++r) {
      const Comparison& c = runs[r];
      const auto it = std::find_if(c.kinds.begin(), c.kinds.end(), [&](const KindComparison& x) { return x.kind == k.kind; });
      const auto sim = simulated_kinds[r].find(k.kind);
      const double t = it == c.kinds.end() ? 0 : it->measured_s;
      const double s = sim == simulated_kinds[r].end() ? 0 : sim->second;
      times.push_back(t);
      simulated_times.push_back(s);
      errors.push_back(error_pct(s, t));
    }
    out.kinds.push_back({k.kind, spread_of(times), median(simulated_times), spread_of(errors)});
  }
  std::vector<double> steps, simulated_steps, step_errors;
  for (const Comparison& c : runs) {
    steps.push_back(c.step_measured_s);
    simulated_steps.push_back(c.step_simulated_s);
    step_errors.push_back(c.step_error_pct);
  }
  out.step_measured_s = spread_of(steps);
  out.step_simulated_s = median(simulated_steps);
  out.step_error_pct = spread_of(step_errors);
  for (const KindOpsComparison& k : first.per_op) {
    std::vector<double> medians;
    for (const Comparison& c : runs)
      for (const KindOpsComparison& x : c.per_op)
        if (x.kind == k.kind) medians.push_back(x.median_abs_error_pct);
    out.per_op.push_back({k.kind, spread_of(medians)});
  }
  return out;
}

TechniqueEffect technique_effect(const Report& simulated_without, const Report& simulated_with,
                                 const std::vector<Report>& measured_without, const std::vector<Report>& measured_with) {
  if (measured_with.empty() || measured_with.size() != measured_without.size())
    throw InvalidArgument("technique_effect: " + std::to_string(measured_with.size()) + " runs with the technique and " +
                          std::to_string(measured_without.size()) + " without; they must be paired, at least one");
  auto step = [](const Report& r) {
    if (r.step_time <= Time()) throw InvalidArgument("technique_effect: a report's step time is not positive");
    return r.step_time.seconds();
  };
  auto memory = [](const Report& with, const Report& without) {
    return without.peak_memory > 0 ? static_cast<double>(with.peak_memory) / static_cast<double>(without.peak_memory) : 0.0;
  };
  std::vector<double> steps, memories, residents;
  for (std::size_t i = 0; i < measured_with.size(); ++i) {
    const Report &with = measured_with[i], &without = measured_without[i];
    steps.push_back(step(with) / step(without));
    memories.push_back(memory(with, without));
    if (with.resident_measured && without.resident_measured && without.resident_peak > 0)
      residents.push_back(static_cast<double>(with.resident_peak) / static_cast<double>(without.resident_peak));
  }
  TechniqueEffect out;
  out.step.measured = spread_of(steps);
  out.step.simulated = step(simulated_with) / step(simulated_without);
  out.step.error_pct = error_pct(out.step.simulated, out.step.measured.median);
  out.peak_memory.measured = spread_of(memories);
  out.peak_memory.simulated = memory(simulated_with, simulated_without);
  out.peak_memory.error_pct = error_pct(out.peak_memory.simulated, out.peak_memory.measured.median);
  out.resident_memory.measured = spread_of(residents.size() == measured_with.size() ? residents : std::vector<double>{});
  out.resident_memory.simulated = out.peak_memory.simulated;
  out.resident_memory.error_pct = error_pct(out.resident_memory.simulated, out.resident_memory.measured.median);
  return out;
}

}  // namespace twinbed
