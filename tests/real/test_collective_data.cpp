// The data side of the real backend, without MPI: the element rule, the crafted inputs and expected
// results, checked by running every registered schedule on an in-memory twin of the MPI executor
// (same contract: sends read start-of-round data, reduce = add, else copy). The MPI tests then only
// have to show that the MPI executor behaves like this twin.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/real/collective_data.hpp"
#include "twinbed/real/collectives.hpp"

namespace twinbed::real {
namespace {

// Wrong floats summed over ranks after executing `schedule` in memory.
std::int64_t run_in_memory(const Schedule& schedule) {
  const CollectiveRequest& req = schedule.request();
  const std::vector<ChunkElements> layout = chunk_elements(schedule.chunks());
  std::vector<std::vector<float>> ws(static_cast<std::size_t>(req.ranks));
  for (int r = 0; r < req.ranks; ++r) fill_inputs(req, r, layout, ws[static_cast<std::size_t>(r)]);
  std::vector<Transfer> transfers;
  std::vector<std::vector<float>> sent;
  for (int k = 0; k < schedule.num_rounds(); ++k) {
    schedule.round(k, transfers);
    sent.clear();
    for (const Transfer& t : transfers) {  // every send reads the round-start state
      const ChunkElements& c = layout[static_cast<std::size_t>(t.chunk)];
      const float* from = ws[static_cast<std::size_t>(t.src)].data() + c.offset;
      sent.emplace_back(from, from + c.count);
    }
    for (std::size_t i = 0; i < transfers.size(); ++i) {
      const Transfer& t = transfers[i];
      float* own = ws[static_cast<std::size_t>(t.dst)].data() + layout[static_cast<std::size_t>(t.chunk)].offset;
      for (std::size_t e = 0; e < sent[i].size(); ++e) own[e] = t.reduce ? own[e] + sent[i][e] : sent[i][e];
    }
  }
  std::int64_t wrong = 0;
  for (int r = 0; r < req.ranks; ++r) wrong += count_wrong(req, r, layout, ws[static_cast<std::size_t>(r)]);
  return wrong;
}

// The same, executed from every rank's lowered rounds (lower_schedule) the way the executors do, in the
// worst order they allow: a rank's in-place receives land before its sends read the workspace (an
// MPI_Isend or ncclSend may read while a receive writes), in reverse transfer order; then the sends'
// data is applied to the receives that go through scratch, in order. A receive marked in_place that
// should not be (a chunk the rank also sends, or writes twice, or reduces) gives wrong data here.
// Also checks that each transfer of a round is lowered once at its source and once at its destination.
std::int64_t run_lowered(const Schedule& schedule) {
  const CollectiveRequest& req = schedule.request();
  const int n = req.ranks;
  std::vector<RankRounds> lowered;
  for (int r = 0; r < n; ++r) lowered.push_back(lower_schedule(schedule, r));
  const std::vector<ChunkElements>& layout = lowered[0].layout;
  std::vector<std::vector<float>> ws(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) fill_inputs(req, r, layout, ws[static_cast<std::size_t>(r)]);
  std::vector<Transfer> transfers;
  for (int k = 0; k < schedule.num_rounds(); ++k) {
    schedule.round(k, transfers);
    std::size_t sends = 0, recvs = 0;
    for (int r = 0; r < n; ++r) {
      sends += lowered[static_cast<std::size_t>(r)].rounds[static_cast<std::size_t>(k)].sends.size();
      recvs += lowered[static_cast<std::size_t>(r)].rounds[static_cast<std::size_t>(k)].recvs.size();
    }
    EXPECT_EQ(sends, transfers.size()) << "round " << k;
    EXPECT_EQ(recvs, transfers.size()) << "round " << k;
    const std::vector<std::vector<float>> start = ws;  // what each sender holds when the round begins
    // The k-th send from s to d carries the data of the k-th receive at d from s: pair them by order.
    auto sent_chunk = [&](int src, int dst, std::size_t nth) {
      std::size_t seen = 0;
      for (const RankTransfer& t : lowered[static_cast<std::size_t>(src)].rounds[static_cast<std::size_t>(k)].sends)
        if (t.peer == dst && seen++ == nth) return t;
      ADD_FAILURE() << "round " << k << ": no send " << src << " -> " << dst << " #" << nth;
      return RankTransfer{};
    };
    // 1. In-place receives land, each with its sender's round-start data, in reverse order.
    for (int r = 0; r < n; ++r) {
      const RankRound& round = lowered[static_cast<std::size_t>(r)].rounds[static_cast<std::size_t>(k)];
      std::vector<std::size_t> nth(round.recvs.size());
      std::vector<std::size_t> per_peer(static_cast<std::size_t>(n), 0);
      for (std::size_t i = 0; i < round.recvs.size(); ++i) nth[i] = per_peer[static_cast<std::size_t>(round.recvs[i].peer)]++;
      for (std::size_t i = round.recvs.size(); i-- > 0;) {
        const RankTransfer& t = round.recvs[i];
        if (!t.in_place) continue;
        const RankTransfer s = sent_chunk(t.peer, r, nth[i]);
        EXPECT_EQ(s.chunk, t.chunk);
        const float* from = start[static_cast<std::size_t>(t.peer)].data() + s.offset;
        std::copy(from, from + t.count, ws[static_cast<std::size_t>(r)].data() + t.offset);
      }
    }
    // 2. Sends read the workspace as it now is; 3. receives through scratch apply them, in order.
    std::vector<std::vector<std::vector<float>>> out(static_cast<std::size_t>(n));  // [src][i]: send i's data
    for (int r = 0; r < n; ++r)
      for (const RankTransfer& t : lowered[static_cast<std::size_t>(r)].rounds[static_cast<std::size_t>(k)].sends) {
        const float* from = ws[static_cast<std::size_t>(r)].data() + t.offset;
        out[static_cast<std::size_t>(r)].emplace_back(from, from + t.count);
      }
    for (int r = 0; r < n; ++r) {
      const RankRound& round = lowered[static_cast<std::size_t>(r)].rounds[static_cast<std::size_t>(k)];
      std::vector<std::size_t> per_peer(static_cast<std::size_t>(n), 0);
      for (const RankTransfer& t : round.recvs) {
        const std::size_t nth = per_peer[static_cast<std::size_t>(t.peer)]++;
        if (t.in_place) continue;
        std::size_t index = 0, seen = 0;
        const auto& src_sends = lowered[static_cast<std::size_t>(t.peer)].rounds[static_cast<std::size_t>(k)].sends;
        while (index < src_sends.size() && !(src_sends[index].peer == r && seen++ == nth)) ++index;
        if (index == src_sends.size()) {
          ADD_FAILURE() << "round " << k << ": no send " << t.peer << " -> " << r;
          continue;
        }
        const std::vector<float>& in = out[static_cast<std::size_t>(t.peer)][index];
        float* own = ws[static_cast<std::size_t>(r)].data() + t.offset;
        for (std::size_t e = 0; e < in.size(); ++e) own[e] = t.reduce ? own[e] + in[e] : in[e];
      }
    }
  }
  std::int64_t wrong = 0;
  for (int r = 0; r < n; ++r) wrong += count_wrong(req, r, layout, ws[static_cast<std::size_t>(r)]);
  return wrong;
}

std::vector<Bytes> sizes_for(CollectiveOp op, int n) {
  const bool per_rank = op == CollectiveOp::ReduceScatter || op == CollectiveOp::AllGather || op == CollectiveOp::AllToAll;
  if (per_rank) return {0, 4 * static_cast<Bytes>(n), 4 * static_cast<Bytes>(n) * 37, 4 * static_cast<Bytes>(n) * 70001};
  // Floats not divisible by the ranks, and one size over 2 MiB so pipelines cut several chunks.
  return {0, 4, 1028, 2 * MiB + 12};
}

TEST(ChunkElements, DealsEachBlocksFloatsByBytePosition) {
  // 1024 bytes in 3 chunks of 342, 341, 341 bytes: floats [0, 85), [85, 170), [170, 256).
  const std::vector<ChunkElements> got = chunk_elements({{342, 0}, {341, 0}, {341, 0}});
  EXPECT_EQ(got, (std::vector<ChunkElements>{{0, 0, 85, 0}, {0, 85, 85, 85}, {0, 170, 86, 170}}));
  // Blocks are dealt independently, whatever the order of their chunks.
  const std::vector<ChunkElements> two = chunk_elements({{6, 1}, {8, 0}, {2, 1}});
  EXPECT_EQ(two, (std::vector<ChunkElements>{{1, 0, 1, 0}, {0, 0, 2, 1}, {1, 1, 1, 3}}));
}

TEST(ChunkElements, RejectsBlocksThatAreNotWholeFloats) {
  EXPECT_THROW(chunk_elements({{3, 0}, {3, 0}}), InvalidArgument);
  EXPECT_THROW(chunk_elements({{4, 0}, {6, 1}}), InvalidArgument);
  EXPECT_THROW(chunk_elements({{-4, 0}}), InvalidArgument);
}

TEST(CheckRequestSize, FollowsTheOpsBlocks) {
  EXPECT_NO_THROW(check_request_size({CollectiveOp::AllReduce, 3, 1028, 0, 0}));
  EXPECT_THROW(check_request_size({CollectiveOp::AllReduce, 3, 1026, 0, 0}), InvalidArgument);
  EXPECT_NO_THROW(check_request_size({CollectiveOp::AllGather, 3, 36, 0, 0}));
  EXPECT_THROW(check_request_size({CollectiveOp::AllGather, 3, 1028, 0, 0}), InvalidArgument);
  EXPECT_THROW(check_request_size({CollectiveOp::AllToAll, 4, 40, 0, 0}), InvalidArgument);
  EXPECT_THROW(check_request_size({CollectiveOp::Broadcast, 0, 4, 0, 0}), InvalidArgument);
}

// The one size rule: its unit, and sizes rounded up (the CPU backend) and down (the sweeps) to it, are
// always accepted by check_request_size.
TEST(SizeUnit, RoundingGivesSizesTheCheckAccepts) {
  EXPECT_EQ(size_unit(CollectiveOp::AllReduce, 3), 4);
  EXPECT_EQ(size_unit(CollectiveOp::Broadcast, 3), 4);
  EXPECT_EQ(size_unit(CollectiveOp::Reduce, 3), 4);
  EXPECT_EQ(size_unit(CollectiveOp::ReduceScatter, 3), 12);
  EXPECT_EQ(size_unit(CollectiveOp::AllGather, 3), 12);
  EXPECT_EQ(size_unit(CollectiveOp::AllToAll, 3), 12);
  EXPECT_EQ(round_up_to_unit(CollectiveOp::AllReduce, 3, 1026), 1028);
  EXPECT_EQ(round_up_to_unit(CollectiveOp::AllReduce, 3, 1028), 1028);
  EXPECT_EQ(round_up_to_unit(CollectiveOp::AllGather, 3, 1028), 1032);
  EXPECT_EQ(round_up_to_unit(CollectiveOp::AllGather, 3, 0), 0);
  EXPECT_EQ(round_down_to_unit(CollectiveOp::AllGather, 3, 1028), 1020);
  EXPECT_EQ(round_down_to_unit(CollectiveOp::AllGather, 3, 5), 12);  // at least one unit
  for (CollectiveOp op : {CollectiveOp::AllReduce, CollectiveOp::ReduceScatter, CollectiveOp::AllGather,
                          CollectiveOp::Broadcast, CollectiveOp::Reduce, CollectiveOp::AllToAll}) {
    for (int n : {1, 2, 3, 7, 8}) {
      for (Bytes b : {Bytes{0}, Bytes{1}, Bytes{5}, Bytes{1000}, Bytes{1 << 20}, Bytes{12345679}}) {
        EXPECT_NO_THROW(check_request_size({op, n, round_up_to_unit(op, n, b), 0, 0})) << to_string(op) << " " << n << " " << b;
        EXPECT_NO_THROW(check_request_size({op, n, round_down_to_unit(op, n, b), 0, 0})) << to_string(op) << " " << n << " " << b;
        EXPECT_GE(round_up_to_unit(op, n, b), b);
        EXPECT_LT(round_up_to_unit(op, n, b) - b, size_unit(op, n));
      }
    }
  }
}

TEST(CraftedInputs, AreSmallPositiveIntegersSoSumsAreExact) {
  for (int r = 0; r < 50; ++r)
    for (int b = 0; b < 5; ++b)
      for (std::int64_t i = 0; i < 100; ++i) {
        const float v = input_value(r, b, i);
        EXPECT_GE(v, 1.0f);
        EXPECT_LE(v, 23.0f);
        EXPECT_EQ(v, static_cast<float>(static_cast<int>(v)));
      }
  const CollectiveRequest ar{CollectiveOp::AllReduce, 3, 64, 0, 0};
  EXPECT_EQ(expected_value(ar, 0, 5), input_value(0, 0, 5) + input_value(1, 0, 5) + input_value(2, 0, 5));
  const CollectiveRequest a2a{CollectiveOp::AllToAll, 3, 36, 0, 0};
  EXPECT_EQ(expected_value(a2a, 1 * 3 + 2, 4), input_value(1, 5, 4));  // what rank 1 sent to rank 2
  EXPECT_TRUE(checked_at_end(a2a, 2, 5));
  EXPECT_FALSE(checked_at_end(a2a, 1, 5));
  EXPECT_TRUE(holds_at_start(a2a, 1, 5));
}

TEST(CountWrong, SeesAPoisonedFloatAndOnlyWhereChecked) {
  const CollectiveRequest reduce{CollectiveOp::Reduce, 2, 40, 1, 0};
  const std::vector<ChunkElements> layout = chunk_elements({{40, 0}});
  std::vector<float> ws;
  fill_inputs(reduce, 1, layout, ws);
  EXPECT_EQ(count_wrong(reduce, 1, layout, ws), 10);  // the root holds only its own contribution
  EXPECT_EQ(count_wrong(reduce, 0, layout, ws), 0);   // rank 0 is not checked for reduce
  for (std::int64_t i = 0; i < 10; ++i) ws[static_cast<std::size_t>(i)] = expected_value(reduce, 0, i);
  EXPECT_EQ(count_wrong(reduce, 1, layout, ws), 0);
  ws[7] = kPoison;
  EXPECT_EQ(count_wrong(reduce, 1, layout, ws), 1);
}

// The twin executor over every algorithm x op x a few rank counts (incl. non-powers of two) and sizes.
TEST(InMemoryTwin, EveryAlgorithmAndOpEndsWithExactlyTheExpectedData) {
  const auto registry = collective_algorithms();
  for (const auto& entry : registry.entries()) {
    for (CollectiveOp op : entry.value.ops) {
      for (int n : {1, 2, 3, 4, 5, 6, 8}) {
        std::vector<int> hosts = {0};
        if (entry.name == "hierarchical") {
          hosts.clear();
          for (int g = 1; g <= n; ++g)
            if (n % g == 0) hosts.push_back(g);
        }
        for (int g : hosts) {
          for (Bytes size : sizes_for(op, n)) {
            if (size > MiB && n > 4) continue;  // keep the test quick
            const CollectiveRequest req{op, n, size, n - 1, g};
            SCOPED_TRACE(entry.name + " " + to_string(op) + " n=" + std::to_string(n) + " ranks_per_host=" +
                         std::to_string(g) + " bytes=" + std::to_string(size));
            const auto schedule = entry.value.build(req);
            EXPECT_EQ(run_in_memory(*schedule), 0);
            EXPECT_EQ(run_lowered(*schedule), 0);
          }
        }
      }
    }
  }
}

TEST(InMemoryTwin, ABrokenScheduleIsCaught) {
  // All-gather on 3 ranks sending straight to everyone, with 0 -> 1 left out: rank 1 misses block 0.
  const CollectiveRequest req{CollectiveOp::AllGather, 3, 3 * 40, 0, 0};
  std::vector<Transfer> round;
  for (int s = 0; s < 3; ++s)
    for (int d = 0; d < 3; ++d)
      if (s != d && !(s == 0 && d == 1)) round.push_back({s, d, s, false});
  const ExplicitSchedule broken(req, "broken", {{40, 0}, {40, 1}, {40, 2}}, {round});
  EXPECT_EQ(run_in_memory(broken), 10);
}

// The lowering's in-place rule on a hand-written round of 3 ranks, chunks of 8 bytes (2 floats):
// rank 1 receives chunk 0 from 0 (a lone overwrite: in place), chunk 1 from 2 while sending chunk 1 to 0
// (not in place), and chunk 2 twice, from 0 and from 2 (not in place); rank 0 reduces chunk 1 from 1.
TEST(LowerSchedule, ReceivesLandInPlaceOnlyWhenNothingElseTouchesTheChunk) {
  const CollectiveRequest req{CollectiveOp::AllReduce, 3, 24, 0, 0};
  const std::vector<Transfer> round = {{0, 1, 0, false}, {2, 1, 1, false}, {1, 0, 1, true},
                                       {0, 1, 2, false}, {2, 1, 2, false}};
  const ExplicitSchedule s(req, "hand", {{8, 0}, {8, 0}, {8, 0}}, {round, {}});
  const RankRounds one = lower_schedule(s, 1);
  EXPECT_EQ(one.layout, chunk_elements(s.chunks()));
  ASSERT_EQ(one.rounds.size(), 2u);
  EXPECT_TRUE(one.rounds[1].recvs.empty() && one.rounds[1].sends.empty());
  const std::vector<RankTransfer> recvs = {{0, 0, 0, 2, false, true},
                                           {2, 1, 2, 2, false, false},
                                           {0, 2, 4, 2, false, false},
                                           {2, 2, 4, 2, false, false}};
  EXPECT_EQ(one.rounds[0].recvs, recvs);
  EXPECT_EQ(one.rounds[0].sends, (std::vector<RankTransfer>{{0, 1, 2, 2, true, false}}));
  const RankRounds zero = lower_schedule(s, 0);
  EXPECT_EQ(zero.rounds[0].recvs, (std::vector<RankTransfer>{{1, 1, 2, 2, true, false}}));  // a reduce: never
  const ExplicitSchedule bad(req, "bad", {{8, 0}, {8, 0}, {8, 0}}, {{{0, 3, 0, false}}});
  EXPECT_THROW(lower_schedule(bad, 0), InvalidArgument);
}

TEST(AlgorithmNames, AreTheRegistrysAndNative) {
  std::vector<std::string> want = collective_algorithms().names();
  want.emplace_back("native");
  EXPECT_EQ(real_collective_algorithm_names(), want);
}

}  // namespace
}  // namespace twinbed::real
