#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/sim/group_collectives.hpp"

using namespace twinbed;
using namespace twinbed::sim;

namespace {

// Each group's time when every group runs in one combined schedule: the reference that timing one
// group of alike groups must reproduce exactly.
std::vector<Time> combined(const CollectiveRequest& req, const std::vector<std::vector<int>>& groups,
                           const std::string& algorithm, const Topology& t) {
  CollectiveSimulator sim(t, "flow");
  const CollectiveTiming timing =
      sim.run(*map_schedule(std::shared_ptr<const Schedule>(build_schedule(algorithm, req)), groups, t.num_ranks()));
  std::vector<Time> out;
  for (const auto& g : groups) {
    Time done;
    for (int r : g) done = std::max(done, timing.rank_done[static_cast<std::size_t>(r)]);
    out.push_back(done);
  }
  return out;
}

// The data-parallel groups of a layout with `stride` ranks between a group's members.
std::vector<std::vector<int>> strided_groups(int ranks, int stride) {
  std::vector<std::vector<int>> groups(static_cast<std::size_t>(stride));
  for (int r = 0; r < ranks; ++r) groups[static_cast<std::size_t>(r % stride)].push_back(r);
  return groups;
}

}  // namespace

TEST(GroupCollectives, MappedGroupsRunConcurrently) {
  // Two disjoint pairs on one switch: they share nothing, so each takes what one pair alone takes.
  const Topology t = topo::single_switch(4, {100 * GBps, Time::us(1)}, device_preset("a100"));
  CollectiveSimulator sim(t, "flow");
  CollectiveRequest req{CollectiveOp::AllReduce, 2, 8 * MiB};
  const GroupTiming both = time_group_collective(req, {{0, 2}, {1, 3}}, "ring", sim, t);
  const GroupTiming one = time_group_collective(req, {{0, 2}}, "ring", sim, t);
  ASSERT_EQ(both.group_time.size(), 2u);
  EXPECT_TRUE(both.uniform());
  EXPECT_EQ(both.group_time[0], one.group_time[0]);
  EXPECT_GT(one.group_time[0], Time{});
  EXPECT_THROW(map_schedule(std::shared_ptr<const Schedule>(build_schedule("ring", req)), {{0, 0}}, 4), InvalidArgument);
}

TEST(GroupCollectives, AlikeGroupsAreTimedOnceAndAgreeWithTheCombinedRun) {
  // DGX nodes, rail-optimised: the groups {r, r+8, r+16, r+24} each stay on rail r, their own links.
  const Topology rail = topo::dgx_h100_cluster(4);
  const auto groups = strided_groups(32, 8);
  for (std::string algo : {"ring", "tree", "rhd"}) {
    const CollectiveRequest req{CollectiveOp::AllReduce, 4, 64 * MiB};
    const auto schedule = build_schedule(algo, req);
    CollectiveSimulator sim(rail, "flow");
    EXPECT_TRUE(groups_alike(*schedule, groups, sim.routes(), rail)) << algo;
    const GroupTiming timed = time_group_collective(req, groups, algo, sim, rail);
    EXPECT_EQ(timed.group_time, combined(req, groups, algo, rail)) << algo;
    EXPECT_GT(timed.max(), Time{}) << algo;
  }
}

TEST(GroupCollectives, GroupsSharingLinksAreTimedTogether) {
  // Two leaves of two 4-GPU nodes, 2:1 oversubscribed, one spine: the groups {r, r+8} all cross the
  // same leaf uplinks, so they slow each other down and must be timed in one run.
  const Topology t = topo::fat_tree({.nodes = 4,
                                     .gpus_per_node = 4,
                                     .nodes_per_leaf = 2,
                                     .spines = 1,
                                     .oversubscription = 2,
                                     .nvlink = {300 * GBps, Time::ns(500)},
                                     .nic = {25 * GBps, Time::us(2)},
                                     .device = device_preset("h100")});
  const auto groups = strided_groups(16, 8);
  const CollectiveRequest req{CollectiveOp::AllReduce, 2, 64 * MiB};
  const auto schedule = build_schedule("ring", req);
  CollectiveSimulator sim(t, "flow");
  EXPECT_FALSE(groups_alike(*schedule, groups, sim.routes(), t));
  const GroupTiming timed = time_group_collective(req, groups, "ring", sim, t);
  EXPECT_EQ(timed.group_time, combined(req, groups, "ring", t));
  // Sharing costs time: one group alone is faster.
  EXPECT_LT(time_group_collective(req, {groups.front()}, "ring", sim, t).max(), timed.max());
}
