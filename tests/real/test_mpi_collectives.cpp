// The CPU real backend executed for real over MPI, on however many ranks mpirun started (ctest runs
// 2, 3 and 4). Every measurement returns the same row on every rank, so every rank reaches the same
// verdict and no rank leaves a collective early; EXPECT, not ASSERT, keeps it that way.
#include <mpi.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/collectives.hpp"
#include "twinbed/real/launch.hpp"
#include "twinbed/real/mpi.hpp"
#include "support/mpi_world.hpp"

namespace twinbed::real {
namespace {

using test::world_size;

// One untimed-looking measurement: the checked iteration plus a single timed one.
const MeasureOptions kOnce{0, 1, true};

bool per_rank_blocks(CollectiveOp op) {
  return op == CollectiveOp::ReduceScatter || op == CollectiveOp::AllGather || op == CollectiveOp::AllToAll;
}

// Sizes the element rule allows: for one-block ops, float counts not divisible by the ranks; for
// per-rank-block ops, multiples of 4 * ranks. The largest crosses 2 MiB so pipelines cut several chunks.
std::vector<Bytes> sizes_for(CollectiveOp op, int n) {
  const Bytes unit = 4 * static_cast<Bytes>(n);
  if (per_rank_blocks(op)) return {unit, unit * 37, unit * (MiB / unit + 1)};
  return {4, 1028, 2 * MiB + 12};
}

void expect_all_right(const std::vector<CollectiveRow>& rows, const std::vector<Bytes>& sizes, const std::string& what) {
  ASSERT_EQ(rows.size(), sizes.size()) << what;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].size_bytes, sizes[i]) << what;
    ASSERT_TRUE(rows[i].wrong.has_value()) << what;
    EXPECT_EQ(*rows[i].wrong, 0) << what << " bytes=" << sizes[i];
    EXPECT_GT(rows[i].time_us, 0) << what;
  }
}

TEST(MpiJob, IsSeenAsOne) { EXPECT_TRUE(in_mpi_job()); }

TEST(MpiCollectives, EveryAlgorithmAndOpGivesExactlyTheExpectedData) {
  const int n = world_size();
  const auto registry = collective_algorithms();
  for (const auto& entry : registry.entries()) {
    for (CollectiveOp op : entry.value.ops) {
      std::vector<int> hosts = {0};
      if (entry.name == "hierarchical") {  // every way of cutting the ranks into hosts
        hosts.clear();
        for (int g = 1; g <= n; ++g)
          if (n % g == 0) hosts.push_back(g);
      }
      for (int g : hosts) {
        const std::string what = entry.name + " " + to_string(op) + " ranks_per_host=" + std::to_string(g);
        const std::vector<Bytes> sizes = sizes_for(op, n);
        expect_all_right(measure_collectives(op, entry.name, sizes, n - 1, g, kOnce), sizes, what);
      }
    }
  }
}

TEST(MpiCollectives, NativeGivesExactlyTheExpectedData) {
  const int n = world_size();
  for (const std::string& name : collective_op_names()) {
    const CollectiveOp op = parse_collective_op(name);
    const std::vector<Bytes> sizes = sizes_for(op, n);
    for (int root : {0, n - 1}) {
      const std::vector<CollectiveRow> rows = measure_collectives(op, kNativeAlgorithm, sizes, root, 0, kOnce);
      expect_all_right(rows, sizes, "native " + name + " root=" + std::to_string(root));
      for (const CollectiveRow& row : rows) EXPECT_EQ(row.algorithm, "native");
    }
  }
}

TEST(MpiCollectives, ABrokenScheduleIsCaught) {
  // All-gather sending straight to everyone with 0 -> 1 left out: rank 1 misses block 0's 10 floats.
  const int n = world_size();
  std::vector<Chunk> chunks;
  std::vector<Transfer> round;
  for (int s = 0; s < n; ++s) {
    chunks.push_back({40, s});
    for (int d = 0; d < n; ++d)
      if (s != d && !(s == 0 && d == 1)) round.push_back({s, d, s, false});
  }
  const CollectiveRequest req{CollectiveOp::AllGather, n, 40 * static_cast<Bytes>(n), 0, 0};
  const ExplicitSchedule broken(req, "broken", chunks, {round});
  const CollectiveRow row = measure_schedule(broken, kOnce);
  ASSERT_TRUE(row.wrong.has_value());
  EXPECT_EQ(*row.wrong, 10);
  EXPECT_EQ(row.algorithm, "broken");

  // A registered ring all-reduce with its last transfer dropped.
  const auto ring = build_schedule("ring", {CollectiveOp::AllReduce, n, 4096, 0, 0});
  std::vector<std::vector<Transfer>> rounds(static_cast<std::size_t>(ring->num_rounds()));
  for (int k = 0; k < ring->num_rounds(); ++k) ring->round(k, rounds[static_cast<std::size_t>(k)]);
  rounds.back().pop_back();
  const ExplicitSchedule short_ring(ring->request(), "ring-minus-one", ring->chunks(), rounds);
  const CollectiveRow ring_row = measure_schedule(short_ring, kOnce);
  ASSERT_TRUE(ring_row.wrong.has_value());
  EXPECT_GT(*ring_row.wrong, 0);
}

TEST(MpiCollectives, RejectsBadArgumentsOnEveryRankBeforeCommunicating) {
  const int n = world_size();
  // Not a whole number of floats per rank.
  EXPECT_THROW(measure_collectives(CollectiveOp::ReduceScatter, "ring", {4 * static_cast<Bytes>(n) + 4}, 0, 0, kOnce),
               InvalidArgument);
  EXPECT_THROW(measure_collectives(CollectiveOp::AllReduce, "native", {6}, 0, 0, kOnce), InvalidArgument);
  // An op the algorithm lacks, a root out of range, bad options.
  EXPECT_THROW(measure_collectives(CollectiveOp::AllToAll, "ring", {4 * static_cast<Bytes>(n)}, 0, 0, kOnce),
               InvalidArgument);
  EXPECT_THROW(measure_collectives(CollectiveOp::Broadcast, "native", {64}, n, 0, kOnce), InvalidArgument);
  EXPECT_THROW(measure_collectives(CollectiveOp::AllReduce, "ring", {64}, 0, 0, MeasureOptions{0, 0, true}),
               InvalidArgument);
  // A schedule for another number of ranks.
  EXPECT_THROW(measure_schedule(*build_schedule("ring", {CollectiveOp::AllReduce, n + 1, 64, 0, 0}), kOnce),
               InvalidArgument);
  // An unknown algorithm lists the known ones, native included.
  try {
    measure_collectives(CollectiveOp::AllReduce, "nope", {64}, 0, 0, kOnce);
    ADD_FAILURE() << "expected UnknownName";
  } catch (const UnknownName& e) {
    EXPECT_NE(std::string(e.what()).find("native"), std::string::npos) << e.what();
  }
}

TEST(MpiCollectives, RowsCarryTheTableFieldsAndNoWrongWithoutCheck) {
  const int n = world_size();
  const std::vector<CollectiveRow> rows =
      measure_collectives(CollectiveOp::AllReduce, "rhd", {4096}, 0, 0, MeasureOptions{1, 3, false});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].count, 1024);
  EXPECT_EQ(rows[0].algorithm, "rhd");
  EXPECT_FALSE(rows[0].wrong.has_value());
  EXPECT_GT(rows[0].algbw_GBps, 0);
  EXPECT_DOUBLE_EQ(rows[0].busbw_GBps, rows[0].algbw_GBps * busbw_factor(CollectiveOp::AllReduce, n));
  // Every rank got the same row: compare rank 0's time with everyone's.
  double mine = rows[0].time_us;
  double root = mine;
  MPI_CHECK(MPI_Bcast(&root, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD));
  EXPECT_EQ(mine, root);
}

}  // namespace
}  // namespace twinbed::real
