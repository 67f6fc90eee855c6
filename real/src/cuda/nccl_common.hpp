// Private to real/src/cuda: what the NCCL collectives (nccl_collectives.cpp) and the CUDA Plan backend
// (cuda_backend.cpp) share — the job of ranks (MPI's when it runs, else this process alone), the NCCL
// communicator and group guards, and one rank's part of a schedule over ncclSend/ncclRecv. Needs CUDA and
// NCCL; built only where both are.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>
#if TWINBED_HAVE_MPI
#include <mpi.h>

#include "../mpi_gather.hpp"
#endif

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "device.hpp"
#include "device_kernels.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/schedule.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/cuda_check.hpp"
#include "twinbed/real/cuda_collectives.hpp"
#include "twinbed/real/mpi.hpp"

namespace twinbed::real::cuda_detail {

// ---- the job: MPI's ranks when MPI is running here, else this process alone ------------------------

#if TWINBED_HAVE_MPI
inline bool mpi_running() {
  int initialized = 0;
  MPI_CHECK(MPI_Initialized(&initialized));
  int finalized = 0;
  MPI_CHECK(MPI_Finalized(&finalized));
  return initialized && !finalized;
}

// Owns a communicator (freed without throwing).
struct OwnedComm {
  MPI_Comm comm = MPI_COMM_NULL;
  OwnedComm() = default;
  OwnedComm(const OwnedComm&) = delete;
  OwnedComm& operator=(const OwnedComm&) = delete;
  ~OwnedComm() {
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }
};
#endif

// The size of the job, known without communicating, so arguments are checked before anything collective.
inline int job_size() {
#if TWINBED_HAVE_MPI
  if (mpi_running()) {
    int size = 0;
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    return size;
  }
#endif
  return 1;
}

// The ranks of one measurement and the few host-side collectives it needs (all called by every rank in
// the same order). Over MPI it talks on a private duplicate of MPI_COMM_WORLD, so its messages can never
// match a caller's; alone, every collective is the identity.
class Job {
 public:
  Job() {
#if TWINBED_HAVE_MPI
    if (!mpi_running()) return;
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world_.comm));
    MPI_CHECK(MPI_Comm_rank(world_.comm, &rank_));
    MPI_CHECK(MPI_Comm_size(world_.comm, &size_));
    // The node-local rank picks the GPU, so that N nodes of G GPUs each work with N*G ranks in any order.
    OwnedComm node;
    MPI_CHECK(MPI_Comm_split_type(world_.comm, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node.comm));
    MPI_CHECK(MPI_Comm_rank(node.comm, &local_rank_));
#endif
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }

  void barrier() const {
#if TWINBED_HAVE_MPI
    if (world_.comm != MPI_COMM_NULL) MPI_CHECK(MPI_Barrier(world_.comm));
#endif
  }
  // Rank 0's `bytes` bytes at `data` to every rank.
  void broadcast_from_0(void* data, int bytes) const {
#if TWINBED_HAVE_MPI
    if (world_.comm != MPI_COMM_NULL) MPI_CHECK(MPI_Bcast(data, bytes, MPI_BYTE, 0, world_.comm));
#else
    (void)data;
    (void)bytes;
#endif
  }
  int min_over_ranks(int value) const {
    int out = value;
#if TWINBED_HAVE_MPI
    if (world_.comm != MPI_COMM_NULL) MPI_CHECK(MPI_Allreduce(&value, &out, 1, MPI_INT, MPI_MIN, world_.comm));
#endif
    return out;
  }
  std::int64_t sum_over_ranks(std::int64_t value) const {
    std::int64_t out = value;
#if TWINBED_HAVE_MPI
    if (world_.comm != MPI_COMM_NULL) MPI_CHECK(MPI_Allreduce(&value, &out, 1, MPI_INT64_T, MPI_SUM, world_.comm));
#endif
    return out;
  }
  std::int64_t max_over_ranks(std::int64_t value) const {
    std::int64_t out = value;
#if TWINBED_HAVE_MPI
    if (world_.comm != MPI_COMM_NULL) MPI_CHECK(MPI_Allreduce(&value, &out, 1, MPI_INT64_T, MPI_MAX, world_.comm));
#endif
    return out;
  }
  // Every rank's `bytes` bytes at `data`, concatenated in rank order, on rank 0; empty on the others.
  // Throws Error when the total exceeds what one MPI_Gatherv carries (2 GiB), on every rank alike.
  std::vector<char> gather_to_0(const void* data, std::int64_t bytes) const {
#if TWINBED_HAVE_MPI
    if (world_.comm != MPI_COMM_NULL) return detail::gather_bytes_to_0(world_.comm, data, bytes);
#endif
    const char* p = static_cast<const char*>(data);
    return std::vector<char>(p, p + bytes);
  }
  double max_over_ranks(double value) const {
    double out = value;
#if TWINBED_HAVE_MPI
    if (world_.comm != MPI_COMM_NULL) MPI_CHECK(MPI_Allreduce(&value, &out, 1, MPI_DOUBLE, MPI_MAX, world_.comm));
#endif
    return out;
  }

 private:
#if TWINBED_HAVE_MPI
  OwnedComm world_;
#endif
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
};

// ---- the NCCL communicator -------------------------------------------------------------------------

// Sets an environment variable for its lifetime and restores the previous state after; does nothing
// for an empty value. setenv is process-wide and not thread-safe: hence the header's threading rule.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (value.empty()) return;
    if (const char* old = std::getenv(name)) old_ = std::string(old);
    if (setenv(name, value.c_str(), 1) != 0) throw Error(std::string("setenv(") + name + ") failed");
    active_ = true;
  }
  ~ScopedEnv() {
    if (!active_) return;
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
  bool active_ = false;
};

// What rank 0 tells every rank before ncclCommInitRank: the id, or why it has none (so that a failing
// ncclGetUniqueId makes every rank throw instead of leaving the others waiting).
struct UniqueIdMessage {
  int ok = 0;
  ncclUniqueId id{};
  char error[256] = {};
};

// One communicator over the job's ranks, on the current device (set it first).
class NcclComm {
 public:
  NcclComm(const Job& job, const std::string& nccl_algo) {
    UniqueIdMessage message;
    if (job.rank() == 0) {
      try {
        NCCL_CHECK(ncclGetUniqueId(&message.id));
        message.ok = 1;
      } catch (const Error& e) {
        std::strncpy(message.error, e.what(), sizeof(message.error) - 1);
      }
    }
    job.broadcast_from_0(&message, static_cast<int>(sizeof(message)));
    if (!message.ok) throw Error(std::string("rank 0 could not create the NCCL id: ") + message.error);
    // NCCL reads NCCL_ALGO while it creates the communicator (its tuning model), so the variable is set
    // just around ncclCommInitRank and affects this communicator only.
    const ScopedEnv algo("NCCL_ALGO", nccl_algo);
    NCCL_CHECK(ncclCommInitRank(&comm_, job.size(), message.id, job.rank()));
  }
  // Takes ownership of a communicator made elsewhere (ncclCommSplit); nullptr (a rank in no group) is
  // an empty object.
  explicit NcclComm(ncclComm_t adopted) : comm_(adopted) {}
  // On unwinding a collective may be stuck waiting for a peer that threw, and ncclCommDestroy would
  // wait for it: ncclCommAbort does not. The normal path calls destroy() and sees its errors.
  ~NcclComm() {
    if (comm_ == nullptr) return;
    if (std::uncaught_exceptions() > uncaught_at_start_) {
      (void)ncclCommAbort(comm_);
    } else {
      (void)ncclCommDestroy(comm_);
    }
  }
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  ncclComm_t get() const { return comm_; }
  void destroy() {
    ncclComm_t comm = std::exchange(comm_, nullptr);
    NCCL_CHECK(ncclCommDestroy(comm));
  }

 private:
  ncclComm_t comm_ = nullptr;
  int uncaught_at_start_ = std::uncaught_exceptions();
};

// ncclGroupStart on construction; end() closes it and checks. Unwinding closes an open group unchecked.
class NcclGroup {
 public:
  NcclGroup() { NCCL_CHECK(ncclGroupStart()); }
  ~NcclGroup() {
    if (open_) (void)ncclGroupEnd();
  }
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;
  void end() {
    open_ = false;
    NCCL_CHECK(ncclGroupEnd());
  }

 private:
  bool open_ = true;
};


// ---- the schedule executor -----------------------------------------------------------------------------

// One transfer this rank takes part in (the shared lowering's RankTransfer), with its place in the
// scratch buffer when a receive does not land in place.
struct Part {
  RankTransfer t;
  std::int64_t scratch = 0;  // receives only, when !t.in_place: offset in the scratch buffer
};

struct RoundOps {
  std::vector<Part> recvs;  // in the round's transfer order
  std::vector<Part> sends;  // in the round's transfer order
};

// This rank's part of a schedule: the shared lowering (collective_data.hpp, lower_schedule), worked out
// once before any timing. Rounds in which this rank has nothing to do are dropped: there is no barrier
// between rounds, so an idle rank simply goes on.
//
// Each transfer is one ncclSend / ncclRecv. NCCL executes the point-to-point calls of a group that
// target the same peer in order, and both ends walk the same transfer list in the same order, so the
// k-th send from s to d meets the k-th receive at d from s: no packing into one message is needed.
// Transfers of zero floats (chunks smaller than a float) are dropped at both ends alike, since both
// derive the count from the same layout.
class GpuProgram {
 public:
  GpuProgram(const Schedule& schedule, int rank) {
    RankRounds lowered = lower_schedule(schedule, rank);
    layout_ = std::move(lowered.layout);
    for (const RankRound& round : lowered.rounds) {
      RoundOps ops;
      std::int64_t used = 0;
      for (const RankTransfer& t : round.recvs) {
        if (t.count == 0) continue;
        ops.recvs.push_back(Part{t, t.in_place ? 0 : used});
        if (!t.in_place) used += t.count;
      }
      for (const RankTransfer& t : round.sends)
        if (t.count > 0) ops.sends.push_back(Part{t, 0});
      if (ops.recvs.empty() && ops.sends.empty()) continue;
      scratch_floats_ = std::max(scratch_floats_, used);
      rounds_.push_back(std::move(ops));
    }
  }

  const std::vector<ChunkElements>& layout() const { return layout_; }
  std::int64_t scratch_floats() const { return scratch_floats_; }

  // Enqueues one execution of the whole schedule on `stream`: `workspace` is laid out as layout(),
  // `scratch` holds scratch_floats().
  void run(ncclComm_t comm, cudaStream_t stream, float* workspace, float* scratch) const {
    for (const RoundOps& round : rounds_) {
      // Step 1: this rank's receives and sends of the round, as one group. Sends read the round-start
      // data: nothing in the group writes a chunk that is sent in it (RankTransfer::in_place).
      NcclGroup group;
      for (const Part& r : round.recvs) {
        float* into = r.t.in_place ? workspace + r.t.offset : scratch + r.scratch;
        NCCL_CHECK(ncclRecv(into, static_cast<std::size_t>(r.t.count), ncclFloat, r.t.peer, comm, stream));
      }
      for (const Part& s : round.sends)
        NCCL_CHECK(ncclSend(workspace + s.t.offset, static_cast<std::size_t>(s.t.count), ncclFloat, s.t.peer, comm,
                            stream));
      group.end();
      // Step 2: apply what came into scratch, after the group on the same stream: reduce = add into this
      // rank's copy, else overwrite it.
      for (const Part& r : round.recvs) {
        if (r.t.in_place) continue;
        if (r.t.reduce) {
          CUDA_CHECK(cuda_kernels::add_f32(workspace + r.t.offset, scratch + r.scratch, r.t.count, stream));
        } else {
          CUDA_CHECK(cudaMemcpyAsync(workspace + r.t.offset, scratch + r.scratch,
                                     static_cast<std::size_t>(r.t.count) * sizeof(float), cudaMemcpyDeviceToDevice,
                                     stream));
        }
      }
    }
  }

 private:
  std::vector<ChunkElements> layout_;
  std::vector<RoundOps> rounds_;
  std::int64_t scratch_floats_ = 0;
};


// Every rank agrees whether the job can run: Unavailable on all ranks when any rank lacks a GPU.
// Returns the device count of this rank.
inline int agree_on_devices(const Job& job) {
  const std::optional<std::string> reason = cuda_unavailable_reason();
  const int everyone_has_one = job.min_over_ranks(reason ? 0 : 1);
  if (reason) throw Unavailable(*reason);
  if (!everyone_has_one) throw Unavailable("no CUDA device: another rank of the job sees none");
  return cuda_detail::require_devices();
}

inline int world_rank() {
  int rank = 0;
#if TWINBED_HAVE_MPI
  if (mpi_running()) MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
#endif
  return rank;
}


}  // namespace twinbed::real::cuda_detail
