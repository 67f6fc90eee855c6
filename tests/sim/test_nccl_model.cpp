// NCCL's tuner arithmetic (sim/nccl_model.hpp), checked against cases computed by hand from
// NVIDIA/nccl v2.20.3 src/graph/tuning.cc, and `auto` following NCCL's choice.
#include <gtest/gtest.h>

#include "twinbed/core/device.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/sim/group_collectives.hpp"
#include "twinbed/sim/nccl_model.hpp"

namespace twinbed::sim {
namespace {

std::vector<int> iota(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i;
  return v;
}

Topology h100_node() { return topo::nvswitch_node(8, {450 * GBps, Time::us(0.5)}, device_preset("h100")); }
Topology a100_node() { return topo::nvswitch_node(8, {300 * GBps, Time::us(0.5)}, device_preset("a100")); }

constexpr int kTree = 0, kRing = 1, kNvls = 2, kLL = 0, kLL128 = 1, kSimple = 2;

TEST(NcclModel, FabricOfAnH100NvswitchNode) {
  const auto f = nccl_fabric(h100_node(), iota(8));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->arch, GpuArch::Hopper);
  EXPECT_EQ(f->nodes, 1);
  EXPECT_TRUE(f->nvswitch);
  EXPECT_FALSE(f->has_nics);
  EXPECT_NEAR(f->nvlink_GBps, 18 * 20.6, 1e-9);  // 18 links at NCCL's SM90 figure
}

TEST(NcclModel, NotApplicableOffNvidiaPresets) {
  DeviceSpec cpu;  // "generic"
  EXPECT_FALSE(nccl_fabric(topo::single_switch(4, {10 * GBps, Time::us(1)}, cpu), iota(4)));
}

TEST(NcclModel, ChannelSearchOnAnH100Node) {
  const NcclFabric f = *nccl_fabric(h100_node(), iota(8));
  // Ring: 60 GB/s fits 6 times in 370.8, doubled to 12 channels of 30.
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Ring), (NcclGraph{12, 30, 30}));
  // Tree may use 8/7 of the link (423.8): 7 x 60, doubled.
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Tree), (NcclGraph{14, 30, 30}));
  // NVLS: one channel per GPU at the fastest speed 8 of which fit in 423.8: 50.
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Nvls), (NcclGraph{8, 50, 50}));
}

TEST(NcclModel, TunerTableForAllReduceOnAnH100Node) {
  const NcclFabric f = *nccl_fabric(h100_node(), iota(8));
  const NcclTable t = nccl_table(CollectiveOp::AllReduce, f);
  // Ring, 14 steps: LL 6.6 + 14 x 0.6; LL128 14 + 14 x 1.9; Simple 8.4 + 14 x 3.4.
  EXPECT_NEAR(t.latency_us[kRing][kLL], 15.0, 1e-9);
  EXPECT_NEAR(t.latency_us[kRing][kLL128], 40.6, 1e-9);
  EXPECT_NEAR(t.latency_us[kRing][kSimple], 56.0, 1e-9);
  // Ring bandwidth: 12 x 30 = 360 bus; LL capped at 87.7; LL128 x 0.92; times 8/14.
  EXPECT_NEAR(t.bandwidth_GBps[kRing][kLL], 87.7 * 8 / 14, 1e-9);
  EXPECT_NEAR(t.bandwidth_GBps[kRing][kLL128], 360 * 0.92 * 8 / 14, 1e-9);
  EXPECT_NEAR(t.bandwidth_GBps[kRing][kSimple], 360.0 * 8 / 14, 1e-9);
  // Tree: 2 x 7 NVLink hops; 420 bus x 0.92 (under 14 x 38.7); LL128 x 7/9; halved.
  EXPECT_NEAR(t.latency_us[kTree][kLL128], 14 + 2 * 7 * 1.25, 1e-9);
  EXPECT_NEAR(t.latency_us[kTree][kSimple], 2 * 7 * 28.0, 1e-9);
  EXPECT_NEAR(t.bandwidth_GBps[kTree][kLL128], 420 * 0.92 * 7 / 9 / 2, 1e-9);
  // NVLS: 23 us, 8 x 50 bus x 5/6; Simple only.
  EXPECT_NEAR(t.latency_us[kNvls][kSimple], 23.0, 1e-9);
  EXPECT_NEAR(t.bandwidth_GBps[kNvls][kSimple], 400.0 * 5 / 6, 1e-9);
  EXPECT_EQ(t.bandwidth_GBps[kNvls][kLL], 0);
}

TEST(NcclModel, TimesAndChoicesOnAnH100Node) {
  const NcclFabric f = *nccl_fabric(h100_node(), iota(8));
  const NcclTable t = nccl_table(CollectiveOp::AllReduce, f);
  // 1 MiB on NVLS: 23 us + 1048576 B / (333.3 GB/s = 333,333 B/us).
  EXPECT_EQ(*nccl_time(t, f, CollectiveOp::AllReduce, MiB, NcclAlgo::Nvls, NcclProto::Simple),
            Time::us(23 + 1048576 / (1000 * 400.0 * 5 / 6)));
  // Tree's correction at 1 MiB (log2(1 MiB / 64) = 14): LL128 x 0.6.
  EXPECT_EQ(*nccl_time(t, f, CollectiveOp::AllReduce, MiB, NcclAlgo::Tree, NcclProto::LL128),
            Time::us(31.5 + 1048576 / (1000 * 420 * 0.92 * 7 / 9 / 2 * 0.6)));
  const NcclChoice big = nccl_choose({CollectiveOp::AllReduce, 8, MiB}, f);
  EXPECT_EQ(big.name(), "nvls/Simple");
  // 8 KiB: ring LL (15 + 0.16 us) beats tree LL (15.2 + ...) and NVLS (23 + ...).
  EXPECT_EQ(nccl_choose({CollectiveOp::AllReduce, 8, 8 * KiB}, f).name(), "ring/LL");
  // Broadcast has only the ring.
  EXPECT_EQ(nccl_choose({CollectiveOp::Broadcast, 8, GiB}, f).algo, NcclAlgo::Ring);
  EXPECT_THROW(nccl_table(CollectiveOp::AllToAll, f), InvalidArgument);
}

TEST(NcclModel, A100NodeHasNoNvlsAndRunsRingForLargeAllReduce) {
  const NcclFabric f = *nccl_fabric(a100_node(), iota(8));
  EXPECT_NEAR(f.nvlink_GBps, 12 * 20.0, 1e-9);
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Nvls).channels, 0);
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Ring), (NcclGraph{12, 20, 20}));  // 6 x 40, doubled
  const NcclChoice c = nccl_choose({CollectiveOp::AllReduce, 8, GiB}, f);
  EXPECT_EQ(c.name(), "ring/Simple");
  EXPECT_EQ(c.time, Time::us(56 + 1073741824 / (1000 * 240.0 * 8 / 14)));
}

TEST(NcclModel, TwoDgxH100NodesUseTheNicsAndTheNetworkLatencies) {
  const Topology t = topo::dgx_h100_cluster(2);
  const NcclFabric f = *nccl_fabric(t, iota(16));
  EXPECT_EQ(f.nodes, 2);
  EXPECT_TRUE(f.has_nics);
  EXPECT_NEAR(f.nic_GBps, 50, 1e-9);
  // One channel per NIC at 48 GB/s (NCCL's SM90 network speeds), as many as the NVLink allows: 7.
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Ring), (NcclGraph{7, 48, 48}));
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Nvls).channels, 0);
  const NcclTable table = nccl_table(CollectiveOp::AllReduce, f);
  // 30 steps, 4 of them network hops (2 x nodes); intra hops cost at least 3 x 1 us network overhead.
  EXPECT_NEAR(table.latency_us[kRing][kSimple], 8.4 + 26 * 3.4 + 4 * 14.0, 1e-9);
  // Past 64 bytes per rank and channel, the ring's plateau: latency x 1.4.
  EXPECT_EQ(*nccl_time(table, f, CollectiveOp::AllReduce, GiB, NcclAlgo::Ring, NcclProto::Simple),
            Time::us((8.4 + 26 * 3.4 + 4 * 14.0) * 1.4 + 1073741824 / (1000 * 336.0 * 16 / 30)));
  // Tree: 2 x (7 NVLink hops + 1 network hop).
  EXPECT_NEAR(table.latency_us[kTree][kLL], 6.8 + 2 * (7 * 0.6 + 1 * 5.0), 1e-9);
}

TEST(NcclModel, AutoFollowsNcclOnGroupsAndFallsBackElsewhere) {
  const Topology t = h100_node();
  CollectiveSimulator sim(t, "flow");
  const GroupTiming g = time_group_collective({CollectiveOp::AllReduce, 8, MiB}, {iota(8)}, "auto", sim, t);
  EXPECT_EQ(g.algorithm, "nvls/Simple");
  EXPECT_EQ(g.max(), nccl_choose({CollectiveOp::AllReduce, 8, MiB}, *nccl_fabric(t, iota(8))).time);
  // All-to-all is not a tuned NCCL collective: the schedule cost model chooses.
  EXPECT_EQ(time_group_collective({CollectiveOp::AllToAll, 8, MiB}, {iota(8)}, "auto", sim, t).algorithm, "direct");
  // Deterministic.
  EXPECT_EQ(time_group_collective({CollectiveOp::AllReduce, 8, MiB}, {iota(8)}, "auto", sim, t), g);
}

TEST(NcclModel, SharedLinksStretchNcclTimes) {
  // Two 2-rank groups on a 2:1 fat-tree, each crossing the spine: the groups share uplinks, so each
  // takes longer than NCCL's idle-fabric price, by its ring's slowdown on the flow network.
  topo::FatTreeSpec spec;
  spec.nodes = 2;
  spec.gpus_per_node = 2;
  spec.nodes_per_leaf = 1;
  spec.spines = 1;
  spec.oversubscription = 2;
  spec.nvlink = {450 * GBps, Time::us(0.5)};
  spec.nic = {50 * GBps, Time::us(1)};
  spec.device = device_preset("h100");
  const Topology t = topo::fat_tree(spec);
  CollectiveSimulator sim(t, "flow");
  const CollectiveRequest req{CollectiveOp::AllReduce, 2, 64 * MiB};
  const GroupTiming both = time_group_collective(req, {{0, 2}, {1, 3}}, "auto", sim, t);
  const GroupTiming one = time_group_collective(req, {{0, 2}}, "auto", sim, t);
  EXPECT_EQ(one.max(), nccl_choose(req, *nccl_fabric(t, {0, 2})).time);
  EXPECT_GT(both.max(), one.max());
}

}  // namespace
}  // namespace twinbed::sim
