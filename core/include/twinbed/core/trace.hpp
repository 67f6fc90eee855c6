// Trace: what a backend hands back after running a Plan, the same shape for the simulator and the
// real backend. report() (core/report.hpp) turns a Trace into the figures people read, with ONE
// function for both backends, and exporters write it as JSON, CSV and a Chrome/Perfetto timeline.
//
// Every backend records spans by the same rules (plan_exec.hpp), so one Plan gives the same set of
// spans — the same ops on the same streams — whichever backend ran it.
//
// Ranks that are provably identical (same program, same timings on a symmetric cluster) may be
// recorded once: `recorded_rank[r]` names the rank whose spans stand for rank r.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "twinbed/core/units.hpp"

namespace twinbed {

// What an op did, for grouping in reports. Compute ops say what they computed (gemm, attention,
// memory-bound); communication ops say how they communicated.
enum class SpanKind : std::uint8_t { Gemm, Attention, MemoryBound, Optimizer, Collective, SendRecv, Other };
std::string to_string(SpanKind k);

// The stream an op ran on. Ops on one stream of one rank never overlap; ops on different streams may.
enum class StreamKind : std::uint8_t { Compute, Collective, P2P };
std::string to_string(StreamKind s);

struct Span {
  int rank = 0;
  StreamKind stream = StreamKind::Compute;
  SpanKind kind = SpanKind::Other;
  std::uint32_t name = 0;        // index into Trace::names ("l3.fc1_fwd", "dp.bucket2")
  std::int32_t op = -1;          // the op it ran: an index into Plan::program(rank).ops (for a run of
                                 // merged ops, its first); -1 when not from a Plan
  Time start;
  Time end;
  std::int32_t micro_batch = -1; // -1 when not tied to one
  Bytes bytes = 0;               // communicated bytes (communication spans)
  double flops = 0;              // computed FLOPs (compute spans)
  bool operator==(const Span&) const = default;
};

// Bytes allocated on a rank at a time (after the allocation or free at that time).
struct MemorySample {
  int rank = 0;
  Time time;
  Bytes bytes = 0;
  bool operator==(const MemorySample&) const = default;
};

struct Trace {
  std::string backend;                 // the backend's name(): "sim", "real-cpu" or "real-cuda"
  int world_size = 0;
  std::vector<int> recorded_rank;      // per rank: the rank whose spans stand for it (itself if recorded)
  std::vector<std::string> names;      // span names, indexed by Span::name
  std::vector<Span> spans;             // ordered by (rank, start); see span_before in plan_exec.hpp
  std::vector<MemorySample> memory;    // ordered by (rank, time)
  // Per rank, when a real backend measured it (else empty): the most memory the rank's process held
  // while it ran the plan's first iteration, above what it held before it — measured by the operating
  // system (the CPU backend: the resident set's high-water mark) or the allocator (the CUDA backend: the
  // device memory pool's high-water mark, plus the arena and resident tensors), not taken from the plan,
  // so it can disagree with the memory samples: allocator granularity, whole pages, the kernels' scratch.
  std::vector<Bytes> resident_peak;
  Time step_time;                      // one training iteration: first op start to last op end
  bool operator==(const Trace&) const = default;
};

}  // namespace twinbed
