// Collectives measured on real CPU ranks over MPI, with their data checked, giving the same
// nccl-tests-style rows (CollectiveRow) as the simulator.
//
// Two ways to run a collective:
// - a registered schedule (ring, tree, rhd, direct, hierarchical: see collective_algorithms.hpp),
//   executed over MPI point-to-point exactly as the Schedule contract says: round by round, each rank
//   posting its receives (MPI_Irecv into scratch, or straight into the chunk when that is safe) and its
//   sends (MPI_Isend of the start-of-round data; transfers of one round to one peer packed into one
//   message), waiting for all of them (MPI_Waitall), then applying what came in (reduce = add, else
//   copy). There is no barrier between rounds: a rank goes on as soon as its own round is done.
// - "native": MPI's own collective (MPI_Allreduce in place, MPI_Reduce_scatter_block, MPI_Allgather,
//   MPI_Bcast, MPI_Reduce, MPI_Alltoall), with the same crafted inputs and checks.
//
// Data: float elements, crafted inputs and the expected result as collective_data.hpp says, including
// which sizes are accepted (S % 4 == 0; S % (4 * ranks) == 0 for reduce-scatter, all-gather and
// all-to-all).
//
// Costs of the schedule executor, per call: before timing, each rank walks every round once
// (Schedule::round returns all ranks' transfers, so O(ranks) work per round, O(ranks x rounds) in all;
// fine for the tens of ranks of one machine, to be revisited for thousands) and keeps its own
// transfers (O(own transfers) memory). Each rank's workspace holds every chunk of the schedule: the
// buffer for all-reduce, broadcast, reduce, reduce-scatter and all-gather, but ranks x the send buffer
// for all-to-all (n*n chunks).
//
// Every function here is collective over MPI_COMM_WORLD (an MpiSession must be alive): every rank
// calls it with the same arguments, and it communicates on a private duplicate of the world
// communicator. Argument errors are detected on every rank before any communication, so all ranks throw
// alike. Call them from the thread that created the MpiSession (MPI_THREAD_SINGLE). Without MPI in
// the build they throw Unavailable.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "twinbed/core/collective_table.hpp"
#include "twinbed/core/schedule.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed::real {

inline constexpr const char* kNativeAlgorithm = "native";

struct MeasureOptions {
  int warmup_iters = 5;  // untimed iterations before timing, >= 0
  int iters = 20;        // timed iterations, >= 1
  bool check = true;     // run one extra, untimed iteration on fresh inputs and count wrong elements
  bool operator==(const MeasureOptions&) const = default;
};

// The names measure_collectives accepts: the registry's algorithms, then "native".
std::vector<std::string> real_collective_algorithm_names();

// One size: a checked iteration first (when options.check: fresh inputs, run, count), then fresh
// inputs, warm-up iterations, and `iters` timed iterations between an MPI_Barrier and each rank's end,
// timed with MPI_Wtime. Timed iterations run back to back on the same buffers (as nccl-tests), so
// their data is not meaningful (an in-place all-reduce keeps growing it); only the checked iteration is.
//
// The row, identical on every rank: time_us = the maximum over ranks of the mean time per timed
// iteration; algbw/busbw from it (make_collective_row); algorithm = the schedule's algorithm name;
// wrong = the wrong floats of the checked iteration summed over ranks (nullopt without check).
//
// Throws InvalidArgument when the schedule's ranks differ from the world size, its chunks break the
// element rule, an element count exceeds INT_MAX, or the options are out of range; Error (MPI_CHECK)
// when MPI fails.
CollectiveRow measure_schedule(const Schedule& schedule, const MeasureOptions& options);

// The same for MPI's own collective for `request` (algorithm "native").
CollectiveRow measure_native(const CollectiveRequest& request, const MeasureOptions& options);

// One row per size, in order, for `op` with `algorithm` (a registered one, or "native") on all the
// ranks of MPI_COMM_WORLD. `root` is used by broadcast and reduce; `ranks_per_host` by hierarchical
// (0 = one host). Returns the same rows on every rank (rank 0 prints them).
//
// A row with *wrong > 0 means the collective produced wrong data: that is a failed run, and the caller
// (the CLI) must report it and exit non-zero; the rows are returned rather than thrown so that the
// table with its #wrong column can still be shown.
//
// Throws UnknownName (listing real_collective_algorithm_names()) for an unknown algorithm,
// InvalidArgument for a size the element rule rejects, an op the algorithm does not implement, or a
// bad root / ranks_per_host, before any size is run.
std::vector<CollectiveRow> measure_collectives(CollectiveOp op, const std::string& algorithm, std::vector<Bytes> sizes,
                                               int root, int ranks_per_host, const MeasureOptions& options);

}  // namespace twinbed::real
