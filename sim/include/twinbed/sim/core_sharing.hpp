// Ranks that share one machine's cores, scheduled as the operating system does in small.
//
// `twinbed compare` runs its CPU ranks on this machine, often more ranks than cores (4 ranks on a 2-core
// VM). The plan simulator times each rank's compute op as if the rank had a core of its own; on such a
// machine a rank ready to compute may have to wait for one, and a rank waiting in MPI for a message or
// a collective needs a core again to see it finish.
//
// Model: every rank is bound to a core, rank r to core r mod cores, as twinbed's launcher binds them
// (real/src/cpu/launch.cpp: mpirun --map-by hwthread --bind-to hwthread:overload-allowed). A core is a
// server its ranks hold in turn, handed on first come, first served.
//   - A rank that computes holds its core from op to op: a running process keeps its CPU until it
//     blocks or its time slice runs out. Linux's EEVDF scheduler (6.6 on; this VM runs 6.18) gives a
//     task a base slice of 0.75 ms x (1 + log2 of the CPUs, at most 8), 1.5 ms on 2 CPUs
//     (sysctl_sched_base_slice, scaled by get_update_sysctl_factor, kernel/sched/fair.c): a rank that
//     has held its core that long while another waits gives it up at its next op and waits at the back.
//     An op, once it has its core, runs its alone time (ops of a small model take about a millisecond;
//     one much longer than a slice would in fact be cut into slices).
//   - A rank that waits for communication gives its core away: Open MPI yields the processor while
//     waiting once a node is oversubscribed (`ompi_info --param mpi all --level 9`,
//     mpi_yield_when_idle: "will default to 1 when oversubscribing nodes"; the launcher passes
//     --oversubscribe). When what it waits for has finished, it sees that only once it holds its core
//     again, so its wait ends then: a TP all-reduce whose partner is off its core lasts until the
//     ops of the rank that holds it let the partner run.
// Measured on this 2-core VM, 4 ranks (tp 2, pp 2, `experiments/cpu-tiny-4.json`, 2026-12-07): a
// rank's GEMMs took about their alone time, 85.7 ms per rank against 89.4 ms alone (the profile,
// measured with all 4 ranks computing at once, gave 178.8 ms at the half core each had then), not a
// shared core's; a rank just out of a GEMM went straight on to its next op while the others waited;
// a forward TP all-reduce of 40-60 us alone took up to 2 ms when the partner was off its core.
// Not modelled: the memory bandwidth the cores share; an op cut by a slice's end; ranks of other jobs.
// Not thread-safe; borrows the engine, which must outlive it.
#pragma once

#include <deque>
#include <functional>
#include <utility>
#include <vector>

#include "twinbed/sim/engine.hpp"

namespace twinbed::sim {

class CoreSharing {
 public:
  using Granted = std::function<void()>;

  // `ranks` ranks (0 .. ranks - 1) on `cores` cores, rank r bound to core r mod cores, with the
  // scheduler's `slice`; cores and ranks >= 1 and slice > 0 (InvalidArgument otherwise).
  CoreSharing(Engine& engine, int cores, int ranks, Time slice);

  // Rank `rank` needs its core, now; it may not ask again before `granted` has run. It keeps the core
  // if it holds it, unless it has held it for a slice or longer while another of the core's ranks
  // waits: then it hands it to that rank and waits at the back. `granted` runs once it holds it: inside
  // this call where it keeps it or finds it free, else as an engine event when it is handed over.
  void acquire(int rank, Granted granted);

  // Rank `rank` gives its core away, to the core's rank that has waited longest; nothing if it holds
  // none.
  void release(int rank);

  bool holds(int rank) const;
  int busy() const;     // cores held
  int waiting() const;  // ranks waiting for theirs

  // Linux's slice on a machine of `cores` CPUs (above).
  static Time linux_slice(int cores);

 private:
  struct Core {
    int holder = -1;  // the rank that holds it, -1 none
    Time since;       // when the holder got it
    std::deque<std::pair<int, Granted>> waiting;
  };
  Core& core_of(int rank);
  void take(Core& core, int rank);  // the free core, from now
  void hand_over(Core& core);       // the free core to its rank that has waited longest

  Engine& engine_;
  Time slice_;
  int ranks_;
  std::vector<Core> cores_;
};

}  // namespace twinbed::sim
