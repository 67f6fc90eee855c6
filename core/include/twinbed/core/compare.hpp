// compare(): a simulated Report next to a measured one — the model's error per op kind, for the step,
// and per op — computed by ONE function in the core (../shared/DESIGN.md), so `twinbed compare` and any
// other caller read the same figures. Both reports come from report() on traces of the same Plan, so
// their op kinds and op names correspond; which backend made each does not matter.
//
// Definitions (error = 100 · (simulated − measured) / measured, in percent; 0 when measured ≤ 0):
//  - per op kind: the time per rank of that kind's spans (OpKindRow::total / world size), for every
//    kind the measured report has (in SpanKind order; simulated 0 when the simulation has none).
//  - step: the two step times.
//  - per op, for GEMMs, attention, memory-bound ops, collectives and messages (SendRecv): each op
//    name's mean span duration (OpRow::mean_s, over ranks and micro-batches) in both, for the names
//    both reports have (ordered by name), and the median |error| over them; a kind with no such op is
//    left out.
//
// Pure; O(op rows · log op rows).
#pragma once

#include <string>
#include <vector>

#include "twinbed/core/report.hpp"
#include "twinbed/core/trace.hpp"

namespace twinbed {

// 100 · (simulated − measured) / measured; 0 when measured <= 0.
double error_pct(double simulated, double measured);
// The median of `values` (the mean of the middle two for an even count); NaN when empty.
double median(std::vector<double> values);

struct KindComparison {
  SpanKind kind = SpanKind::Other;
  double measured_s = 0;    // per rank
  double simulated_s = 0;
  double error_pct = 0;
  bool operator==(const KindComparison&) const = default;
};

struct OpComparison {
  std::string name;
  double measured_s = 0;    // mean per span
  double simulated_s = 0;
  bool operator==(const OpComparison&) const = default;
};

struct KindOpsComparison {
  SpanKind kind = SpanKind::Other;
  double median_abs_error_pct = 0;
  std::vector<OpComparison> ops;  // by name
  bool operator==(const KindOpsComparison&) const = default;
};

struct Comparison {
  std::vector<KindComparison> kinds;
  double step_measured_s = 0;
  double step_simulated_s = 0;
  double step_error_pct = 0;
  std::vector<KindOpsComparison> per_op;  // Gemm, Attention, MemoryBound, Collective, SendRecv: those with ops
  bool operator==(const Comparison&) const = default;
};

// Throws InvalidArgument when the reports' world sizes differ (they cannot be of one Plan).
Comparison compare(const Report& simulated, const Report& measured);

}  // namespace twinbed
