// Collective schedules checked without a clock: every registered algorithm on every op it implements
// ends in the op's meaning, moves the textbook volumes, and bad requests and bad schedules are caught.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <numeric>
#include <tuple>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/schedule.hpp"

using namespace twinbed;

namespace {

CollectiveRequest request(CollectiveOp op, int ranks, Bytes bytes, int root = 0, int ranks_per_host = 0) {
  CollectiveRequest r;
  r.op = op;
  r.ranks = ranks;
  r.bytes = bytes;
  r.root = root;
  r.ranks_per_host = ranks_per_host;
  return r;
}

Bytes sum(const std::vector<Bytes>& v) { return std::accumulate(v.begin(), v.end(), Bytes{0}); }

std::string join(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

// Throws `E` with every one of `words` in its message.
template <class E, class F>
void expect_throw_naming(F&& f, const std::vector<std::string>& words) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    for (const auto& w : words) EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what() << " lacks " << w;
  }
}

// ---- every algorithm x op x ranks x size ------------------------------------------------------------

// One test per (algorithm, op, ranks, ranks_per_host); the sizes loop inside, to keep ctest's test count
// in the hundreds. 0 and 1 byte give zero-byte chunks (which are still moved and checked); 1000 rarely
// divides by n; 3 MiB + 7 cuts pipelines into 4 chunks.
const std::vector<Bytes> kSizes{0, 1, 1000, 3 * MiB + 7};

struct Case {
  std::string algorithm;
  CollectiveOp op;
  int ranks;
  int ranks_per_host;
};

std::string case_name(const testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return c.algorithm + "_" + to_string(c.op) + "_n" + std::to_string(c.ranks) + "_g" + std::to_string(c.ranks_per_host);
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  const auto algorithms = collective_algorithms();
  for (const auto& entry : algorithms.entries()) {
    for (CollectiveOp op : entry.value.ops) {
      for (int n = 1; n <= 17; ++n) {
        // Hierarchical: one host, hosts of the smallest divisor > 1 of n, and one rank per host.
        std::vector<int> per_host{0};
        if (entry.name == "hierarchical") {
          int smallest = n;
          for (int d = 2; d < n; ++d) {
            if (n % d == 0) {
              smallest = d;
              break;
            }
          }
          if (smallest != n) per_host.push_back(smallest);
          if (n > 1) per_host.push_back(1);
        }
        for (int g : per_host) cases.push_back({entry.name, op, n, g});
      }
    }
  }
  return cases;
}

// Rounds that claim the same shape must have the same (src, dst, bytes, reduce) pattern.
void expect_honest_shapes(const Schedule& schedule) {
  using Pattern = std::vector<std::tuple<int, int, Bytes, bool>>;
  std::vector<std::pair<int, Pattern>> seen;
  std::vector<Transfer> round;
  for (int k = 0; k < schedule.num_rounds(); ++k) {
    const int shape = schedule.round_shape(k);
    if (shape < 0) continue;
    schedule.round(k, round);
    Pattern p;
    for (const Transfer& t : round) p.emplace_back(t.src, t.dst, schedule.chunks()[t.chunk].bytes, t.reduce);
    std::sort(p.begin(), p.end());
    auto it = std::find_if(seen.begin(), seen.end(), [&](const auto& s) { return s.first == shape; });
    if (it == seen.end()) {
      seen.emplace_back(shape, std::move(p));
    } else {
      EXPECT_EQ(it->second, p) << "round " << k << " claims shape " << shape;
    }
  }
}

class EveryAlgorithm : public testing::TestWithParam<Case> {};

TEST_P(EveryAlgorithm, EndsInTheOpsMeaning) {
  const Case& c = GetParam();
  for (Bytes bytes : kSizes) {
    SCOPED_TRACE("bytes = " + std::to_string(bytes));
    const CollectiveRequest req = request(c.op, c.ranks, bytes, c.ranks / 2, c.ranks_per_host);
    auto schedule = build_schedule(c.algorithm, req);
    ASSERT_NE(schedule, nullptr);
    EXPECT_EQ(schedule->algorithm(), c.algorithm);
    EXPECT_EQ(schedule->request(), req);

    const ScheduleCheck check = check_schedule(*schedule);
    EXPECT_TRUE(check.ok) << join(check.errors);
    EXPECT_TRUE(check.errors.empty()) << join(check.errors);
    EXPECT_EQ(check.rounds, schedule->num_rounds());
    if (c.ranks == 1) {
      EXPECT_EQ(schedule->num_rounds(), 0);
    }

    // The chunks are the op's data, no more, no less.
    Bytes total = 0;
    for (const Chunk& ch : schedule->chunks()) total += ch.bytes;
    EXPECT_EQ(total, c.op == CollectiveOp::AllToAll ? c.ranks * bytes : bytes);

    // What is sent is received.
    EXPECT_EQ(sum(check.bytes_sent), sum(check.bytes_received));
    expect_honest_shapes(*schedule);
  }
}

INSTANTIATE_TEST_SUITE_P(Schedules, EveryAlgorithm, testing::ValuesIn(all_cases()), case_name);

// ---- textbook volumes --------------------------------------------------------------------------------

ScheduleCheck checked(const std::string& algorithm, const CollectiveRequest& req) {
  auto schedule = build_schedule(algorithm, req);
  ScheduleCheck check = check_schedule(*schedule);
  EXPECT_TRUE(check.ok) << algorithm << " " << to_string(req.op) << " n=" << req.ranks << "\n" << join(check.errors);
  return check;
}

void expect_each_rank_sends(const ScheduleCheck& check, Bytes bytes) {
  for (std::size_t r = 0; r < check.bytes_sent.size(); ++r) {
    EXPECT_EQ(check.bytes_sent[r], bytes) << "rank " << r;
    EXPECT_EQ(check.bytes_received[r], bytes) << "rank " << r;
  }
}

TEST(Volumes, RingAllReduceSendsTwoNMinusOneOverN) {
  for (int n = 2; n <= 17; ++n) {
    const Bytes s = Bytes{n} * 3000;
    auto check = checked("ring", request(CollectiveOp::AllReduce, n, s));
    expect_each_rank_sends(check, 2 * (n - 1) * s / n);
    for (Bytes b : check.bytes_reduced) EXPECT_EQ(b, (n - 1) * s / n);
    EXPECT_EQ(check.rounds, 2 * (n - 1));
  }
}

TEST(Volumes, RingReduceScatterAndAllGatherSendNMinusOneOverN) {
  for (int n = 2; n <= 17; ++n) {
    const Bytes s = Bytes{n} * 1024;
    expect_each_rank_sends(checked("ring", request(CollectiveOp::ReduceScatter, n, s)), (n - 1) * s / n);
    expect_each_rank_sends(checked("ring", request(CollectiveOp::AllGather, n, s)), (n - 1) * s / n);
  }
}

TEST(Volumes, RingChainsMoveTheBufferOncePerEdge) {
  for (int n = 2; n <= 9; ++n) {
    const Bytes s = 5 * MiB;  // 5 pipeline chunks
    auto b = checked("ring", request(CollectiveOp::Broadcast, n, s, n - 1));
    EXPECT_EQ(sum(b.bytes_sent), (n - 1) * s);
    EXPECT_EQ(b.rounds, 5 + n - 2);
    auto r = checked("ring", request(CollectiveOp::Reduce, n, s, 1 % n));
    EXPECT_EQ(sum(r.bytes_reduced), (n - 1) * s);
  }
}

TEST(Volumes, RhdOnPowersOfTwoMatchesRing) {
  for (int n : {2, 4, 8, 16, 32}) {
    const Bytes s = Bytes{n} * 512;
    auto ar = checked("rhd", request(CollectiveOp::AllReduce, n, s));
    expect_each_rank_sends(ar, 2 * (n - 1) * s / n);
    EXPECT_EQ(ar.rounds, 2 * std::bit_width(static_cast<unsigned>(n - 1)));
    expect_each_rank_sends(checked("rhd", request(CollectiveOp::ReduceScatter, n, s)), (n - 1) * s / n);
    expect_each_rank_sends(checked("rhd", request(CollectiveOp::AllGather, n, s)), (n - 1) * s / n);
  }
}

TEST(Volumes, RhdFoldsExtraRanksInTwoMoreRounds) {
  auto check = checked("rhd", request(CollectiveOp::AllReduce, 6, 4000));  // p = 4, r = 2
  EXPECT_EQ(check.rounds, 2 * 2 + 2);
  EXPECT_EQ(check.bytes_sent[0], 4000);  // folded rank: sends its whole buffer once, gets the result back
  EXPECT_EQ(check.bytes_received[0], 4000);
}

TEST(Volumes, DirectAllToAllSendsNMinusOneOverN) {
  for (int n = 1; n <= 17; ++n) {
    const Bytes s = Bytes{n} * 100;
    auto check = checked("direct", request(CollectiveOp::AllToAll, n, s));
    expect_each_rank_sends(check, (n - 1) * s / n);
    EXPECT_EQ(check.rounds, n > 1 ? 1 : 0);
  }
}

TEST(Volumes, DirectAllReduceIsReduceScatterPlusAllGather) {
  for (int n = 2; n <= 17; ++n) {
    const Bytes s = Bytes{n} * 64;
    auto check = checked("direct", request(CollectiveOp::AllReduce, n, s));
    expect_each_rank_sends(check, 2 * (n - 1) * s / n);
    EXPECT_EQ(check.rounds, 2);
  }
}

TEST(Volumes, TreeAllReduceMovesEachHalfUpAndDownEveryEdge) {
  for (int n = 1; n <= 33; ++n) {
    const Bytes s = 4 * MiB;
    auto check = checked("tree", request(CollectiveOp::AllReduce, n, s));
    EXPECT_EQ(sum(check.bytes_sent), 2 * (n - 1) * s);
    EXPECT_EQ(sum(check.bytes_reduced), (n - 1) * s);
  }
}

TEST(Volumes, TreeBroadcastAndReduceMoveTheBufferOncePerEdge) {
  for (int n = 2; n <= 17; ++n) {
    for (int root : {0, n - 1, n / 2}) {
      const Bytes s = 2 * MiB + 1;
      EXPECT_EQ(sum(checked("tree", request(CollectiveOp::Broadcast, n, s, root)).bytes_sent), (n - 1) * s);
      EXPECT_EQ(sum(checked("tree", request(CollectiveOp::Reduce, n, s, root)).bytes_reduced), (n - 1) * s);
    }
  }
}

TEST(Volumes, HierarchicalAllReduce) {
  // Intra-host reduce-scatter and all-gather move 2(g-1)/g * S; the inter-host ring all-reduce of a 1/g
  // share moves 2(h-1)/h * S/g.
  for (auto [n, g] : {std::pair{8, 4}, {12, 3}, {16, 8}, {6, 2}, {9, 9}, {5, 1}}) {
    const int hosts = n / g;
    const Bytes s = Bytes{n} * 4096;
    auto check = checked("hierarchical", request(CollectiveOp::AllReduce, n, s, 0, g));
    expect_each_rank_sends(check, 2 * (g - 1) * s / g + 2 * (hosts - 1) * s / n);
    EXPECT_EQ(check.rounds, 2 * (g - 1) + 2 * (hosts - 1));
    auto rs = checked("hierarchical", request(CollectiveOp::ReduceScatter, n, s, 0, g));
    expect_each_rank_sends(rs, (n - 1) * s / n);
    auto ag = checked("hierarchical", request(CollectiveOp::AllGather, n, s, 0, g));
    expect_each_rank_sends(ag, (n - 1) * s / n);
  }
}

TEST(Volumes, HierarchicalOnOneHostIsTheRing) {
  for (int n = 2; n <= 9; ++n) {
    const Bytes s = Bytes{n} * 10;
    for (int g : {0, n}) {
      auto schedule = build_schedule("hierarchical", request(CollectiveOp::AllReduce, n, s, 0, g));
      auto ring = build_schedule("ring", request(CollectiveOp::AllReduce, n, s, 0, g));
      ASSERT_EQ(schedule->num_rounds(), ring->num_rounds());
      std::vector<Transfer> a, b;
      for (int k = 0; k < ring->num_rounds(); ++k) {
        schedule->round(k, a);
        ring->round(k, b);
        EXPECT_EQ(a, b) << "round " << k;
      }
    }
  }
}

// ---- rounds on demand and shapes ---------------------------------------------------------------------

TEST(RingShape, ReduceScatterRoundsShareOneShapeAllGatherRoundsAnother) {
  auto schedule = build_schedule("ring", request(CollectiveOp::AllReduce, 8, 8 * 1024));
  for (int k = 0; k < 7; ++k) EXPECT_EQ(schedule->round_shape(k), 0);
  for (int k = 7; k < 14; ++k) EXPECT_EQ(schedule->round_shape(k), 1);
  // Unequal chunks make no claim.
  EXPECT_EQ(build_schedule("ring", request(CollectiveOp::AllReduce, 8, 8 * 1024 + 1))->round_shape(0), -1);
}

TEST(RingShape, LargeRingIsGeneratedOnDemand) {
  auto schedule = build_schedule("ring", request(CollectiveOp::AllReduce, 4096, GiB));
  EXPECT_EQ(schedule->num_rounds(), 8190);
  std::vector<Transfer> round;
  schedule->round(8189, round);
  EXPECT_EQ(round.size(), 4096u);
  EXPECT_EQ(round[0], (Transfer{0, 1, 2, false}));  // all-gather step n-2: rank 0 forwards chunk (0-(n-2)) mod n
  EXPECT_EQ(schedule->round_shape(8189), 1);
}

TEST(TreeShape, DoubleBinaryTreeRoundCount) {
  // n = 8: tree 1 rooted at 0 has height 3 (0 - 4 - 2/6 - odd leaves); 4 chunks per tree for 8 MiB.
  auto schedule = build_schedule("tree", request(CollectiveOp::AllReduce, 8, 8 * MiB));
  EXPECT_EQ(schedule->chunks().size(), 8u);
  EXPECT_EQ(schedule->num_rounds(), 4 + 2 * 3 - 1);
}

// The tree edges of a tree all-reduce, read back from the schedule: who reduces chunk `chunk` into whom.
std::vector<int> children_per_rank(const Schedule& s, int chunk) {
  std::vector<int> children(s.request().ranks, 0);
  std::vector<Transfer> round;
  for (int k = 0; k < s.num_rounds(); ++k) {
    s.round(k, round);
    for (const Transfer& t : round)
      if (t.reduce && t.chunk == chunk) ++children[t.dst];
  }
  return children;
}

TEST(TreeShape, DoubleBinaryTreeIsBinaryAndMostRanksAreInteriorInOneTreeOnly) {
  for (int n = 2; n <= 64; ++n) {
    auto s = build_schedule("tree", request(CollectiveOp::AllReduce, n, 2 * MiB));  // one chunk per tree
    ASSERT_EQ(s->chunks().size(), 2u);
    const auto first = children_per_rank(*s, 0);
    const auto second = children_per_rank(*s, 1);
    int both = 0;
    for (int r = 0; r < n; ++r) {
      EXPECT_LE(first[r], 2) << "n=" << n << " rank " << r;
      EXPECT_LE(second[r], 2) << "n=" << n << " rank " << r;
      both += first[r] > 0 && second[r] > 0;
    }
    EXPECT_LE(both, 1) << "n=" << n;
  }
}

// ---- the checker catches wrong schedules -------------------------------------------------------------

TEST(Checker, CatchesDoubleCounting) {
  // 0 adds into 1, then 1 (now holding {0, 1}) adds back into 0, which already counts itself.
  ExplicitSchedule s(request(CollectiveOp::AllReduce, 2, 8), "hand", {{8, 0}},
                     {{{0, 1, 0, true}}, {{1, 0, 0, true}}});
  auto check = check_schedule(s);
  EXPECT_FALSE(check.ok);
  ASSERT_FALSE(check.errors.empty());
  EXPECT_NE(check.errors[0].find("twice"), std::string::npos) << check.errors[0];
  EXPECT_NE(check.errors[0].find("round 1"), std::string::npos) << check.errors[0];
}

TEST(Checker, CatchesSendingAnUnheldChunk) {
  ExplicitSchedule s(request(CollectiveOp::AllGather, 2, 8), "hand", {{4, 0}, {4, 1}},
                     {{{0, 1, 1, false}, {1, 0, 1, false}}});
  auto check = check_schedule(s);
  EXPECT_FALSE(check.ok);
  ASSERT_FALSE(check.errors.empty());
  EXPECT_EQ(check.errors[0], "round 0: rank 0 sends chunk 1 it does not hold");
}

TEST(Checker, CatchesAnIncompleteRank) {
  ExplicitSchedule s(request(CollectiveOp::AllReduce, 3, 8), "hand", {{8, 0}},
                     {{{0, 1, 0, true}}, {{1, 2, 0, true}}, {{2, 1, 0, false}}});
  auto check = check_schedule(s);
  EXPECT_FALSE(check.ok);
  ASSERT_EQ(check.errors.size(), 1u) << join(check.errors);
  EXPECT_NE(check.errors[0].find("rank 0 ends with chunk 0"), std::string::npos) << check.errors[0];
  EXPECT_EQ(check.bytes_sent, (std::vector<Bytes>{8, 8, 8}));
  EXPECT_EQ(check.bytes_reduced, (std::vector<Bytes>{0, 8, 8}));
}

TEST(Checker, CatchesBadTransfers) {
  ExplicitSchedule s(request(CollectiveOp::Broadcast, 3, 8, 0), "hand", {{8, 0}},
                     {{{0, 0, 0, false}, {0, 5, 0, false}, {0, 1, 3, false}},
                      {{0, 2, 0, false}, {1, 2, 0, false}},
                      {{0, 1, 0, false}, {0, 2, 0, false}}});
  auto check = check_schedule(s);
  EXPECT_FALSE(check.ok);
  const std::string all = join(check.errors);
  EXPECT_NE(all.find("to itself"), std::string::npos) << all;
  EXPECT_NE(all.find("outside [0, 3)"), std::string::npos) << all;
  EXPECT_NE(all.find("chunk 3 outside"), std::string::npos) << all;
  EXPECT_NE(all.find("rank 1 sends chunk 0 it does not hold"), std::string::npos) << all;
  // The last round repairs everything, so no end-state complaint.
  EXPECT_EQ(all.find("ends with"), std::string::npos) << all;
}

TEST(Checker, CatchesTwoWritersInOneRound) {
  ExplicitSchedule s(request(CollectiveOp::Broadcast, 3, 8, 0), "hand", {{8, 0}},
                     {{{0, 1, 0, false}}, {{0, 2, 0, false}, {1, 2, 0, false}}});
  auto check = check_schedule(s);
  EXPECT_FALSE(check.ok);
  EXPECT_NE(join(check.errors).find("overwritten by 2 senders"), std::string::npos) << join(check.errors);
}

TEST(Checker, ReducesIntoARankThatHoldsNothing) {
  ExplicitSchedule s(request(CollectiveOp::Broadcast, 2, 8, 0), "hand", {{8, 0}}, {{{0, 1, 0, true}}});
  auto check = check_schedule(s);
  EXPECT_FALSE(check.ok);
  EXPECT_NE(join(check.errors).find("does not hold it"), std::string::npos) << join(check.errors);
}

TEST(Checker, KeepsOnlyTheFirstFewErrors) {
  std::vector<Transfer> bad;
  for (int i = 0; i < 50; ++i) bad.push_back({1, 0, 0, false});  // rank 1 holds nothing in a broadcast from 0
  ExplicitSchedule s(request(CollectiveOp::Broadcast, 2, 8, 0), "hand", {{8, 0}}, {bad});
  auto check = check_schedule(s);
  EXPECT_FALSE(check.ok);
  EXPECT_LE(check.errors.size(), 11u);
  EXPECT_NE(check.errors.back().find("more problems"), std::string::npos);
}

TEST(Checker, ZeroByteChunksAreStillTracked) {
  // A chunk of 0 bytes must still reach everyone; it just adds nothing to the byte counts.
  ExplicitSchedule s(request(CollectiveOp::Broadcast, 2, 0, 0), "hand", {{0, 0}}, {});
  EXPECT_FALSE(check_schedule(s).ok);
  ExplicitSchedule t(request(CollectiveOp::Broadcast, 2, 0, 0), "hand", {{0, 0}}, {{{0, 1, 0, false}}});
  auto check = check_schedule(t);
  EXPECT_TRUE(check.ok) << join(check.errors);
  EXPECT_EQ(check.bytes_sent[0], 0);
}

// ---- bad requests ------------------------------------------------------------------------------------

TEST(BadRequests, UnknownAlgorithmListsTheKnownOnes) {
  expect_throw_naming<UnknownName>([] { build_schedule("ringg", request(CollectiveOp::AllReduce, 4, 8)); },
                                   {"ringg", "ring", "tree", "rhd", "direct", "hierarchical"});
}

TEST(BadRequests, EachNamesTheField) {
  const auto algorithms = collective_algorithms();
  for (const auto& entry : algorithms.entries()) {
    const auto& build = entry.value.build;
    expect_throw_naming<InvalidArgument>([&] { build(request(CollectiveOp::AllReduce, 0, 8)); }, {"ranks"});
    expect_throw_naming<InvalidArgument>([&] { build(request(CollectiveOp::AllReduce, 4, -1)); }, {"bytes"});
    expect_throw_naming<InvalidArgument>([&] { build(request(CollectiveOp::Broadcast, 4, 8, 4)); }, {"root"});
    expect_throw_naming<InvalidArgument>([&] { build(request(CollectiveOp::Reduce, 4, 8, -1)); }, {"root"});
    expect_throw_naming<InvalidArgument>([&] { build(request(CollectiveOp::AllReduce, 8, 8, 0, 3)); },
                                         {"ranks_per_host"});
  }
  expect_throw_naming<InvalidArgument>([] { build_schedule("tree", request(CollectiveOp::AllToAll, 4, 8)); },
                                       {"tree", "alltoall", "implements: allreduce, broadcast, reduce"});
  expect_throw_naming<InvalidArgument>(
      [] { build_schedule("hierarchical", request(CollectiveOp::AllToAll, 4, 8)); }, {"alltoall"});
}

TEST(Registry, DescriptionsAndOps) {
  const auto algorithms = collective_algorithms();
  EXPECT_EQ(algorithms.names(), (std::vector<std::string>{"ring", "tree", "rhd", "direct", "hierarchical"}));
  for (const auto& e : algorithms.entries()) {
    EXPECT_FALSE(e.description.empty());
    EXPECT_FALSE(e.value.ops.empty());
  }
  EXPECT_TRUE(algorithms.get("direct").ops.contains(CollectiveOp::AllToAll));
  EXPECT_FALSE(algorithms.get("hierarchical").ops.contains(CollectiveOp::AllToAll));
}

// ---- op names and bus bandwidth ----------------------------------------------------------------------

TEST(Ops, NamesRoundTrip) {
  const auto names = collective_op_names();
  EXPECT_EQ(names, (std::vector<std::string>{"allreduce", "reducescatter", "allgather", "broadcast", "reduce",
                                             "alltoall"}));
  for (const auto& name : names) EXPECT_EQ(to_string(parse_collective_op(name)), name);
  expect_throw_naming<UnknownName>([] { parse_collective_op("all_reduce"); }, {"all_reduce", "allreduce", "alltoall"});
}

TEST(Ops, BusBandwidthFactorsFollowNcclTests) {
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::AllReduce, 4), 1.5);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::AllReduce, 1), 0.0);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::ReduceScatter, 4), 0.75);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::AllGather, 8), 0.875);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::AllToAll, 2), 0.5);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::Broadcast, 16), 1.0);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::Reduce, 16), 1.0);
  EXPECT_THROW(busbw_factor(CollectiveOp::AllReduce, 0), InvalidArgument);
}

}  // namespace
