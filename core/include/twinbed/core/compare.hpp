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

// ---- repeated measurements ------------------------------------------------------------------------
// One measured run is one sample of a noisy machine: the same Plan measured again gives other times.
// compare_repeated sets the simulation beside several measured runs of it, so that a model error can be
// told from run-to-run noise: every figure as the median and range (min, max) over the runs.

struct Spread {
  double median = 0, min = 0, max = 0;
  bool operator==(const Spread&) const = default;
};
// Median (as median()) and range of `values`; all NaN when empty.
Spread spread_of(const std::vector<double>& values);

struct RepeatedKind {
  SpanKind kind = SpanKind::Other;
  Spread measured_s;        // per rank
  double simulated_s = 0;   // the median over the runs' simulations, where each run has its own
  Spread error_pct;         // of each run's comparison
  bool operator==(const RepeatedKind&) const = default;
};

struct RepeatedOps {
  SpanKind kind = SpanKind::Other;
  Spread median_abs_error_pct;  // each run's median |error| over the kind's ops
  bool operator==(const RepeatedOps&) const = default;
};

struct RepeatedComparison {
  int runs = 0;
  std::vector<RepeatedKind> kinds;       // the kinds of the first run's comparison, in its order
  Spread step_measured_s;
  double step_simulated_s = 0;           // likewise a median
  Spread step_error_pct;
  std::vector<RepeatedOps> per_op;       // likewise
  bool operator==(const RepeatedComparison&) const = default;
};

// compare(simulated, run) for every run, summarised. A kind missing from a run counts as 0 s there.
// Throws InvalidArgument when `measured` is empty or a world size differs.
RepeatedComparison compare_repeated(const Report& simulated, const std::vector<Report>& measured);
// The same with a simulation of its own for each run (simulated[r] for measured[r]: the machine's speed
// as measured beside that run, say); the simulated figures are then the medians over the runs'
// simulations. Throws InvalidArgument also when the two differ in length.
RepeatedComparison compare_repeated(const std::vector<Report>& simulated, const std::vector<Report>& measured);

// ---- a technique's effect -------------------------------------------------------------------------
// What a technique changes is read as a ratio, with / without it, of the same experiment; a model that is
// off by a constant factor on both plans still predicts the ratio. technique_effect sets the simulated
// ratio beside the measured ones, runs paired in order (run i with the technique against run i without
// it, measured back to back, so slow drift of the machine cancels).

struct RatioComparison {
  Spread measured;         // over the paired runs
  double simulated = 0;
  double error_pct = 0;    // of the simulated ratio against the measured median
  bool operator==(const RatioComparison&) const = default;
};

struct TechniqueEffect {
  RatioComparison step;         // step time with / without
  RatioComparison peak_memory;  // peak memory with / without (0s when a report recorded no memory)
  // The measured resident peaks' ratio (report.hpp: what the system saw, not the plan) against the same
  // simulated peak-memory ratio; measured NaN when a run has no resident peak.
  RatioComparison resident_memory;
  bool operator==(const TechniqueEffect&) const = default;
};

// Throws InvalidArgument when the measured lists are empty or of different lengths, or a step time is not
// positive.
TechniqueEffect technique_effect(const Report& simulated_without, const Report& simulated_with,
                                 const std::vector<Report>& measured_without, const std::vector<Report>& measured_with);

}  // namespace twinbed
