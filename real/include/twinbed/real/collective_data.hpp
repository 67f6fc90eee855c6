// The data a real collective moves, and what it must look like afterwards: how a schedule's chunks
// become float elements, how a schedule becomes one rank's rounds of sends and receives (THE
// LOWERING), the crafted inputs, and the expected final state. Shared by every real executor (MPI
// point-to-point, MPI's own collectives, NCCL), and free of MPI and CUDA, so it is tested without a
// launcher or a GPU.
//
// Elements are 4-byte floats (the table's "float" type).
//
// THE ELEMENT RULE. A schedule splits bytes, not elements: its chunks may be any byte size (the core
// spreads remainders one byte at a time), so a chunk is generally not a whole number of floats. What
// must be whole is each *block* (see Chunk): the bytes of all chunks of block b must be a multiple of 4.
// Block b's floats are then dealt to its chunks in chunk-index order by byte position: the chunk whose
// byte range [start, end) within the block is the k-th of that block gets floats
// [start/4, end/4) (integer division), i.e. a float belongs to the chunk holding its last byte. Element
// counts therefore differ from byte counts by less than one float per chunk, and sum to exactly the
// block's floats.
// In terms of a request's `bytes` S (nccl-tests' convention, see CollectiveRequest): all-reduce,
// broadcast and reduce need S % 4 == 0 (any number of floats, divisible by the ranks or not);
// reduce-scatter, all-gather and all-to-all need S % (4 * ranks) == 0 (a whole number of floats per
// rank's block), as MPI_Reduce_scatter_block / MPI_Allgather / MPI_Alltoall do. Other sizes are an
// InvalidArgument. size_unit() is that rule, the one every executor and command uses: the CPU backend
// rounds a plan's size up to it, the collective sweeps align their sizes down to it, the NCCL and MPI
// executors check requests against it.
//
// CRAFTED INPUTS (as nccl-tests): rank r's float i of block b starts as input_value(r, b, i), a small
// positive integer, so every sum over ranks is an exact float whatever the order of additions, a
// missing or doubled contribution changes it, and a wrong block usually shows. Copies a rank does not
// hold at the start are filled with kPoison (negative, never a valid result).
#pragma once

#include <cstdint>
#include <vector>

#include "twinbed/core/schedule.hpp"

namespace twinbed::real {

inline constexpr float kPoison = -1.0f;

// A value in [1, 23]. Sums over up to 700,000 ranks stay exact in float (< 2^24).
float input_value(int rank, int block, std::int64_t index);

// Where one chunk's floats live: `count` floats of block `block` starting at float `first` of the
// block; `offset` is its position in a workspace that holds every chunk back to back.
struct ChunkElements {
  int block = 0;
  std::int64_t first = 0;
  std::int64_t count = 0;
  std::int64_t offset = 0;
  bool operator==(const ChunkElements&) const = default;
};

// The element rule above, for every chunk of `chunks` (in order; offsets are running sums).
// Throws InvalidArgument naming the block when a block's bytes are not a multiple of 4, or a chunk
// has negative bytes. O(chunks).
std::vector<ChunkElements> chunk_elements(const std::vector<Chunk>& chunks);

// The unit a request's bytes must be a multiple of: 4, or 4 * ranks for reduce-scatter, all-gather and
// all-to-all (ranks >= 1).
Bytes size_unit(CollectiveOp op, int ranks);
// `bytes` (>= 0) rounded up to a multiple of size_unit: the smallest accepted size that holds them.
Bytes round_up_to_unit(CollectiveOp op, int ranks, Bytes bytes);
// `bytes` rounded down to a multiple of size_unit, and at least one unit: the accepted size nearest
// below, as nccl-tests aligns a sweep's sizes.
Bytes round_down_to_unit(CollectiveOp op, int ranks, Bytes bytes);

// The request-level form of the rule, checked before any schedule is built (and by the `native`
// algorithm, which has no schedule): throws InvalidArgument unless S is a multiple of size_unit; or
// when ranks < 1 or bytes < 0.
void check_request_size(const CollectiveRequest& request);

// THE LOWERING. One transfer of a round that `rank` takes part in, in floats of a workspace laid out
// by chunk_elements: to `peer` (a send) or from it (a receive).
struct RankTransfer {
  int peer = 0;
  int chunk = 0;
  std::int64_t offset = 0;  // the chunk's first float in the workspace
  std::int64_t count = 0;   // the chunk's floats (0 for a chunk smaller than a float)
  bool reduce = false;      // receives: add into this rank's copy, else overwrite it
  // Receives: may land straight in the chunk, without scratch — it overwrites (a reduce needs the old
  // value), this rank does not send that chunk in the round (its send must read the round-start data),
  // and no other receive of the round writes the same chunk (their order would be undefined).
  bool in_place = false;
  bool operator==(const RankTransfer&) const = default;
};

// One round of the schedule as `rank` sees it: its receives and its sends, each in the order the round
// lists the transfers (both ends walk the same list, so the k-th send from s to d meets the k-th
// receive at d from s).
struct RankRound {
  std::vector<RankTransfer> recvs;
  std::vector<RankTransfer> sends;
  bool operator==(const RankRound&) const = default;
};

// `rank`'s part of `schedule`: the workspace layout (chunk_elements of its chunks) and every round of
// the schedule, in order (empty where the rank has nothing to do in a round). What an executor adds is
// its transport: how it packs transfers into messages, where scratch lives, how it waits.
// Throws InvalidArgument as chunk_elements does, and naming the round when a transfer names no valid
// rank or chunk (src or dst outside [0, ranks), src == dst, chunk outside the schedule's chunks).
// O(rounds · transfers per round), walking every rank's transfers: do it once, outside timed loops.
struct RankRounds {
  std::vector<ChunkElements> layout;
  std::vector<RankRound> rounds;
};
RankRounds lower_schedule(const Schedule& schedule, int rank);

// Whether `rank` holds block `block` before the collective (with its own contribution; others hold
// kPoison there), following the schedule semantics (see check_schedule): all-reduce, reduce and
// reduce-scatter: every rank every block; broadcast: the root; all-gather: rank b holds block b;
// all-to-all: rank s holds blocks s*n .. s*n+n-1.
bool holds_at_start(const CollectiveRequest& request, int rank, int block);

// Whether `rank`'s copy of block `block` is checked at the end: all-reduce, all-gather, broadcast: every
// rank; reduce: the root; reduce-scatter: rank b for block b; all-to-all: rank d for block s*n+d.
bool checked_at_end(const CollectiveRequest& request, int rank, int block);

// The value float `index` of block `block` must hold where checked_at_end: the sum over ranks of
// input_value (all-reduce, reduce, reduce-scatter), the root's input (broadcast), block b's owner's
// input (all-gather), the sender s's input (all-to-all). O(ranks) for the reducing ops.
float expected_value(const CollectiveRequest& request, int block, std::int64_t index);

// Fills `workspace` (every chunk back to back, as chunk_elements lays out) with `rank`'s start state.
void fill_inputs(const CollectiveRequest& request, int rank, const std::vector<ChunkElements>& layout,
                 std::vector<float>& workspace);

// Floats of the chunks checked_at_end for `rank` that differ from expected_value.
// O(floats + ranks x chunks) (input_value is periodic, so each chunk's expected sums are computed once).
// Throws InvalidArgument when the layout names a block the op does not have or overruns `workspace`.
std::int64_t count_wrong(const CollectiveRequest& request, int rank, const std::vector<ChunkElements>& layout,
                         const std::vector<float>& workspace);

}  // namespace twinbed::real
