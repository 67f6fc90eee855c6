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
#include "nccl_common.hpp"
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
using cuda_detail::Job;
using cuda_detail::NcclComm;
using cuda_detail::NcclGroup;
using cuda_detail::GpuProgram;
using cuda_detail::agree_on_devices;
using cuda_detail::job_size;
using cuda_detail::world_rank;

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