// Collectives on GPUs over NCCL: the shared schedules over ncclSend/ncclRecv, and NCCL's own
// collectives as "native". The contract is in cuda_collectives.hpp; this file says why.
#include <cuda_runtime.h>
#include <nccl.h>
#if TWINBED_HAVE_MPI
#include <mpi.h>
#endif

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"
#include "device.hpp"
#include "device_kernels.hpp"
#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/cuda_check.hpp"
#include "twinbed/real/cuda_collectives.hpp"
#include "twinbed/real/mpi.hpp"

namespace twinbed::real {
namespace {

using cuda_detail::DeviceArray;
using cuda_detail::Event;
using cuda_detail::Stream;

// ---- the job: MPI's ranks when MPI is running here, else this process alone ------------------------

#if TWINBED_HAVE_MPI
bool mpi_running() {
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
int job_size() {
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

// ---- buffers laid out by chunk lists -----------------------------------------------------------------

std::int64_t floats_of(const std::vector<ChunkElements>& layout) {
  std::int64_t total = 0;
  for (const ChunkElements& c : layout) total = std::max(total, c.offset + c.count);
  return total;
}

// A buffer described by a ChunkElements list (so collective_data's fill and check apply), on the host
// and on the device.
struct LaidOut {
  std::vector<ChunkElements> layout;
  std::vector<float> host;
  DeviceArray<float> device;

  void allocate() { device = DeviceArray<float>(static_cast<std::size_t>(floats_of(layout))); }
  // host -> device, finished when it returns (fills are untimed; this keeps `host` free to refill).
  void upload(cudaStream_t stream) {
    if (host.size() != device.size()) throw Error("internal: host and device buffers differ in size");
    if (device.size() > 0)
      CUDA_CHECK(cudaMemcpyAsync(device.data(), host.data(), device.bytes(), cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  // device -> host after everything enqueued on `stream`.
  void download(cudaStream_t stream) {
    host.resize(device.size());
    if (device.size() > 0)
      CUDA_CHECK(cudaMemcpyAsync(host.data(), device.data(), device.bytes(), cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  void poison() { host.assign(static_cast<std::size_t>(floats_of(layout)), kPoison); }
};

std::vector<ChunkElements> blocks_layout(const std::vector<int>& blocks, std::int64_t floats_each) {
  std::vector<ChunkElements> out;
  for (std::size_t i = 0; i < blocks.size(); ++i)
    out.push_back({blocks[i], 0, floats_each, static_cast<std::int64_t>(i) * floats_each});
  return out;
}

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

// ---- timing and checking, shared by both kinds -------------------------------------------------------

struct Runner {
  std::function<void()> fill;                  // fresh inputs, on the device when it returns
  std::function<void()> run;                   // enqueue one iteration on the stream
  std::function<std::int64_t()> count_wrong;   // wait, copy the result back, count this rank's wrong floats
};

CollectiveRow measure_with(const CollectiveRequest& request, const std::string& algorithm, const Job& job,
                           cudaStream_t stream, const Runner& runner, const MeasureOptions& options) {
  std::optional<std::int64_t> wrong;
  if (options.check) {
    runner.fill();
    job.barrier();
    runner.run();
    wrong = job.sum_over_ranks(runner.count_wrong());
  }
  runner.fill();
  for (int i = 0; i < options.warmup_iters; ++i) runner.run();
  const Event start;
  const Event stop;
  // Start together: every rank's queue is empty when it leaves the barrier. Each rank times its own
  // stream; the slowest rank's mean is the collective's time.
  CUDA_CHECK(cudaStreamSynchronize(stream));
  job.barrier();
  CUDA_CHECK(cudaEventRecord(start.get(), stream));
  for (int i = 0; i < options.iters; ++i) runner.run();
  CUDA_CHECK(cudaEventRecord(stop.get(), stream));
  const double mean = cuda_detail::elapsed_seconds(start, stop) / options.iters;
  const double slowest = job.max_over_ranks(mean);
  CollectiveRow row =
      make_collective_row(request.op, request.ranks, request.bytes, Time::from_seconds(slowest), algorithm);
  row.wrong = wrong;
  return row;
}

CollectiveRow measure_schedule_cuda(const Schedule& schedule, const GpuProgram& program, const Job& job,
                                    const NcclComm& comm, cudaStream_t stream, const MeasureOptions& options) {
  const CollectiveRequest& request = schedule.request();
  const int rank = job.rank();
  LaidOut workspace{program.layout(), {}, {}};
  workspace.allocate();
  const DeviceArray<float> scratch(static_cast<std::size_t>(program.scratch_floats()));
  Runner runner;
  runner.fill = [&] {
    fill_inputs(request, rank, workspace.layout, workspace.host);
    workspace.upload(stream);
  };
  runner.run = [&] { program.run(comm.get(), stream, workspace.device.data(), scratch.data()); };
  runner.count_wrong = [&] {
    workspace.download(stream);
    return count_wrong(request, rank, workspace.layout, workspace.host);
  };
  return measure_with(request, schedule.algorithm(), job, stream, runner, options);
}

// ---- NCCL's own collectives ----------------------------------------------------------------------------

CollectiveRow measure_native_cuda(const CollectiveRequest& req, const Job& job, const NcclComm& comm,
                                  cudaStream_t stream, const MeasureOptions& options) {
  const int n = req.ranks;
  const int me = job.rank();
  const std::int64_t floats = req.bytes / 4;
  const std::int64_t block = floats / n;  // per-rank block of reduce-scatter, all-gather, all-to-all
  const auto count = static_cast<std::size_t>(floats);
  const auto block_count = static_cast<std::size_t>(block);
  std::vector<int> all_blocks(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) all_blocks[static_cast<std::size_t>(i)] = i;
  ncclComm_t c = comm.get();

  // The result lands in `recv`, which starts poisoned unless the op works in place; `send` holds the
  // inputs, filled through a request whose op marks every send block as held at the start (all-reduce
  // for the reduced data), as the CPU backend does.
  LaidOut send;
  LaidOut recv;
  bool in_place = false;
  CollectiveOp send_as = req.op;
  std::function<void(float*, float*)> call;  // (send, recv) device pointers; not called for 0 floats
  switch (req.op) {
    case CollectiveOp::AllReduce:
      in_place = true;
      recv.layout = blocks_layout({0}, floats);
      call = [=](float*, float* r) { NCCL_CHECK(ncclAllReduce(r, r, count, ncclFloat, ncclSum, c, stream)); };
      break;
    case CollectiveOp::Broadcast:
      in_place = true;
      recv.layout = blocks_layout({0}, floats);
      call = [=, root = req.root](float*, float* r) {
        NCCL_CHECK(ncclBroadcast(r, r, count, ncclFloat, root, c, stream));
      };
      break;
    case CollectiveOp::Reduce:
      send.layout = blocks_layout({0}, floats);
      recv.layout = send.layout;
      send_as = CollectiveOp::AllReduce;
      call = [=, root = req.root](float* s, float* r) {
        NCCL_CHECK(ncclReduce(s, r, count, ncclFloat, ncclSum, root, c, stream));
      };
      break;
    case CollectiveOp::ReduceScatter:
      send.layout = blocks_layout(all_blocks, block);
      recv.layout = blocks_layout({me}, block);
      call = [=](float* s, float* r) {
        NCCL_CHECK(ncclReduceScatter(s, r, block_count, ncclFloat, ncclSum, c, stream));
      };
      break;
    case CollectiveOp::AllGather:
      send.layout = blocks_layout({me}, block);
      recv.layout = blocks_layout(all_blocks, block);
      call = [=](float* s, float* r) { NCCL_CHECK(ncclAllGather(s, r, block_count, ncclFloat, c, stream)); };
      break;
    case CollectiveOp::AllToAll: {
      std::vector<int> sent(static_cast<std::size_t>(n));
      std::vector<int> received(static_cast<std::size_t>(n));
      for (int p = 0; p < n; ++p) {
        sent[static_cast<std::size_t>(p)] = me * n + p;      // block me*n+p goes to rank p
        received[static_cast<std::size_t>(p)] = p * n + me;  // block p*n+me comes from rank p
      }
      send.layout = blocks_layout(sent, block);
      recv.layout = blocks_layout(received, block);
      // NCCL has no all-to-all call: one group of a send and a receive per peer (itself included).
      call = [=](float* s, float* r) {
        NcclGroup group;
        for (int p = 0; p < n; ++p) {
          const std::size_t at = static_cast<std::size_t>(p) * block_count;
          NCCL_CHECK(ncclSend(s + at, block_count, ncclFloat, p, c, stream));
          NCCL_CHECK(ncclRecv(r + at, block_count, ncclFloat, p, c, stream));
        }
        group.end();
      };
      break;
    }
  }
  send.allocate();
  recv.allocate();

  Runner runner;
  runner.fill = [&] {
    if (in_place) {
      fill_inputs(req, me, recv.layout, recv.host);
    } else {
      CollectiveRequest input = req;
      input.op = send_as;
      fill_inputs(input, me, send.layout, send.host);
      send.upload(stream);
      recv.poison();
    }
    recv.upload(stream);
  };
  // Every rank has the same float count, so all of them skip an empty collective alike.
  runner.run = [&] {
    if (floats > 0) call(send.device.data(), recv.device.data());
  };
  runner.count_wrong = [&] {
    recv.download(stream);
    return count_wrong(req, me, recv.layout, recv.host);
  };
  return measure_with(req, kNativeAlgorithm, job, stream, runner, options);
}

// ---- arguments ---------------------------------------------------------------------------------------

void validate_options(const CudaMeasureOptions& options, bool native) {
  if (options.iters < 1) throw InvalidArgument("iters must be >= 1 (got " + std::to_string(options.iters) + ")");
  if (options.warmup_iters < 0)
    throw InvalidArgument("warmup_iters must be >= 0 (got " + std::to_string(options.warmup_iters) + ")");
  (void)cuda_detail::canonical_nccl_algo(options.nccl_algo);  // throws UnknownName
  if (!native && !options.nccl_algo.empty())
    throw InvalidArgument("nccl_algo (NCCL_ALGO=" + options.nccl_algo + ") applies to the \"native\" algorithm only; " +
                          "the schedules run over ncclSend/ncclRecv, which no NCCL algorithm affects");
}

void validate_native(const CollectiveRequest& request) {
  check_request_size(request);
  if ((request.op == CollectiveOp::Broadcast || request.op == CollectiveOp::Reduce) &&
      (request.root < 0 || request.root >= request.ranks))
    throw InvalidArgument("root must be in [0, ranks) = [0, " + std::to_string(request.ranks) + ") (got " +
                          std::to_string(request.root) + ")");
}

// Every rank agrees whether the job can run: Unavailable on all ranks when any rank lacks a GPU.
// Returns the device count of this rank.
int agree_on_devices(const Job& job) {
  const std::optional<std::string> reason = cuda_unavailable_reason();
  const int everyone_has_one = job.min_over_ranks(reason ? 0 : 1);
  if (reason) throw Unavailable(*reason);
  if (!everyone_has_one) throw Unavailable("no CUDA device: another rank of the job sees none");
  return cuda_detail::require_devices();
}

int world_rank() {
  int rank = 0;
#if TWINBED_HAVE_MPI
  if (mpi_running()) MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
#endif
  return rank;
}

// The GPU side of one call: the job's ranks agree that they have GPUs, each takes its device, and they
// create one communicator; `measure` runs with them, and the communicator is destroyed checked.
template <typename Measure>
auto with_nccl(const std::string& nccl_algo, const Measure& measure) {
  Job job;
  const int devices = agree_on_devices(job);
  CUDA_CHECK(cudaSetDevice(job.local_rank() % devices));
  const Stream stream;
  NcclComm comm(job, nccl_algo);
  auto result = measure(job, comm, stream.get());
  CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  comm.destroy();
  return result;
}

}  // namespace

std::optional<std::string> nccl_unavailable_reason() { return cuda_unavailable_reason(); }

CollectiveRow measure_schedule_cuda(const Schedule& schedule, const CudaMeasureOptions& options) {
  validate_options(options, false);
  const int ranks = job_size();
  if (schedule.request().ranks != ranks)
    throw InvalidArgument("the schedule is for " + std::to_string(schedule.request().ranks) + " ranks but the job has " +
                          std::to_string(ranks));
  const GpuProgram program(schedule, world_rank());  // validates the chunks and transfers on every rank alike
  return with_nccl(std::string(), [&](const Job& job, const NcclComm& comm, cudaStream_t stream) {
    return measure_schedule_cuda(schedule, program, job, comm, stream, options);
  });
}

std::vector<CollectiveRow> measure_collectives_cuda(CollectiveOp op, const std::string& algorithm,
                                                    std::vector<Bytes> sizes, int root, int ranks_per_host,
                                                    const CudaMeasureOptions& options) {
  const bool native = algorithm == kNativeAlgorithm;
  const Registry<CollectiveAlgorithm> registry = collective_algorithms();
  if (!native && registry.find(algorithm) == nullptr)
    throw UnknownName("collective algorithm", algorithm, real_collective_algorithm_names());
  validate_options(options, native);
  const std::string nccl_algo = cuda_detail::canonical_nccl_algo(options.nccl_algo);
  const int ranks = job_size();
  const int rank = world_rank();

  // Everything that can be wrong with the arguments is found here, before any rank communicates or
  // touches a GPU; every rank finds it alike.
  std::vector<CollectiveRequest> requests;
  std::vector<std::unique_ptr<Schedule>> schedules;
  std::vector<std::unique_ptr<GpuProgram>> programs;
  for (Bytes size : sizes) {
    const CollectiveRequest request{op, ranks, size, root, ranks_per_host};
    check_request_size(request);
    if (native) {
      validate_native(request);
    } else {
      schedules.push_back(registry.get(algorithm).build(request));
      programs.push_back(std::make_unique<GpuProgram>(*schedules.back(), rank));
    }
    requests.push_back(request);
  }

  return with_nccl(native ? nccl_algo : std::string(), [&](const Job& job, const NcclComm& comm, cudaStream_t stream) {
    std::vector<CollectiveRow> rows;
    for (std::size_t i = 0; i < requests.size(); ++i)
      rows.push_back(native ? measure_native_cuda(requests[i], job, comm, stream, options)
                            : measure_schedule_cuda(*schedules[i], *programs[i], job, comm, stream, options));
    return rows;
  });
}

}  // namespace twinbed::real
