#include <gtest/gtest.h>

#include "twinbed/core/error.hpp"
#include "twinbed/core/plan_edit.hpp"

using namespace twinbed;

namespace {

PlanOp compute(std::int32_t cost = 0) {
  PlanOp op;
  op.kind = OpKind::Compute;
  op.cost = cost;
  return op;
}

PlanOp coll(GroupKind g, std::int64_t tag) {
  PlanOp op = collective_op(CollectiveOp::AllReduce, g, 64, StreamKind::Collective);
  op.tag = tag;
  return op;
}

std::vector<std::uint32_t> deps(const Program& p, std::size_t i) { return {p.deps_of(i), p.deps_of(i) + p.num_deps(i)}; }

// a(0) <- b(1) <- c(2); d(3) depends on a and c.
Program chain() {
  Program p;
  p.add(compute(0));
  p.add(compute(1), {0});
  p.add(compute(2), {1});
  p.add(compute(3), {0, 2});
  return p;
}

}  // namespace

TEST(ProgramEditor, UntouchedEditIsTheIdentity) {
  const Program p = chain();
  EXPECT_EQ(ProgramEditor(p).finish(), p);
}

TEST(ProgramEditor, DroppingAnOpKeepsTheOrderThroughIt) {
  const Program p = chain();
  ProgramEditor e(p);
  e.remove(1);
  const Program q = e.finish();
  ASSERT_EQ(q.size(), 3u);
  EXPECT_EQ(q.ops[1].cost, 2);
  EXPECT_EQ(deps(q, 1), (std::vector<std::uint32_t>{0}));     // c now waits for a directly
  EXPECT_EQ(deps(q, 2), (std::vector<std::uint32_t>{0, 1}));  // d: a and c, deduplicated
}

TEST(ProgramEditor, DroppingAChainResolvesTransitively) {
  const Program p = chain();
  ProgramEditor e(p);
  e.remove(1);
  e.remove(2);
  const Program q = e.finish();
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(deps(q, 1), (std::vector<std::uint32_t>{0}));
}

TEST(ProgramEditor, InsertsAtTheirPlacesWithTheirDependencies) {
  const Program p = chain();
  ProgramEditor e(p);
  const OpRef x = e.insert_before(2, compute(10), {OpRef::original(1)});
  const OpRef y = e.insert_after(2, compute(11), {OpRef::original(2), x});
  e.add_dep(OpRef::original(3), y);
  const OpRef z = e.append(compute(12), {OpRef::original(3)});
  e.added(z).micro_batch = 7;
  const Program q = e.finish();
  ASSERT_EQ(q.size(), 7u);
  std::vector<std::int32_t> costs;
  for (const PlanOp& op : q.ops) costs.push_back(op.cost);
  EXPECT_EQ(costs, (std::vector<std::int32_t>{0, 1, 10, 2, 11, 3, 12}));
  EXPECT_EQ(deps(q, 2), (std::vector<std::uint32_t>{1}));
  EXPECT_EQ(deps(q, 4), (std::vector<std::uint32_t>{2, 3}));
  EXPECT_EQ(deps(q, 5), (std::vector<std::uint32_t>{0, 3, 4}));
  EXPECT_EQ(q.ops[6].micro_batch, 7);
}

TEST(ProgramEditor, ReplacedDependenciesAndDependents) {
  const Program p = chain();
  ProgramEditor e(p);
  EXPECT_EQ(e.dependents(0), (std::vector<std::uint32_t>{1, 3}));
  EXPECT_EQ(e.dependents(2), (std::vector<std::uint32_t>{3}));
  EXPECT_EQ(e.original_deps(3), (std::vector<OpRef>{OpRef::original(0), OpRef::original(2)}));
  EXPECT_TRUE(e.original_deps(0).empty());
  const OpRef x = e.insert_before(3, compute(9));
  e.set_deps(3, {x});
  EXPECT_EQ(e.original_deps(3).size(), 2u);  // the original program's, whatever the edits
  const Program q = e.finish();
  EXPECT_EQ(deps(q, 4), (std::vector<std::uint32_t>{3}));
}

TEST(ProgramEditor, ForwardDependenciesAreRejected) {
  const Program p = chain();
  ProgramEditor e(p);
  const OpRef late = e.append(compute(5));
  e.add_dep(OpRef::original(1), late);
  EXPECT_THROW(e.finish(), InvalidArgument);
}

// An added op placed before a dropped op it depends on (the dropped op stands for its own dependencies,
// which are not resolved yet there): an error, not a silently lost dependency or a library exception.
TEST(ProgramEditor, DependingOnALaterDroppedOpIsRejected) {
  const Program p = chain();
  ProgramEditor e(p);
  e.remove(1);
  e.remove(2);
  e.insert_before(2, compute(9), {OpRef::original(2)});
  EXPECT_THROW(e.finish(), InvalidArgument);
}

TEST(ProgramEditor, CollectiveTagsAreRenumberedPerKind) {
  Program p;
  p.add(coll(GroupKind::Dp, 0));
  p.add(coll(GroupKind::Tp, 0));
  p.add(coll(GroupKind::Dp, 1));
  p.add(coll(GroupKind::Dp, 2));
  ProgramEditor e(p);
  e.remove(2);
  e.insert_before(0, coll(GroupKind::Dp, 99));
  const Program q = e.finish();
  std::vector<std::int64_t> dp_tags;
  for (const PlanOp& op : q.ops) {
    if (op.group == GroupKind::Dp) dp_tags.push_back(op.tag);
  }
  EXPECT_EQ(dp_tags, (std::vector<std::int64_t>{0, 1, 2}));
  EXPECT_EQ(q.ops[2].tag, 0);  // the tp collective keeps its own sequence
}

TEST(ProgramEditor, ParameterTablesAndTensorIds) {
  Program p;
  PlanOp a;
  a.kind = OpKind::Alloc;
  a.tensor = 4;
  a.bytes = 8;
  p.add(a);
  p.params.push_back(ParamTensor{});
  ProgramEditor e(p);
  EXPECT_EQ(e.new_tensor_id(), 5);
  EXPECT_EQ(e.new_tensor_id(), 6);
  const std::int32_t t = e.add_param_tensor(ParamTensor{3, ParamKind::LoraA, 16, 2, 8});
  EXPECT_EQ(e.add_param_set({{t, 16}}), 0);
  const Program q = e.finish();
  ASSERT_EQ(q.params.size(), 2u);
  EXPECT_EQ(q.params[1].kind, ParamKind::LoraA);
  EXPECT_EQ(q.param_sets, (std::vector<std::vector<ParamSlice>>{{{1, 16}}}));
}

TEST(ProgramEditor, APlannedArenaMustComeLast) {
  Program p = chain();
  p.arena.size = 64;
  EXPECT_THROW(ProgramEditor{p}, InvalidArgument);
}

TEST(PlanTables, InternsEachNameAndCostOnce) {
  Plan plan;
  plan.names = {"a", "b"};
  OpCost c;
  c.name = "x";
  c.flops = 1;
  plan.costs = {c};
  PlanTables t(plan);
  EXPECT_EQ(t.name("b"), 1u);
  EXPECT_EQ(t.name("c"), 2u);
  EXPECT_EQ(t.name("c"), 2u);
  EXPECT_EQ(t.cost(c), 0);
  OpCost d = c;
  d.flops = 2;
  EXPECT_EQ(t.cost(d), 1);
  EXPECT_EQ(t.cost(d), 1);
  EXPECT_EQ(plan.names.size(), 3u);
  EXPECT_EQ(plan.costs.size(), 2u);
}
