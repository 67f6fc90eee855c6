// DataCollectives over MPI on however many ranks mpirun started: every algorithm sums and gathers the
// caller's own data exactly (the values are small integers, so any order of addition is exact), leaves
// the same bits on every rank, and counts the bytes its schedule sends (check_schedule's figure).
#include <mpi.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/data_collectives.hpp"
#include "twinbed/real/mpi.hpp"

namespace twinbed::real {
namespace {

float value(int rank, std::size_t i) { return static_cast<float>((rank * 7 + static_cast<int>(i) * 3) % 11); }

// Every algorithm that does both ops, with hierarchical cut into hosts of 1 rank (any n).
std::vector<std::string> algorithms() {
  std::vector<std::string> names;
  const auto registry = collective_algorithms();
  for (const auto& e : registry.entries())
    if (e.value.ops.count(CollectiveOp::AllReduce) && e.value.ops.count(CollectiveOp::AllGather)) names.push_back(e.name);
  return names;
}

TEST(DataCollectives, AllReduceSumsTheCallersDataOnEveryRank) {
  for (const std::string& algorithm : algorithms()) {
    DataCollectives dc(algorithm, algorithm == "hierarchical" ? 1 : 0);
    const int n = dc.ranks();
    for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1001}}) {
      std::vector<float> data(size);
      for (std::size_t i = 0; i < size; ++i) data[i] = value(dc.rank(), i);
      dc.all_reduce(data);
      int wrong = 0;
      for (std::size_t i = 0; i < size; ++i) {
        float expected = 0;
        for (int r = 0; r < n; ++r) expected += value(r, i);
        wrong += data[i] != expected;
      }
      EXPECT_EQ(wrong, 0) << algorithm << " size " << size;
    }
  }
}

TEST(DataCollectives, AllGatherPutsEachRanksDataInRankOrder) {
  for (const std::string& algorithm : algorithms()) {
    DataCollectives dc(algorithm, algorithm == "hierarchical" ? 1 : 0);
    const int n = dc.ranks();
    const std::size_t size = 13;
    std::vector<float> mine(size), all(size * static_cast<std::size_t>(n), -1.0f);
    for (std::size_t i = 0; i < size; ++i) mine[i] = value(dc.rank(), i);
    dc.all_gather(mine, all);
    int wrong = 0;
    for (int r = 0; r < n; ++r)
      for (std::size_t i = 0; i < size; ++i) wrong += all[static_cast<std::size_t>(r) * size + i] != value(r, i);
    EXPECT_EQ(wrong, 0) << algorithm;
  }
}

TEST(DataCollectives, CountsTheBytesItsScheduleSends) {
  DataCollectives dc("ring");
  const int n = dc.ranks();
  // A size whose ring chunks are whole floats, so the schedule's bytes are exactly the floats sent.
  std::vector<float> data(240 * static_cast<std::size_t>(n), 1.0f);
  dc.all_reduce(data);
  dc.all_reduce(data);
  const auto schedule =
      build_schedule("ring", CollectiveRequest{CollectiveOp::AllReduce, n, static_cast<Bytes>(data.size() * 4)});
  const Bytes per_call = check_schedule(*schedule).bytes_sent.at(static_cast<std::size_t>(dc.rank()));
  EXPECT_GT(per_call, 0);
  EXPECT_EQ(dc.bytes_sent(), 2 * per_call);
}

TEST(DataCollectives, RejectsAWrongOutputSizeOnEveryRankAlike) {
  DataCollectives dc("ring");
  std::vector<float> mine(4), all(3);
  EXPECT_THROW(dc.all_gather(mine, all), InvalidArgument);
  EXPECT_THROW(DataCollectives("no-such-algorithm"), UnknownName);
}

}  // namespace
}  // namespace twinbed::real
