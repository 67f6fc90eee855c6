// The Plan's execution rules (plan_exec.hpp), without any backend: the readiness graph, the cursor,
// collective matching, representatives, spans and memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/plan_exec.hpp"

using namespace twinbed;

namespace {

PlanOp op_on(OpKind kind, StreamKind stream) {
  PlanOp op;
  op.kind = kind;
  op.stream = stream;
  return op;
}

std::vector<std::uint32_t> released(const ExecGraph& g, std::uint32_t i) {
  const auto r = g.released_by(i);
  return {r.begin(), r.end()};
}

// 0 compute, 1 compute (dep 0: also its FIFO predecessor), 2 collective on the collective stream
// (dep 0), 3 send (dep 1), 4 compute (dep 3), 5 collective (no dep: FIFO after 2), 6 recv (no dep).
Program sample_program() {
  Program p;
  p.add(op_on(OpKind::Compute, StreamKind::Compute));
  p.add(op_on(OpKind::Compute, StreamKind::Compute), {0});
  p.add(op_on(OpKind::Collective, StreamKind::Collective), {0});
  p.add(op_on(OpKind::Send, StreamKind::P2P), {1});
  p.add(op_on(OpKind::Compute, StreamKind::Compute), {3});
  p.add(op_on(OpKind::Collective, StreamKind::Collective));
  p.add(op_on(OpKind::Recv, StreamKind::P2P));
  return p;
}

TEST(ExecGraph, DependenciesAndFifoStreamsDeduplicated) {
  const ExecGraph g(sample_program());
  ASSERT_EQ(g.size(), 7u);
  EXPECT_EQ(released(g, 0), (std::vector<std::uint32_t>{1, 2}));  // dep and FIFO successor counted once
  EXPECT_EQ(released(g, 1), (std::vector<std::uint32_t>{3, 4}));  // its Send; op 4 by FIFO
  EXPECT_EQ(released(g, 2), (std::vector<std::uint32_t>{5}));     // FIFO on the collective stream
  EXPECT_EQ(released(g, 3), (std::vector<std::uint32_t>{4}));
  EXPECT_TRUE(released(g, 6).empty());
  const std::vector<std::uint32_t> waits = {0, 1, 1, 1, 2, 1, 0};
  for (std::uint32_t i = 0; i < 7; ++i) EXPECT_EQ(g.waits(i), waits[i]) << "op " << i;
}

TEST(ExecGraph, MergedNodesDropTheirInnerEdges) {
  Program p;
  p.add(op_on(OpKind::Compute, StreamKind::Compute));
  p.add(op_on(OpKind::Compute, StreamKind::Compute), {0});
  p.add(op_on(OpKind::Collective, StreamKind::Collective), {1});
  p.add(op_on(OpKind::Compute, StreamKind::Compute), {2});
  const ExecGraph g(p, {0, 0, 1, 2});
  ASSERT_EQ(g.size(), 3u);
  EXPECT_EQ(released(g, 0), (std::vector<std::uint32_t>{1, 2}));
  EXPECT_EQ(released(g, 1), (std::vector<std::uint32_t>{2}));
  EXPECT_EQ(g.waits(0), 0u);
  EXPECT_EQ(g.waits(2), 2u);
  EXPECT_THROW(ExecGraph(p, {0, 2, 2, 3}), InvalidArgument);  // skips a node
  EXPECT_THROW(ExecGraph(p, {0, 1, 1, 2}), InvalidArgument);  // merges two streams
  EXPECT_THROW(ExecGraph(p, {0, 0, 1}), InvalidArgument);     // wrong size
}

TEST(RankCursor, ReleasesOpsAsTheirPredecessorsFinish) {
  const Program p = sample_program();
  const ExecGraph g(p);
  RankCursor c(g);
  std::vector<std::uint32_t> ready;
  c.start([&](std::uint32_t i) { ready.push_back(i); });
  EXPECT_EQ(ready, (std::vector<std::uint32_t>{0, 6}));
  ready.clear();
  c.finish(0, [&](std::uint32_t i) { ready.push_back(i); });
  EXPECT_EQ(ready, (std::vector<std::uint32_t>{1, 2}));
  EXPECT_TRUE(c.finished(0));
  EXPECT_EQ(c.waiting_for(4), 2u);
  ready.clear();
  c.finish(1, [&](std::uint32_t i) { ready.push_back(i); });
  EXPECT_EQ(ready, (std::vector<std::uint32_t>{3}));  // op 4 still waits for the Send
  EXPECT_EQ(c.waiting_for(4), 1u);
  ready.clear();
  for (std::uint32_t i : {3u, 2u, 4u, 5u, 6u}) c.finish(i, [&](std::uint32_t j) { ready.push_back(j); });
  EXPECT_EQ(ready, (std::vector<std::uint32_t>{4, 5}));
  EXPECT_TRUE(c.all_finished());
  EXPECT_EQ(c.finished_count(), 7u);
}

TEST(ExecRules, WhichOpsFinishWhenPostedAndWhichRecordSpans) {
  EXPECT_TRUE(is_fifo(StreamKind::Compute));
  EXPECT_TRUE(is_fifo(StreamKind::Collective));
  EXPECT_FALSE(is_fifo(StreamKind::P2P));
  for (OpKind k : {OpKind::Alloc, OpKind::Free, OpKind::Send}) EXPECT_TRUE(finishes_when_posted(k)) << to_string(k);
  for (OpKind k : {OpKind::Compute, OpKind::Collective, OpKind::Recv}) EXPECT_FALSE(finishes_when_posted(k)) << to_string(k);
  for (OpKind k : {OpKind::Compute, OpKind::Collective, OpKind::Send}) EXPECT_TRUE(records_span(k)) << to_string(k);
  for (OpKind k : {OpKind::Alloc, OpKind::Free, OpKind::Recv}) EXPECT_FALSE(records_span(k)) << to_string(k);
}

TEST(CollectiveMatcher, CompletesWhenTheLastExpectedMemberArrives) {
  CollectiveMatcher<std::pair<int, std::uint32_t>> m;
  const CollectiveInstance a{GroupKind::Dp, 0, 3}, b{GroupKind::Dp, 0, 4}, c{GroupKind::Tp, 0, 3};
  EXPECT_TRUE(m.arrive(a, 3, {2, 10}).empty());
  EXPECT_TRUE(m.arrive(b, 3, {0, 11}).empty());  // another tag: another instance
  EXPECT_TRUE(m.arrive(c, 3, {0, 12}).empty());  // another kind: another instance
  EXPECT_TRUE(m.arrive(a, 3, {0, 10}).empty());
  EXPECT_EQ(m.pending(), 3u);
  const auto members = m.arrive(a, 3, {1, 10});
  EXPECT_EQ(members, (std::vector<std::pair<int, std::uint32_t>>{{2, 10}, {0, 10}, {1, 10}}));  // arrival order
  EXPECT_EQ(m.pending(), 2u);
  EXPECT_EQ(m.arrive(a, 1, {5, 1}).size(), 1u);  // a group of one completes at once
}

Plan two_program_plan() {
  Layout l;
  l.dp = 2;
  l.tp = 2;
  l.pp = 2;
  l.micro_batch = 1;
  l.global_batch = 4;
  return build_plan(gpt_model("tiny", 2, 64, 4, 32, 128), l, ClusterShape{8, 8});
}

TEST(ExecRules, RepresentativesAreEachProgramsLowestRank) {
  const Plan plan = two_program_plan();
  ASSERT_EQ(plan.programs.size(), 2u);
  EXPECT_EQ(representatives(plan), (std::vector<int>{0, 4}));
  Plan unused = plan;
  unused.programs.push_back(Program{});
  EXPECT_EQ(representatives(unused), (std::vector<int>{0, 4, -1}));
}

TEST(ExecRules, ACollectiveJoinsItsGroupsInstanceOfItsTag) {
  const Plan plan = two_program_plan();
  const Program& p = plan.program(5);
  for (const PlanOp& op : p.ops) {
    if (op.kind != OpKind::Collective) continue;
    const CollectiveInstance c = collective_instance(plan, 5, op);
    EXPECT_EQ(c.group, op.group);
    EXPECT_EQ(c.tag, op.tag);
    EXPECT_EQ(c.group_index, plan.group_set(op.group).group_of_rank[5]);
  }
  EXPECT_THROW(collective_instance(plan, 5, op_on(OpKind::Compute, StreamKind::Compute)), InvalidArgument);
  EXPECT_NO_THROW(check_collective_streams(plan, "test backend"));
  // Rank 1, a tensor-parallel peer of rank 0, gets a program of its own whose first tp collective sits
  // on the other stream.
  Plan moved = plan;
  moved.programs.push_back(moved.programs[0]);
  moved.program_of_rank[1] = 2;
  for (PlanOp& op : moved.programs[2].ops) {
    if (op.kind == OpKind::Collective && op.group == GroupKind::Tp) {
      op.stream = op.stream == StreamKind::Compute ? StreamKind::Collective : StreamKind::Compute;
      break;
    }
  }
  try {
    check_collective_streams(moved, "test backend");
    ADD_FAILURE() << "no exception";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ranks 0 and 1 of one tp group"), std::string::npos) << msg;
    EXPECT_NE(msg.find("the test backend needs"), std::string::npos) << msg;
  }
}

TEST(ExecRules, ASpanCarriesItsOpsFieldsAndSpansSortCanonically) {
  PlanOp c = op_on(OpKind::Compute, StreamKind::Compute);
  c.span = SpanKind::Gemm;
  c.name = 3;
  c.micro_batch = 2;
  c.bytes = 99;  // a compute op's bytes are not communication
  const Span s = span_for(4, 7, c, Time::us(1), Time::us(3), 1e9);
  EXPECT_EQ(s.rank, 4);
  EXPECT_EQ(s.op, 7);
  EXPECT_EQ(s.stream, StreamKind::Compute);
  EXPECT_EQ(s.kind, SpanKind::Gemm);
  EXPECT_EQ(s.name, 3u);
  EXPECT_EQ(s.micro_batch, 2);
  EXPECT_EQ(s.start, Time::us(1));
  EXPECT_EQ(s.end, Time::us(3));
  EXPECT_EQ(s.flops, 1e9);
  EXPECT_EQ(s.bytes, 0);
  PlanOp send = op_on(OpKind::Send, StreamKind::P2P);
  send.span = SpanKind::SendRecv;
  send.bytes = 1024;
  const Span m = span_for(1, 0, send, Time(), Time::us(2), 5);
  EXPECT_EQ(m.bytes, 1024);
  EXPECT_EQ(m.flops, 0);

  std::vector<Span> spans = {s, m};
  Span later = m;
  later.start = Time::us(1);
  Span same_start = m;
  same_start.end = Time::us(1);
  spans.push_back(later);
  spans.push_back(same_start);
  sort_spans(spans);
  EXPECT_EQ(spans[0].rank, 1);
  EXPECT_EQ(spans[0].end, Time::us(1));  // same start: the earlier end first
  EXPECT_EQ(spans[1].end, Time::us(2));
  EXPECT_EQ(spans[2].start, Time::us(1));
  EXPECT_EQ(spans[3].rank, 4);
}

// Grouping by rank before sorting each rank's spans gives exactly the order of one sort by span_before,
// ties and all.
TEST(ExecRules, SortSpansGivesTheOrderOfOneSort) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(0, 3);
  std::vector<Span> spans;
  for (int k = 0; k < 2000; ++k) {
    Span s;
    s.rank = small(rng) * 3;  // ranks 0, 3, 6, 9: some ranks have none
    s.start = Time::us(small(rng));
    s.end = s.start + Time::us(small(rng));
    s.stream = small(rng) % 2 == 0 ? StreamKind::Compute : StreamKind::Collective;
    s.name = static_cast<std::uint32_t>(small(rng));
    s.micro_batch = small(rng) - 1;
    s.op = small(rng);
    spans.push_back(s);
  }
  std::vector<Span> expected = spans;
  std::stable_sort(expected.begin(), expected.end(), span_before);
  sort_spans(spans);
  EXPECT_EQ(spans, expected);  // equal spans are interchangeable: they compare equal in every field

  std::vector<Span> bad(1);
  bad[0].rank = -1;
  EXPECT_THROW(sort_spans(bad), InvalidArgument);
}

TEST(ExecRules, MemoryFollowsAllocsAndFreesOutsideTheArena) {
  Program p;
  p.add(alloc_op(TensorClass::Activation, 0, 100, 0));
  p.add(alloc_op(TensorClass::Activation, 1, 50, 0));
  PlanOp free0 = p.ops[0];
  free0.kind = OpKind::Free;
  p.add(free0);
  EXPECT_EQ(memory_at_start(p), 0);
  EXPECT_EQ(memory_delta(p, p.ops[0]), 100);
  EXPECT_EQ(memory_delta(p, p.ops[2]), -100);
  EXPECT_EQ(memory_delta(p, op_on(OpKind::Compute, StreamKind::Compute)), 0);
  p.arena.size = 4096;
  p.arena.offset_of_tensor = {0, -1};  // tensor 0 in the arena, tensor 1 on its own
  EXPECT_EQ(memory_at_start(p), 4096);
  EXPECT_EQ(memory_delta(p, p.ops[0]), 0);
  EXPECT_EQ(memory_delta(p, p.ops[1]), 50);
  EXPECT_EQ(memory_delta(p, p.ops[2]), 0);

  MemoryTimeline t(3);
  t.change(Time(), 4096);
  t.change(Time::us(1), 50);
  t.change(Time::us(1), -20);  // same time: one sample, the bytes after both
  t.change(Time::us(2), 0);
  EXPECT_EQ(t.live(), 4126);
  const std::vector<MemorySample> want = {{3, Time(), 4096}, {3, Time::us(1), 4126}, {3, Time::us(2), 4126}};
  EXPECT_EQ(t.samples(), want);
  EXPECT_EQ(t.take(), want);
}

}  // namespace
