// report(): the figures people read, computed from a Trace by ONE function for both backends, so a
// simulated and a measured figure are always computed the same way.
//
// Definitions (per iteration; t0 = the earliest span start, the window is [t0, t0 + step_time]):
//  - step time: Trace::step_time.
//  - tokens/s = tokens per iteration / step time.
//  - achieved TFLOP/s per GPU = model FLOPs per iteration / step time / world size, where "model FLOPs"
//    are the Plan's model_flops: training_flops(model, B, Recompute::None) of the dense model, whatever
//    techniques do, so MFU stays comparable across techniques (recomputation is not useful work). MFU =
//    that / the device's dense peak in the model's dtype. Executed TFLOP/s counts the matmul FLOPs the
//    Plan executes instead (Plan::executed_flops: recomputation and technique ops included, work a
//    pass removed or sparsified not), so a pass that removes work shows as executed < model.
//  - Per rank, the window splits into three disjoint parts. Spans are classed by what they did, not
//    by their stream (tensor-parallel all-reduces may sit on the compute stream): communication spans
//    are SpanKind Collective and SendRecv, every other span is compute.
//      compute        time covered by a compute span;
//      exposed comm   time covered by a communication span and by no compute span: communication
//                     not overlapped by compute on the same rank;
//      bubble         time covered by no span at all: the rank waits (pipeline fill and drain,
//                     load imbalance).
//    compute + exposed comm + bubble = step time, so the idle fraction of the compute stream is
//    exposed comm + bubble (when communication sits on its own streams); with communication made free it is the bubble alone, which for 1F1B is
//    (p−1)/(m+p−1). The report's fractions are means over all ranks (stand-in ranks counted as the
//    ranks they stand for), as percentages of the step time in the printed summary.
//  - peak memory per rank: the largest MemorySample of the rank; it fits when ≤ the device memory.
//    Where a real backend measured it, the resident peak (trace.hpp) is reported beside it: the largest
//    over ranks, what the operating system saw rather than what the plan says.
//  - per op: every span of one op name and kind, over ranks and micro-batches (stand-ins counted as the
//    ranks they stand for): count, total and mean duration — what compare() (compare.hpp) matches
//    between backends. Not written to the results files (one row per op name: large for big plans).
//
// Cost: O(spans · log spans_per_rank + memory samples + world size). Pure; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "twinbed/core/device.hpp"
#include "twinbed/core/layout.hpp"
#include "twinbed/core/model.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/trace.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed {

// What a Trace cannot say by itself: the work the iteration was meant to do and the hardware limits.
struct ReportInputs {
  double model_flops = 0;        // one iteration, all ranks, without recomputation (MFU basis)
  double executed_flops = 0;     // one iteration, all ranks: the matmul FLOPs the Plan executes
  double tokens = 0;             // one iteration: global batch · sequence length
  FlopsPerSec peak_flops = 0;    // one device's dense peak in the model's dtype
  Bytes device_memory = 0;       // one device's memory capacity
  bool operator==(const ReportInputs&) const = default;
};

// The device's dense peak for `dtype`: BF16/FP16 tensor core, TF32, FP32 without tensor cores, FP8
// (a device without FP8 runs it at its BF16 rate, as FP8 weights are upcast).
FlopsPerSec peak_flops(const DeviceSpec& device, DType dtype);

// Inputs for a Plan's iteration: its model and executed FLOPs, global_batch·seq_len tokens, the device's
// peak in the model's dtype and its memory.
ReportInputs report_inputs(const Plan& plan, const DeviceSpec& device);

struct OpKindRow {
  SpanKind kind = SpanKind::Other;
  std::int64_t count = 0;        // spans over all ranks
  Time total;                    // span time summed over all ranks
  Time per_rank;                 // total / world size
  double flops = 0;              // summed over all ranks
  Bytes bytes = 0;               // summed over all ranks
  double share = 0;              // total / (sum of total over the kinds)
  bool operator==(const OpKindRow&) const = default;
};

struct OpRow {
  std::string name;              // the op's name (Trace::names)
  SpanKind kind = SpanKind::Other;
  std::int64_t count = 0;        // spans over all ranks
  Time total;                    // span time summed over all ranks
  double mean_s = 0;             // seconds per span: total / count
  bool operator==(const OpRow&) const = default;
};

struct RankSummary {
  int rank = 0;
  int recorded_as = 0;           // the rank whose spans stand for this one (itself when recorded)
  int stream_spans = 0;          // spans recorded for it
  Time compute;                  // the three parts of the step, see above
  Time exposed_communication;
  Time bubble;
  Time communication;            // all time covered by communication spans (overlapped or not)
  Bytes peak_memory = 0;
  bool fits = true;
  bool operator==(const RankSummary&) const = default;
};

struct Report {
  std::string backend;
  int world_size = 0;
  ReportInputs inputs;
  Time step_time;
  double tokens_per_s = 0;
  double tflops_per_gpu = 0;           // model FLOPs, 1e12 FLOP/s
  double executed_tflops_per_gpu = 0;  // the Plan's executed FLOPs
  double mfu = 0;                      // fraction, 0..1
  double compute_fraction = 0;         // means over ranks, fractions of the step
  double exposed_comm_fraction = 0;
  double bubble_fraction = 0;
  bool memory_recorded = false;        // whether the trace had memory samples
  Bytes peak_memory = 0;               // max over ranks
  int peak_memory_rank = 0;
  bool memory_fits = true;             // every rank's peak <= device memory
  bool resident_measured = false;      // whether the trace had resident peaks (trace.hpp)
  Bytes resident_peak = 0;             // max over ranks
  int resident_peak_rank = 0;
  std::vector<OpKindRow> op_kinds;     // in SpanKind order, kinds that occur
  std::vector<OpRow> ops;              // per (kind, name) that occurs, ordered by kind, then name
  std::vector<RankSummary> ranks;      // one per rank, 0..world_size-1
  bool operator==(const Report&) const = default;
};

// Throws InvalidArgument on a trace that breaks trace.hpp's contract (world_size < 1, a span's rank or
// name out of range, end < start, recorded_rank of the wrong size or naming an unrecorded-out-of-range
// rank) or a non-positive step time.
Report report(const Trace& trace, const ReportInputs& inputs);

// The one-screen summary both backends print (a few lines, no trailing blank line).
std::string format_summary(const Report& r);

}  // namespace twinbed
