#include "twinbed/real/collectives.hpp"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/mpi.hpp"
#include "schedule_executor.hpp"

namespace twinbed::real {
namespace {

// The schedule executor lives in schedule_executor.hpp, shared with the Plan executor (cpu_backend.cpp).
using detail::as_count;
using detail::DupComm;
using detail::world_size;
using detail::RankProgram;



void validate_options(const MeasureOptions& options) {
  if (options.iters < 1) throw InvalidArgument("iters must be >= 1 (got " + std::to_string(options.iters) + ")");
  if (options.warmup_iters < 0)
    throw InvalidArgument("warmup_iters must be >= 0 (got " + std::to_string(options.warmup_iters) + ")");
}

void validate_ranks(const CollectiveRequest& request, int world) {
  if (request.ranks != world)
    throw InvalidArgument("the collective is for " + std::to_string(request.ranks) + " ranks but the MPI job has " +
                          std::to_string(world));
}

// ---- timing and checking, shared by both kinds --------------------------------------------------

struct Runner {
  std::function<void()> fill;                // fresh inputs
  std::function<void()> run;                 // one iteration
  std::function<std::int64_t()> count_wrong; // this rank's wrong floats after one iteration on fresh inputs
};

CollectiveRow measure_with(const CollectiveRequest& request, const std::string& algorithm, const DupComm& comm,
                           const Runner& runner, const MeasureOptions& options) {
  std::optional<std::int64_t> wrong;
  if (options.check) {
    runner.fill();
    MPI_CHECK(MPI_Barrier(comm.get()));
    runner.run();
    std::int64_t local = runner.count_wrong();
    std::int64_t total = 0;
    MPI_CHECK(MPI_Allreduce(&local, &total, 1, MPI_INT64_T, MPI_SUM, comm.get()));
    wrong = total;
  }
  runner.fill();
  for (int i = 0; i < options.warmup_iters; ++i) runner.run();
  // Start together; each rank stops its own clock, and the slowest rank's mean is the collective's time.
  MPI_CHECK(MPI_Barrier(comm.get()));
  const double start = MPI_Wtime();
  for (int i = 0; i < options.iters; ++i) runner.run();
  const double mean = (MPI_Wtime() - start) / options.iters;
  double slowest = 0;
  MPI_CHECK(MPI_Allreduce(&mean, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm.get()));
  CollectiveRow row = make_collective_row(request.op, request.ranks, request.bytes, Time::from_seconds(slowest), algorithm);
  row.wrong = wrong;
  return row;
}

// ---- MPI's own collectives ------------------------------------------------------------------------

// Buffers of one native collective, laid out so that collective_data's fill and check apply:
// `send` / `recv` are described by ChunkElements lists over the op's blocks.
struct NativeBuffers {
  std::vector<ChunkElements> send_layout;
  std::vector<ChunkElements> recv_layout;
  std::vector<float> send;
  std::vector<float> recv;
};

std::vector<ChunkElements> blocks_layout(const std::vector<int>& blocks, std::int64_t floats_each) {
  std::vector<ChunkElements> out;
  for (std::size_t i = 0; i < blocks.size(); ++i)
    out.push_back({blocks[i], 0, floats_each, static_cast<std::int64_t>(i) * floats_each});
  return out;
}

Runner native_runner(const CollectiveRequest& req, const DupComm& comm, NativeBuffers& b) {
  const int n = req.ranks;
  const int me = comm.rank();
  const std::int64_t floats = req.bytes / 4;
  const std::string what = to_string(req.op) + " of " + std::to_string(req.bytes) + " bytes";
  const int count = as_count(floats, what);
  const int block = as_count(floats / n, what);  // per-rank block of reduce-scatter, all-gather, all-to-all
  std::vector<int> all_blocks(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) all_blocks[static_cast<std::size_t>(i)] = i;
  auto poison = [](const std::vector<ChunkElements>& layout, std::vector<float>& buf) {
    std::int64_t total = 0;
    for (const ChunkElements& c : layout) total = std::max(total, c.offset + c.count);
    buf.assign(static_cast<std::size_t>(total), kPoison);
  };
  // The input side follows the schedule semantics through a request whose op marks every send block as
  // held at the start (all-reduce for reduced data); the receive side starts poisoned.
  auto fill_send = [&b, me, req](CollectiveOp as) {
    CollectiveRequest input = req;
    input.op = as;
    fill_inputs(input, me, b.send_layout, b.send);
  };
  MPI_Comm c = comm.get();
  Runner r;
  switch (req.op) {
    case CollectiveOp::AllReduce:
    case CollectiveOp::Broadcast:
      b.recv_layout = blocks_layout({0}, floats);
      r.fill = [&b, me, req] { fill_inputs(req, me, b.recv_layout, b.recv); };
      if (req.op == CollectiveOp::AllReduce)
        r.run = [&b, count, c] { MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, b.recv.data(), count, MPI_FLOAT, MPI_SUM, c)); };
      else
        r.run = [&b, count, c, root = req.root] { MPI_CHECK(MPI_Bcast(b.recv.data(), count, MPI_FLOAT, root, c)); };
      break;
    case CollectiveOp::Reduce:
      b.send_layout = blocks_layout({0}, floats);
      b.recv_layout = b.send_layout;
      r.fill = [&b, fill_send, poison] { fill_send(CollectiveOp::AllReduce); poison(b.recv_layout, b.recv); };
      r.run = [&b, count, c, root = req.root] {
        MPI_CHECK(MPI_Reduce(b.send.data(), b.recv.data(), count, MPI_FLOAT, MPI_SUM, root, c));
      };
      break;
    case CollectiveOp::ReduceScatter:
      b.send_layout = blocks_layout(all_blocks, block);
      b.recv_layout = blocks_layout({me}, block);
      r.fill = [&b, fill_send, poison] { fill_send(CollectiveOp::ReduceScatter); poison(b.recv_layout, b.recv); };
      r.run = [&b, block, c] {
        MPI_CHECK(MPI_Reduce_scatter_block(b.send.data(), b.recv.data(), block, MPI_FLOAT, MPI_SUM, c));
      };
      break;
    case CollectiveOp::AllGather:
      b.send_layout = blocks_layout({me}, block);
      b.recv_layout = blocks_layout(all_blocks, block);
      r.fill = [&b, fill_send, poison] { fill_send(CollectiveOp::AllGather); poison(b.recv_layout, b.recv); };
      r.run = [&b, block, c] {
        MPI_CHECK(MPI_Allgather(b.send.data(), block, MPI_FLOAT, b.recv.data(), block, MPI_FLOAT, c));
      };
      break;
    case CollectiveOp::AllToAll: {
      std::vector<int> sent(static_cast<std::size_t>(n)), received(static_cast<std::size_t>(n));
      for (int p = 0; p < n; ++p) {
        sent[static_cast<std::size_t>(p)] = me * n + p;      // block me*n+p goes to rank p
        received[static_cast<std::size_t>(p)] = p * n + me;  // block p*n+me comes from rank p
      }
      b.send_layout = blocks_layout(sent, block);
      b.recv_layout = blocks_layout(received, block);
      r.fill = [&b, fill_send, poison] { fill_send(CollectiveOp::AllToAll); poison(b.recv_layout, b.recv); };
      r.run = [&b, block, c] {
        MPI_CHECK(MPI_Alltoall(b.send.data(), block, MPI_FLOAT, b.recv.data(), block, MPI_FLOAT, c));
      };
      break;
    }
  }
  r.count_wrong = [&b, me, req] { return count_wrong(req, me, b.recv_layout, b.recv); };
  return r;
}

void validate_native(const CollectiveRequest& request) {
  check_request_size(request);
  if ((request.op == CollectiveOp::Broadcast || request.op == CollectiveOp::Reduce) &&
      (request.root < 0 || request.root >= request.ranks))
    throw InvalidArgument("root must be in [0, ranks) = [0, " + std::to_string(request.ranks) + ") (got " +
                          std::to_string(request.root) + ")");
}

}  // namespace

CollectiveRow measure_schedule(const Schedule& schedule, const MeasureOptions& options) {
  validate_options(options);
  const CollectiveRequest& request = schedule.request();
  validate_ranks(request, world_size());
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  RankProgram program(schedule, rank);  // validates the chunks and transfers on every rank alike
  DupComm comm;
  std::vector<float> workspace;
  Runner runner;
  runner.fill = [&] { fill_inputs(request, rank, program.layout(), workspace); };
  runner.run = [&] { program.run(comm.get(), workspace); };
  runner.count_wrong = [&] { return count_wrong(request, rank, program.layout(), workspace); };
  return measure_with(request, schedule.algorithm(), comm, runner, options);
}

CollectiveRow measure_native(const CollectiveRequest& request, const MeasureOptions& options) {
  validate_options(options);
  validate_native(request);
  validate_ranks(request, world_size());
  DupComm comm;
  NativeBuffers buffers;
  const Runner runner = native_runner(request, comm, buffers);
  return measure_with(request, kNativeAlgorithm, comm, runner, options);
}

std::vector<CollectiveRow> measure_collectives(CollectiveOp op, const std::string& algorithm, std::vector<Bytes> sizes,
                                               int root, int ranks_per_host, const MeasureOptions& options) {
  const bool native = algorithm == kNativeAlgorithm;
  const Registry<CollectiveAlgorithm> registry = collective_algorithms();
  if (!native && registry.find(algorithm) == nullptr)
    throw UnknownName("collective algorithm", algorithm, real_collective_algorithm_names());
  validate_options(options);
  const int world = world_size();

  // Everything that can be wrong with the arguments is found here, before any rank communicates.
  std::vector<CollectiveRequest> requests;
  std::vector<std::unique_ptr<Schedule>> schedules;
  for (Bytes size : sizes) {
    const CollectiveRequest request{op, world, size, root, ranks_per_host};
    check_request_size(request);
    if (native) {
      validate_native(request);
    } else {
      schedules.push_back(registry.get(algorithm).build(request));
      (void)chunk_elements(schedules.back()->chunks());
    }
    requests.push_back(request);
  }

  std::vector<CollectiveRow> rows;
  for (std::size_t i = 0; i < requests.size(); ++i)
    rows.push_back(native ? measure_native(requests[i], options) : measure_schedule(*schedules[i], options));
  return rows;
}

}  // namespace twinbed::real
