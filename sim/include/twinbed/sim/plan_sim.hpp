// Simulating one training iteration of a Plan (core/plan.hpp) on a Topology.
//
// Discrete-event execution on a sim::Engine, following the Plan's execution semantics as the real
// backends do, through the rules core/plan_exec.hpp writes once: per rank a FIFO Compute stream and a
// FIFO Collective stream; asynchronous Send/Recv; an op starts when its dependencies are done and it
// heads its stream's queue.
//  - Compute ops take the compute model's time (compute_model.hpp) on the rank's device. A matmul
//    (GEMM, attention) that runs while NCCL collectives posted by its rank are in flight runs on the
//    SMs their CTAs leave (one CTA per channel of NCCL's chosen algorithm, holding its SM alone): the
//    compute model's time on sms − channels SMs (op_time_on_sms: its waves re-quantised over them),
//    channels capped at sms − 1, re-timed by its progress when they change. Where the device's GEMMs are
//    persistent kernels (Hopper), a GEMM's CTAs that find no SM start once SMs free up instead
//    (plan_sim.cpp, contended, with the sources). While a collective's data moves, NCCL's memory
//    traffic (3 bytes per byte on its link) leaves every compute op on the rank less memory bandwidth for
//    its memory roof, re-timed the same way. Devices without an SM count (CPU profiles) and collectives
//    NCCL's model does not time (explicit schedules) are unaffected.
//  - A Collective starts when every member of its communicator has reached it; each rank's span of it
//    starts where that rank posted it (the wait for the others is part of it, as the real backends
//    record it). Alone, it lasts what
//    the collective simulator (or NCCL's model, for "auto") gives for that schedule with every
//    communicator of the same kind running it at once on the topology (group_collectives.hpp), cached
//    per (op, group kind, bytes).
//  - A Send's message alone takes its solo time on the path (latency + bytes / bottleneck bandwidth:
//    what the flow model gives a lone flow). Its span lasts until it has arrived. The Send itself is
//    eager: what depends on it goes on at once.
//  - The whole step contends: collectives of different kinds and groups and messages that are in
//    flight at the same time and cross the same links share them (link_sharing.hpp: each is a fluid
//    over the links its schedule or path uses, max-min fair, re-rated whenever one starts or ends).
//    Where no link is over-subscribed, each takes exactly its alone time. With the "analytical"
//    network model, or free communication, nothing contends.
//  - Polled progress (the profile's CommProgress::Polled: MPI ranks that test their requests between
//    compute ops, as the CPU backend runs): a rank sees a message or collective finish — its span
//    ends, what waits on it is released — at its next poll, the end of the compute op running then; a
//    message above MPI's eager limit (4 KiB, Open MPI's shared memory) starts moving only at the
//    receiver's next poll (rendezvous). Independent progress (GPUs, the default): at once.
//  - Alloc/Free change the rank's live bytes at the time they run → Trace::memory. A program with a
//    planned arena (Program::arena, the zrdf pass) holds the arena's bytes from time 0, and its tensors
//    placed in the arena add nothing.
//
// Fidelity:
//  - Full: every rank is simulated.
//  - Representative: when the cluster is symmetric for this plan — every rank of a program sees the
//    same collective time on each of its communicators (checked by timing every group) and the same
//    message time to each of its peers — one rank per program (the lowest) is simulated and stands
//    for the others (Trace::recorded_rank); its collectives and messages carry, on the links, the
//    traffic of the ranks it stands for as well. Exact: equal to Full in every span of the recorded
//    ranks (up to floating-point rounding of shared rates where links are over-subscribed).
//    When the check fails, it falls back to Full (PlanSimStats says so).
//  - Coarse: Representative, and in addition each run of consecutive Compute ops on the Compute
//    stream with no other op between them in the program, where each op depends only on its
//    predecessor in the run (nothing else can start or wait in between), runs as one op of summed
//    duration, recorded as one span (named by, and carrying the index of, the run's first op). Step
//    time is unchanged by construction (the run's ops would have run back to back anyway; each keeps
//    the clock a single op keeps beside NCCL's CTAs and memory traffic, plan_sim.cpp's OpClock, the run
//    re-timed when they change during it, PlanSimStats::run_retimings); what is lost is per-kernel
//    spans, so per-op tables merge.
//    Ranks with polled progress are not merged (each op's end is a poll): Coarse is Representative there.
//
// Cost: O(simulated ranks · ops per program · log pending) events, plus the collective timings
// (each distinct (op, kind, bytes) once), plus the link sharing: O(links of an op) to start or end an
// op that meets nothing on its links, a re-rating of the ops connected to it otherwise. Not thread-safe; each call builds its own engine.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "twinbed/core/backend.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/topology.hpp"
#include "twinbed/core/trace.hpp"
#include "twinbed/sim/compute_model.hpp"

namespace twinbed::sim {

enum class Fidelity { Full, Representative, Coarse };
// "full", "representative", "coarse"; parse throws UnknownName listing them.
Fidelity parse_fidelity(const std::string& name);
std::string to_string(Fidelity f);
std::vector<std::string> fidelity_names();

struct PlanSimOptions {
  std::string network = "flow";                 // a name from network_models()
  Fidelity fidelity = Fidelity::Representative;
  std::string collective_algorithm = "auto";    // "auto" (what NCCL would run: time_group_collective) or a registry name
  int nccl_minor = kNcclOldestMinor;            // the NCCL release auto models, 2.<minor> (NcclFabric::nccl_minor)
  // Compute model per rank's device; unset: roofline from the topology's DeviceSpec with
  // default_efficiency() for its name.
  std::optional<ComputeProfile> profile;
  // Communication made free: collectives and messages take no time (tests of the pipeline schedule).
  bool free_communication = false;
  // Record spans (off: only step time and memory, for sweeps).
  bool record_spans = true;
  // Every rank on one machine of this many cores (compare's CPU ranks on this machine: the profile's
  // Provenance::cores), rank r bound to core r mod cores and scheduled on it as Linux does
  // (core_sharing.hpp): a rank holds its core from compute op to compute op until it waits for
  // communication or its slice is over, an op waits while its core is busy, then runs alone on it, and
  // a rank that waits for communication sees it finish only once it holds its core again. The
  // profile's times, measured with its provenance's ranks computing at once, are first made those of a
  // rank alone on a core: times shared_cores / ranks where the ranks were more than the cores. 0: each
  // rank computes on a device of its own. Needs every rank simulated (fidelity full or coarse:
  // InvalidArgument under representative).
  int shared_cores = 0;
};

// The options an experiment's "simulation" section and measured profile give (ConfigError at
// "/cluster/profile" for a bad profile file). `record_spans` false keeps step time and memory only.
PlanSimOptions plan_sim_options(const Experiment& experiment, const Topology& topology, bool record_spans = true);

// Counters of one run, for benchmarks and summaries.
struct PlanSimStats {
  Fidelity fidelity_used = Fidelity::Full;   // what actually ran (Representative may fall back)
  int simulated_ranks = 0;
  std::int64_t ops_executed = 0;             // after coarsening
  std::int64_t events = 0;                   // engine events
  int collective_timings = 0;                // distinct collective timings computed
  std::int64_t contended_ops = 0;            // GPU compute ops (not merged) started beside NCCL's CTAs
                                             // (matmuls) or memory traffic (any op)
  std::int64_t run_retimings = 0;            // Coarse: merged runs re-timed as NCCL's kernels came or went
  std::int64_t single_retimings = 0;         // GPU compute ops (not merged) re-timed as they came or went
  // The cache model (a profile's cache_half_life): bytes memory-bound ops read or wrote in memory
  // rather than in cache, and the time that added to them, summed over the simulated ranks.
  double cold_bytes = 0;
  Time cold_time;
  std::string fallback_reason;               // why Representative fell back to Full, else empty
};

// Runs one training iteration of `plan` on `topology` (ranks must match: InvalidArgument otherwise)
// and returns its Trace: spans of the recorded ranks ordered by (rank, start), memory samples, step
// time. Throws UnknownName for an unknown network or algorithm, Error on a deadlock (names the ops
// left waiting).
Trace simulate_plan(const Plan& plan, const Topology& topology, const PlanSimOptions& options);
Trace simulate_plan(const Plan& plan, const Topology& topology, const PlanSimOptions& options, PlanSimStats& stats);

// The simulator behind the Backend seam (core/backend.hpp). Borrows the topology; stats() are those
// of the last run().
class SimBackend : public Backend {
 public:
  SimBackend(const Topology& topology, PlanSimOptions options) : topology_(topology), options_(std::move(options)) {}
  std::string name() const override { return "sim"; }
  Trace run(const Plan& plan) override { return simulate_plan(plan, topology_, options_, stats_); }
  const PlanSimStats& stats() const { return stats_; }

 private:
  const Topology& topology_;
  PlanSimOptions options_;
  PlanSimStats stats_;
};

// Registers the simulator as "sim": a SimBackend on the setup's topology with plan_sim_options of its
// experiment (ConfigError at "/cluster/profile" for a bad profile file).
void add_sim_backend(BackendRegistry& registry);

}  // namespace twinbed::sim
