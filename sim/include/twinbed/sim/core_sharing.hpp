// Ranks that share one machine's cores: their compute ops take the cores in turn.
//
// `twinbed compare` runs its CPU ranks on this machine, often more ranks than cores (4 ranks on a 2-core
// VM). The plan simulator times each rank's compute op as if the rank had a core of its own; on such a
// machine a rank ready to compute may have to wait for one. A rank that waits for a message gives its
// core away: Open MPI yields the processor while waiting for communication once a node is
// oversubscribed (`ompi_info --param mpi all --level 9`, mpi_yield_when_idle: "will default to 1 when
// oversubscribing nodes"; twinbed's launcher passes --oversubscribe), so the cores go to the ranks that
// compute.
//
// Model: the cores are servers taken first come, first served. An op that asks for a core while one is
// free runs at once, alone on it, for its alone time; otherwise it waits until one frees, and then runs
// for its alone time. That is the scheduler when ops are about as long as its time slice or shorter:
// Linux's EEVDF scheduler (6.6 on; this VM runs 6.18) lets a task run for a base slice of 0.75 ms x
// (1 + log2 of the CPUs, at most 8), 1.5 ms on 2 CPUs (sysctl_sched_base_slice, scaled by
// get_update_sysctl_factor, kernel/sched/fair.c), and the ops of a small model take about a millisecond.
// Measured on this 2-core VM, 4 ranks (tp 2, pp 2, `experiments/cpu-tiny-4.json`, 2026-12-07): a rank's
// GEMMs took about their alone time, 85.7 ms per rank against 89.4 ms alone (the profile, measured with
// all 4 ranks computing at once, gave 178.8 ms at the half core each had then), not a shared core's; two
// ranks computed at once 69 % of the step, three or four 28 %.
// Approximations: an op much longer than a slice would in fact share its core with a waiting one (run in
// turns of a slice) rather than hold it; every op asks one core (the backend's ranks compute on one
// thread); the memory bandwidth the cores share is not a separate resource.
// Not thread-safe; borrows the engine, which must outlive it.
#pragma once

#include <deque>
#include <functional>

#include "twinbed/sim/engine.hpp"

namespace twinbed::sim {

class CoreSharing {
 public:
  // Called when the op ends, with the time it got its core.
  using Done = std::function<void(Time started)>;

  // cores >= 1 (InvalidArgument otherwise).
  CoreSharing(Engine& engine, int cores);

  // Asks, at the engine's now, for a core for an op that alone on it takes `alone`; `done` runs as an
  // engine event when the op has ended.
  void start(Time alone, Done done);

  int running() const { return running_; }
  int waiting() const { return static_cast<int>(waiting_.size()); }

 private:
  struct Op {
    Time alone;
    Done done;
  };
  void run(Op op);  // on a free core, from now

  Engine& engine_;
  int cores_;
  int running_ = 0;
  std::deque<Op> waiting_;
};

}  // namespace twinbed::sim
