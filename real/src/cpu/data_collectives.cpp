#include "twinbed/real/data_collectives.hpp"

#include <mpi.h>

#include <map>
#include <utility>
#include <vector>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "schedule_executor.hpp"

namespace twinbed::real {

namespace {

// One built schedule for one (op, size) and its workspace.
struct Prepared {
  detail::RankProgram program;
  std::vector<float> workspace;
};

}  // namespace

struct DataCollectives::Impl {
  std::string algorithm;
  int ranks_per_host = 0;
  std::unique_ptr<detail::DupComm> comm;  // made after world_size() has checked that MPI runs
  int size = 0;
  std::int64_t floats_sent = 0;
  std::map<std::pair<CollectiveOp, std::size_t>, std::unique_ptr<Prepared>> prepared;

  Prepared& prepare(CollectiveOp op, std::size_t floats_per_rank) {
    auto& slot = prepared[{op, floats_per_rank}];
    if (!slot) {
      const std::size_t floats = op == CollectiveOp::AllGather ? floats_per_rank * size : floats_per_rank;
      CollectiveRequest request{op, size, static_cast<Bytes>(floats * sizeof(float)), 0, ranks_per_host};
      const auto schedule = build_schedule(algorithm, request);
      detail::RankProgram program(*schedule, comm->rank());
      std::vector<float> workspace(static_cast<std::size_t>(program.workspace_floats()));
      slot = std::make_unique<Prepared>(Prepared{std::move(program), std::move(workspace)});
    }
    return *slot;
  }

  void run(Prepared& p) {
    p.program.run(comm->get(), p.workspace);
    floats_sent += p.program.floats_sent();
  }
};

DataCollectives::DataCollectives(std::string algorithm, int ranks_per_host) : impl_(std::make_unique<Impl>()) {
  collective_algorithms().get(algorithm);  // UnknownName listing them, before anything collective
  impl_->algorithm = std::move(algorithm);
  impl_->ranks_per_host = ranks_per_host;
  impl_->size = detail::world_size();
  impl_->comm = std::make_unique<detail::DupComm>();
}

DataCollectives::~DataCollectives() = default;

int DataCollectives::rank() const { return impl_->comm->rank(); }
int DataCollectives::ranks() const { return impl_->size; }
std::int64_t DataCollectives::bytes_sent() const {
  return impl_->floats_sent * static_cast<std::int64_t>(sizeof(float));
}

void DataCollectives::all_reduce(std::span<float> data) {
  if (impl_->size == 1 || data.empty()) return;
  Prepared& p = impl_->prepare(CollectiveOp::AllReduce, data.size());
  // One block: chunk c holds the block's floats [first, first + count) at workspace offset `offset`.
  for (const ChunkElements& c : p.program.layout())
    std::copy_n(data.begin() + c.first, c.count, p.workspace.begin() + c.offset);
  impl_->run(p);
  for (const ChunkElements& c : p.program.layout())
    std::copy_n(p.workspace.begin() + c.offset, c.count, data.begin() + c.first);
}

void DataCollectives::all_gather(std::span<const float> mine, std::span<float> all) {
  const std::size_t n = mine.size();
  if (all.size() != n * static_cast<std::size_t>(impl_->size))
    throw InvalidArgument("DataCollectives::all_gather: the output has " + std::to_string(all.size()) +
                          " floats, not ranks x input = " + std::to_string(impl_->size) + " x " + std::to_string(n));
  if (impl_->size == 1 || n == 0) {
    std::copy(mine.begin(), mine.end(), all.begin());
    return;
  }
  Prepared& p = impl_->prepare(CollectiveOp::AllGather, n);
  // Block b is rank b's share; this rank starts with its own block.
  for (const ChunkElements& c : p.program.layout())
    if (c.block == rank()) std::copy_n(mine.begin() + c.first, c.count, p.workspace.begin() + c.offset);
  impl_->run(p);
  for (const ChunkElements& c : p.program.layout())
    std::copy_n(p.workspace.begin() + c.offset, c.count,
                all.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(c.block) * n + c.first));
}

}  // namespace twinbed::real
