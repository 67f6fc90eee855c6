// NCCL's tuner arithmetic (sim/nccl_model.hpp), checked against cases computed by hand from
// NVIDIA/nccl v2.20.3 src/graph/tuning.cc; the pipelined time of the chosen pair (channel trimming,
// slices, NVLS efficiency), computed by hand from the sizes cited in nccl_model.cpp; and `auto`
// following NCCL's choice; and the tables of a later release against those NCCL 2.29.2 printed.
#include <array>
#include <optional>
#include <string>
#include <vector>

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

// A pipelined time against its hand-computed value in us, to 10 ps (the sums round differently).
void expect_us(Time t, double us) { EXPECT_NEAR(t.microseconds(), us, 1e-5); }

TEST(NcclModel, FabricOfAnH100NvswitchNode) {
  const auto f = nccl_fabric(h100_node(), iota(8));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->arch, GpuArch::Hopper);
  EXPECT_EQ(f->nodes, 1);
  EXPECT_TRUE(f->nvswitch);
  EXPECT_FALSE(f->has_nics);
  EXPECT_NEAR(f->nvlink_GBps, 18 * 20.6, 1e-9);  // 18 links at NCCL's SM90 figure
}

// NCCL trims the NICs from a communicator whose ranks are all on one host (ncclTopoTrimSystem): a
// tensor-parallel group inside a DGX H100 node of a cluster searches as a lone NVSwitch node does.
TEST(NcclModel, AOneNodeCommunicatorSeesNoNics) {
  const Topology cluster = topo::dgx_h100_cluster(2);
  const NcclFabric tp = *nccl_fabric(cluster, iota(8));
  EXPECT_EQ(tp.nodes, 1);
  EXPECT_FALSE(tp.has_nics);
  EXPECT_EQ(nccl_graph(tp, NcclAlgo::Ring), nccl_graph(*nccl_fabric(h100_node(), iota(8)), NcclAlgo::Ring));
  EXPECT_EQ(nccl_graph(tp, NcclAlgo::Ring), (NcclGraph{12, 30, 30}));
  EXPECT_TRUE(nccl_fabric(cluster, iota(16))->has_nics);
}

TEST(NcclModel, NotApplicableOffNvidiaPresets) {
  DeviceSpec cpu;  // "generic"
  EXPECT_FALSE(nccl_fabric(topo::single_switch(4, {10 * GBps, Time::us(1)}, cpu), iota(4)));
}

TEST(NcclModel, ChannelSearchOnAnH100Node) {
  const NcclFabric f = *nccl_fabric(h100_node(), iota(8));
  // Ring: 60 GB/s fits 6 times in 370.8, doubled to 12 channels of 30.
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Ring), (NcclGraph{12, 30, 30}));
  // Tree: the ring's 12 channels, each the same chain, so the middle GPUs' links carry all 12: 30.
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Tree), (NcclGraph{12, 30, 30}));
  // NVLS: one channel per GPU; 8 of them fit in 423.8 at 50, but a GPU's link carries its 8 channels
  // plus its own head's again: 9 x 50 = 450 > 370.8, 9 x 40 = 360 fits: 40. The second pass raises
  // bwInter alone to 60 (NCCL logs 8 x 40/60 on DGX H100).
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Nvls), (NcclGraph{8, 40, 60}));
  // On 2 GPUs the tree's 12 channels alternate direction, 6 on each link: 60.
  EXPECT_EQ(nccl_graph(*nccl_fabric(h100_node(), iota(2)), NcclAlgo::Tree), (NcclGraph{12, 60, 60}));
}

// The search goes down its speed list while that gains bandwidth: on H100s whose NVSwitch links carry
// 100 GB/s (82.4 as NCCL counts it), 60 fits once (60 GB/s), 40 twice (80, kept), 30 twice (60), 24
// three times (72); 20 four times (80, a tie: the faster kept); 15 is under 0.49 of 40, where it stops.
// 2 x 40 doubles to 4 x 20; the tree takes the same 4 channels, which fit at 20.
TEST(NcclModel, ChannelSearchKeepsTheSpeedWithTheMostBandwidth) {
  const Topology t = topo::nvswitch_node(8, {100 * GBps, Time::us(0.5)}, device_preset("h100"));
  const NcclFabric f = *nccl_fabric(t, iota(8));
  EXPECT_NEAR(f.nvlink_GBps, 4 * 20.6, 1e-9);
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Ring), (NcclGraph{4, 20, 20}));
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Tree), (NcclGraph{4, 20, 20}));
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
  // Tree: 2 x 7 NVLink hops; 360 bus x 0.92 (under 12 x 38.7); LL128 x 7/9; halved.
  EXPECT_NEAR(t.latency_us[kTree][kLL128], 14 + 2 * 7 * 1.25, 1e-9);
  EXPECT_NEAR(t.latency_us[kTree][kSimple], 2 * 7 * 28.0, 1e-9);
  EXPECT_NEAR(t.bandwidth_GBps[kTree][kLL128], 360 * 0.92 * 7 / 9 / 2, 1e-9);
  // NVLS: 23 us, 8 x 40 bus x 5/6; Simple only.
  EXPECT_NEAR(t.latency_us[kNvls][kSimple], 23.0, 1e-9);
  EXPECT_NEAR(t.bandwidth_GBps[kNvls][kSimple], 320.0 * 5 / 6, 1e-9);
  EXPECT_EQ(t.bandwidth_GBps[kNvls][kLL], 0);
}

TEST(NcclModel, TimesAndChoicesOnAnH100Node) {
  const NcclFabric f = *nccl_fabric(h100_node(), iota(8));
  const NcclTable t = nccl_table(CollectiveOp::AllReduce, f);
  // The tuner: 1 MiB on NVLS: 23 us + 1048576 B / (266.7 GB/s = 266,667 B/us).
  EXPECT_EQ(*nccl_tuner_time(t, f, CollectiveOp::AllReduce, MiB, NcclAlgo::Nvls, NcclProto::Simple),
            Time::us(23 + 1048576 / (1000 * 320.0 * 5 / 6)));
  // Tree's correction at 1 MiB (log2(1 MiB / 64) = 14): LL128 x 0.6.
  const Time tree = Time::us(31.5 + 1048576 / (1000 * 360 * 0.92 * 7 / 9 / 2 * 0.6));
  EXPECT_EQ(*nccl_tuner_time(t, f, CollectiveOp::AllReduce, MiB, NcclAlgo::Tree, NcclProto::LL128), tree);
  // NCCL picks by the tuner and the op takes the pipelined time: 1 MiB over 16 NVLS channels is one
  // 65536-byte slice each, through 2 stages of 23/2 us at 272/16 = 17 GB/s (see NvlsPipeline...).
  const NcclChoice big = nccl_choose({CollectiveOp::AllReduce, 8, MiB}, f);
  EXPECT_EQ(big.name(), "nvls/Simple");
  EXPECT_EQ(big.channels, 16);
  EXPECT_EQ(big.tuner_time, Time::us(23 + 1048576 / (1000 * 320.0 * 5 / 6)));
  expect_us(big.time, 2 * (11.5 + 65536 / 17000.0));
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
  EXPECT_EQ(c.tuner_time, Time::us(56 + 1073741824 / (1000 * 240.0 * 8 / 14)));
  // Pipelined: 24 channels of ceil(1 GiB / 24) = 44,739,243 B; a step moves a 2 MiB chunk in two 1 MiB
  // slices; a loop takes 8 chunks of a channel, so ceil(44739243 / 16 MiB) = 3 loops (the last one's
  // chunks the 11,184,811 B left over 8 ranks), each 14 steps of 2 slices: 84 slices on every link,
  // each paying the 3.4 us NVLink hop; the link's bytes, the channel's 14/8 times over, at 240 / 24 =
  // 10 GB/s: 8.4 + 84 x 3.4 + 44739243 x 14 / 8 / 10000 us.
  EXPECT_EQ(nccl_pipeline(f, CollectiveOp::AllReduce, GiB, NcclAlgo::Ring, NcclProto::Simple),
            (NcclPipeline{24, 44739243, MiB, 84, 14}));
  expect_us(c.time, 8.4 + 84 * 3.4 + 44739243.0 * 14 / 8 / 10000);
  // 3.0% over the tuner's time: the slices' synchronisation.
  EXPECT_GT(c.time, c.tuner_time);
  EXPECT_LT(c.time.seconds(), 1.05 * c.tuner_time.seconds());
}

TEST(NcclModel, CommunicatorChannels) {
  const NcclFabric h100 = *nccl_fabric(h100_node(), iota(8));
  // Ring 12 and tree 14 graph channels: the fewer, doubled; NVLS its own 16.
  EXPECT_EQ(nccl_channels(h100, NcclAlgo::Ring), 24);
  EXPECT_EQ(nccl_channels(h100, NcclAlgo::Nvls), 16);
  const NcclFabric a100 = *nccl_fabric(a100_node(), iota(8));
  EXPECT_EQ(nccl_channels(a100, NcclAlgo::Ring), 24);
  EXPECT_EQ(nccl_channels(a100, NcclAlgo::Nvls), 0);
}

TEST(NcclModel, SmallOpsRunOnFewerChannels) {
  const NcclFabric f = *nccl_fabric(h100_node(), iota(8));
  auto channels = [&](Bytes bytes, NcclProto p) {
    return nccl_pipeline(f, CollectiveOp::AllReduce, bytes, NcclAlgo::Ring, p).channels;
  };
  // Simple keeps a channel while bytes >= channels x 512 threads x 64: 24 channels from 786,432 B.
  EXPECT_EQ(channels(786432, NcclProto::Simple), 24);
  EXPECT_EQ(channels(786431, NcclProto::Simple), 23);
  EXPECT_EQ(channels(64 * KiB, NcclProto::Simple), 2);  // 2 x 32768 = 65536
  EXPECT_EQ(channels(KiB, NcclProto::Simple), 1);
  // LL on the ring: 512 threads x 8 x 8 ranks = 32768 B per channel; LL128: 640 x 8 = 5120 B.
  EXPECT_EQ(channels(64 * KiB, NcclProto::LL), 2);
  EXPECT_EQ(channels(64 * KiB, NcclProto::LL128), 12);  // 12 x 5120 = 61440 <= 65536 < 66560
  // NVLS keeps its 16.
  EXPECT_EQ(nccl_pipeline(f, CollectiveOp::AllReduce, KiB, NcclAlgo::Nvls, NcclProto::Simple).channels, 16);
  // Fewer channels, fewer bytes per us: 64 KiB of Simple on 2 channels of 370.8 / 24 = 15.45 GB/s (the
  // ring inside a node moves at the link's 18 x 20.6 GB/s, not the search's 12 x 30), one 4096-byte
  // slice per step on 14 steps: 8.4 + 14 x 3.4 + 14 x 4096 / 15450 us.
  const NcclTable t = nccl_table(CollectiveOp::AllReduce, f);
  EXPECT_EQ(nccl_pipeline(f, CollectiveOp::AllReduce, 64 * KiB, NcclAlgo::Ring, NcclProto::Simple),
            (NcclPipeline{2, 32768, 4096, 14, 14}));
  expect_us(*nccl_time(t, f, CollectiveOp::AllReduce, 64 * KiB, NcclAlgo::Ring, NcclProto::Simple),
            8.4 + 14 * 3.4 + 14 * 4096 / 15450.0);
}

TEST(NcclModel, RingPipelineSlicesAMidSizeAllReduce) {
  const NcclFabric f = *nccl_fabric(h100_node(), iota(8));
  const NcclTable t = nccl_table(CollectiveOp::AllReduce, f);
  // 16 MiB of Simple on the H100 ring: 24 channels of ceil(16777216 / 24) = 699,051 B; a step moves the
  // rank's share, ceil(699051 / 8) = 87,382 B, in two slices of ceil(87382 / 128) x 64 = 43,712 B
  // (above the 1 MiB / 32 floor); ceil(699051 / 43712) = 16 slices per channel, ceil(16 x 14 / 8) = 28
  // on the busiest link.
  EXPECT_EQ(nccl_pipeline(f, CollectiveOp::AllReduce, 16 * MiB, NcclAlgo::Ring, NcclProto::Simple),
            (NcclPipeline{24, 699051, 43712, 28, 14}));
  // The first slice pays 14 hops of 3.4 us, the other 14 on the busiest link 3.4 us each, and the link
  // carries the channel's bytes 14/8 times over at 370.8 / 24 = 15.45 GB/s: 8.4 + 28 x 3.4 + 699051 x
  // 14 / 8 / 15450 = 182.8 us, where the tuner (its graph's 360 GB/s) says 56 + 16 MiB / 205.7 GB/s =
  // 137.6 us.
  expect_us(*nccl_time(t, f, CollectiveOp::AllReduce, 16 * MiB, NcclAlgo::Ring, NcclProto::Simple),
            8.4 + 28 * 3.4 + 699051.0 * 14 / 8 / 15450);
}

// The kernels loop over a channel's data a chunk per rank at a time and shrink the last loop's chunks to
// what is left (all_reduce.h runRing's realChunkSize), so a larger op never moves fewer bytes per
// microsecond: charging the last loop's slices whole made the rate fall just past each whole loop (a
// 4-GPU H100 all-reduce 340 GB/s of bus bandwidth at 128 MiB, 330 at 256; on 2 A100s an all-gather with
// LL128 311 at 16 MiB, 235 at 32).
TEST(NcclModel, ALargerOpNeverMovesItsBytesSlower) {
  struct Case {
    std::string name;
    NcclFabric fabric;
  };
  std::vector<Case> cases;
  for (int n : {2, 4, 8}) {
    cases.push_back({"a100 x" + std::to_string(n), *nccl_fabric(a100_node(), iota(n))});
    cases.push_back({"h100 x" + std::to_string(n), *nccl_fabric(h100_node(), iota(n))});
  }
  for (int nodes : {2, 4}) cases.push_back({"dgx-h100 x" + std::to_string(nodes), *nccl_fabric(topo::dgx_h100_cluster(nodes), iota(8 * nodes))});
  int checked = 0;
  for (const Case& c : cases) {
    for (CollectiveOp op : {CollectiveOp::AllReduce, CollectiveOp::AllGather, CollectiveOp::ReduceScatter, CollectiveOp::Broadcast}) {
      const NcclTable t = nccl_table(op, c.fabric);
      for (NcclAlgo a : {NcclAlgo::Ring, NcclAlgo::Tree, NcclAlgo::Nvls, NcclAlgo::NvlsTree}) {
        for (NcclProto p : {NcclProto::LL, NcclProto::LL128, NcclProto::Simple}) {
          double previous = 0;
          for (Bytes bytes = 64 * KiB; bytes <= 8 * GiB; bytes *= 2) {
            const std::optional<Time> time = nccl_time(t, c.fabric, op, bytes, a, p);
            if (!time) break;
            const double rate = static_cast<double>(bytes) / time->seconds();
            EXPECT_GE(rate, previous * (1 - 1e-12)) << c.name << " " << to_string(op) << " " << to_string(a) << "/"
                                                    << to_string(p) << " at " << bytes << " B";
            previous = rate;
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 1000);  // every case ran: ring, tree, NVLS and NVLSTree where they exist
}

// Inside one NVLink node the ring's channels move data at the link's usable rate (H100: 18 x 20.6 =
// 370.8 GB/s, which NVIDIA says a forced ring shows as its bus bandwidth), not at the 12 x 30 = 360 the
// channel search booked; the tuner still chooses by its table. On A100 the two are the same figure.
TEST(NcclModel, ARingInsideANodeMovesAtTheLinksRateNotTheSearchs) {
  const NcclFabric h100 = *nccl_fabric(h100_node(), iota(8));
  const NcclGraph g = nccl_graph(h100, NcclAlgo::Ring);
  EXPECT_EQ(g.channels * g.bw_intra, 360.0);
  const NcclTable t = nccl_table(CollectiveOp::AllReduce, h100);
  EXPECT_NEAR(t.bandwidth_GBps[kRing][kSimple], 360.0 * 8 / 14, 1e-9);  // the tuner's figure is the search's
  // 4 GiB of Simple: 24 channels of 178,956,971 B, 11 loops of 8 chunks of 2 MiB (the last one's
  // smaller), each 14 steps of two 1 MiB slices: 308 slices on every link, each paying the hop's 3.4 us,
  // and the channel's bytes 14/8 times over at 370.8 / 24 = 15.45 GB/s: 8.4 + 308 x 3.4 + 178956971 x
  // 14 / 8 / 15450 us, a bus bandwidth of 352.4 GB/s (at the search's 15 GB/s a channel, 342.7).
  const Time big = *nccl_time(t, h100, CollectiveOp::AllReduce, 4 * GiB, NcclAlgo::Ring, NcclProto::Simple);
  expect_us(big, 8.4 + 308 * 3.4 + 178956971.0 * 14 / 8 / 15450);
  EXPECT_NEAR(4.0 * GiB * 14 / 8 / big.seconds() / 1e9, 352.4, 0.05);
  // A100: 12 links x 20.0 = 240, and the search books 12 x 20 = 240: nothing to lift.
  const NcclFabric a100 = *nccl_fabric(a100_node(), iota(8));
  const NcclGraph ga = nccl_graph(a100, NcclAlgo::Ring);
  EXPECT_EQ(ga.channels * ga.bw_intra, a100.nvlink_GBps);
}

TEST(NcclModel, NvlsPipelineFillsAndReachesItsEfficiency) {
  const NcclFabric f = *nccl_fabric(h100_node(), iota(8));
  const NcclTable t = nccl_table(CollectiveOp::AllReduce, f);
  // NVLS's all-reduce bus bandwidth: 8 channels x 40 GB/s x 0.85 (Hopper) x 7/8 x 2 = 476 GB/s, or
  // 476 x 8 / 14 = 272 GB/s of algorithm bandwidth, 17 GB/s for each of the 16 channels.
  // 4 MiB: 262,144 B per channel, one slice, through 2 stages of 23/2 us: 2 x (11.5 + 262144 / 17000).
  EXPECT_EQ(nccl_pipeline(f, CollectiveOp::AllReduce, 4 * MiB, NcclAlgo::Nvls, NcclProto::Simple),
            (NcclPipeline{16, 262144, 262144, 1, 2}));
  expect_us(*nccl_time(t, f, CollectiveOp::AllReduce, 4 * MiB, NcclAlgo::Nvls, NcclProto::Simple),
            2 * (11.5 + 262144 / 17000.0));
  // 16 MiB: 1 MiB per channel in two 512 KiB slices: the first through both stages, the second one
  // slice time behind it.
  expect_us(*nccl_time(t, f, CollectiveOp::AllReduce, 16 * MiB, NcclAlgo::Nvls, NcclProto::Simple),
            2 * (11.5 + 524288 / 17000.0) + 524288 / 17000.0);
  // 4 GiB: 512 slices per channel; the bus bandwidth comes within 0.4% of 476 GB/s (v2.20.3's tuner
  // had 8 x 40 x 5/6 x 14/8 = 466.7, with the graph's old speed of 50 it had 583).
  const Time big = *nccl_time(t, f, CollectiveOp::AllReduce, 4 * GiB, NcclAlgo::Nvls, NcclProto::Simple);
  expect_us(big, 2 * (11.5 + 524288 / 17000.0) + 511 * 524288 / 17000.0);
  const double busbw_GBps = 4.0 * GiB / big.seconds() / 1e9 * 14 / 8;
  EXPECT_NEAR(busbw_GBps, 476.0, 0.004 * 476);
  // Reduce-scatter: one stage, bus bandwidth x 7/8 instead of x 2: 8 x 40 x 0.85 x 7/8 x 7/8 = 208.25,
  // algorithm bandwidth x 8/7 = 238, 14.875 GB/s a channel; 4 MiB is 262,144 B per channel.
  const NcclTable rs = nccl_table(CollectiveOp::ReduceScatter, f);
  expect_us(*nccl_time(rs, f, CollectiveOp::ReduceScatter, 4 * MiB, NcclAlgo::Nvls, NcclProto::Simple),
            11.5 + 262144 / 14875.0);
}

// NVLS's channels move the link's share, not the search's listed speed: on n GPUs of an H100 node a large
// all-reduce runs at 0.825 x 370.8 x n / (n + 1) of algorithm bandwidth (NVIDIA's 0.85 of the 40 GB/s it
// lists for a full node's channels, as a share of the link's 41.2), nearly flat in n, as NVIDIA/nccl
// issue #1455 measured (258 to 273 GB/s on 5 to 8 GPUs); the listed speeds (60, 50, 40, 40) would have
// dropped it to 238 on 7 GPUs. On 8 GPUs it is the 272 GB/s above.
TEST(NcclModel, NvlsAlgorithmBandwidthIsTheLinksShareOnAnyGpuCount) {
  for (int n = 5; n <= 8; ++n) {
    const NcclFabric f = *nccl_fabric(h100_node(), iota(n));
    const NcclChoice c = nccl_choose({CollectiveOp::AllReduce, n, 4 * GiB}, f);
    EXPECT_EQ(c.algo, NcclAlgo::Nvls) << n;
    const double alg_GBps = 4.0 * GiB / c.time.seconds() / 1e9;
    EXPECT_NEAR(alg_GBps, 0.85 * 40 / 41.2 * 370.8 * n / (n + 1), 0.004 * alg_GBps) << n;
  }
}

TEST(NcclModel, TreePipelineGoesUpAndDownTheChain) {
  const NcclFabric f = *nccl_fabric(h100_node(), iota(8));
  const NcclTable t = nccl_table(CollectiveOp::AllReduce, f);
  // 1 MiB, LL128: 24 channels (2 x 12, the ring's and the tree's); 1048576 >= 24 x 640 x 8, so none trimmed;
  // 43,691 B a channel, under one LL128 chunk (614,400 / 16 x 15): one slice, up and down the chain of
  // 8 GPUs, 14 hops.
  EXPECT_EQ(nccl_pipeline(f, CollectiveOp::AllReduce, MiB, NcclAlgo::Tree, NcclProto::LL128),
            (NcclPipeline{24, 43691, 43691, 1, 14}));
  // LL128 forwards line by line: base 14 + 14 hops x 1.25 (the tuner's figure, whole: LL128's holds no
  // transfer) + the slice up and down once each at the channel's share of the tuner's bus bandwidth,
  // 360 x 0.92 x 7/9 / 24 GB/s.
  const double ll128_channel = 360 * 0.92 * 7 / 9 * 1000 / 24;
  expect_us(*nccl_time(t, f, CollectiveOp::AllReduce, MiB, NcclAlgo::Tree, NcclProto::LL128),
            14 + 14 * 1.25 + 2 * 43691 / ll128_channel);
  // 64 MiB, Simple: 2,796,203 B a channel in slices of one 512 KiB step, 6 of them (the last holding
  // what is left), each crossing every link twice less one: 11. Simple forwards whole slices: the first
  // pays its time on all 14 hops (latency 28 / 2 each: tuning.cc's figure includes a 256 kB chunk's
  // transfer, which the pipeline charges itself), then the rest of the channel's data, up and down,
  // follows at 331.2 / 24 GB/s: 2 x 2796203 - 2 x 524288 B.
  EXPECT_EQ(nccl_pipeline(f, CollectiveOp::AllReduce, 64 * MiB, NcclAlgo::Tree, NcclProto::Simple),
            (NcclPipeline{24, 2796203, 524288, 11, 14}));
  const double tree_channel = 360 * 0.92 * 1000 / 24;
  expect_us(*nccl_time(t, f, CollectiveOp::AllReduce, 64 * MiB, NcclAlgo::Tree, NcclProto::Simple),
            14 * 28 / 2.0 + 14 * 524288 / tree_channel + (2 * 2796203 - 2 * 524288) / tree_channel);
  // Large: the tuner's algorithm bandwidth, 360 x 0.92 / 2 GB/s, within the fill.
  const Time big = *nccl_time(t, f, CollectiveOp::AllReduce, 16 * GiB, NcclAlgo::Tree, NcclProto::Simple);
  EXPECT_NEAR(16.0 * GiB / big.seconds() / 1e9, 360 * 0.92 / 2, 0.01 * 360 * 0.92 / 2);
  // Across nodes the tree adds 2 log2(nodes) network hops; only all-reduce has a tree.
  const NcclFabric two = *nccl_fabric(topo::dgx_h100_cluster(2), iota(16));
  EXPECT_EQ(nccl_pipeline(two, CollectiveOp::AllReduce, 64 * MiB, NcclAlgo::Tree, NcclProto::Simple).steps, 16);
  EXPECT_THROW(nccl_pipeline(f, CollectiveOp::AllGather, MiB, NcclAlgo::Tree, NcclProto::Simple), InvalidArgument);
  // The choice under NCCL_ALGO=Tree holds the CTAs its pipeline runs (what the plan simulator takes
  // from the SMs), not the graph's 12: 24 at 1 MiB, fewer where NCCL trims the channels of a small op.
  EXPECT_EQ(nccl_choose({CollectiveOp::AllReduce, 8, MiB}, f, NcclAlgo::Tree).channels, 24);
  const NcclChoice small = nccl_choose({CollectiveOp::AllReduce, 8, 64 * KiB}, f, NcclAlgo::Tree);
  EXPECT_EQ(small.channels, nccl_pipeline(f, CollectiveOp::AllReduce, 64 * KiB, NcclAlgo::Tree, small.proto).channels);
  EXPECT_LT(small.channels, 24);
}

// Across nodes a tree hop on the network stores and forwards whole steps (the proxy sends a step once
// the GPU has posted all of it, src/transport/net.cc), whatever the protocol: the first slice pays its
// time on each of the 2 log2(nodes) network hops, at the NIC's speed as the search booked it split
// among the CTAs, times the protocol's data share (LL128: 120 of 128 bytes).
TEST(NcclModel, TreeNetworkHopsForwardWholeSteps) {
  const NcclFabric f = *nccl_fabric(topo::dgx_h100_cluster(4), iota(32));
  // 8 graph channels at 48 GB/s (48 < 50 with more than 4 channels on Hopper: not doubled), run by 16
  // CTAs: 24 GB/s a CTA on the network.
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Tree), (NcclGraph{8, 48, 48}));
  EXPECT_EQ(nccl_channels(f, NcclAlgo::Tree), 16);
  const NcclTable t = nccl_table(CollectiveOp::AllReduce, f);
  // The tuner: 8 x 48 x 0.92 under 8 x 36.0, x 120/128 under 8 x 29.0 (LL128's cap), halved.
  EXPECT_NEAR(t.bandwidth_GBps[kTree][kLL128], 8 * 29.0 / 2, 1e-9);
  // 1 MiB, LL128: 16 CTAs (1048576 >= 16 x 640 x 8), 65,536 B each, one slice; 14 NVLink hops and 4
  // network hops. Base 14, each hop's latency (1.25 and 8.5), the slice up and down the busiest GPU's
  // link at the channel's 232 / 16 GB/s, and once more on every network hop at 24 x 120/128 GB/s.
  EXPECT_EQ(nccl_pipeline(f, CollectiveOp::AllReduce, MiB, NcclAlgo::Tree, NcclProto::LL128),
            (NcclPipeline{16, 65536, 65536, 1, 18}));
  const double channel = 232 * 1000 / 16.0, hop = 24 * 1000 * 120 / 128.0;
  expect_us(*nccl_time(t, f, CollectiveOp::AllReduce, MiB, NcclAlgo::Tree, NcclProto::LL128),
            14 + 14 * 1.25 + 4 * 8.5 + 2 * 65536 / channel + 4 * 65536 / hop);
  // Simple pays its slice on every hop: the 14 NVLink hops at the channel's share, the 4 network hops
  // at the NIC's 24 GB/s. 64 MiB: 4 MiB a CTA in 8 slices of one 512 KiB step, 15 on the busiest link.
  const double simple_channel = t.bandwidth_GBps[kTree][kSimple] * 2 * 1000 / 16;
  EXPECT_EQ(nccl_pipeline(f, CollectiveOp::AllReduce, 64 * MiB, NcclAlgo::Tree, NcclProto::Simple),
            (NcclPipeline{16, 4194304, 524288, 15, 18}));
  expect_us(*nccl_time(t, f, CollectiveOp::AllReduce, 64 * MiB, NcclAlgo::Tree, NcclProto::Simple),
            (14 * 28 + 4 * 28) / 2.0 + (14 + 14) * 524288 / simple_channel + 4 * 524288 / 24000.0);
}

TEST(NcclModel, TwoDgxH100NodesUseTheNicsAndTheNetworkLatencies) {
  const Topology t = topo::dgx_h100_cluster(2);
  const NcclFabric f = *nccl_fabric(t, iota(16));
  EXPECT_EQ(f.nodes, 2);
  EXPECT_TRUE(f.has_nics);
  EXPECT_NEAR(f.nic_GBps, 50, 1e-9);
  // One channel per NIC at 48 GB/s (NCCL's SM90 network speeds): 8. Each GPU's NVLink carries the 7
  // channels it does not leave the node by, 7 x 48 = 336 <= 370.8 (the whole 8 x 48 would not fit).
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Ring), (NcclGraph{8, 48, 48}));
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Nvls).channels, 0);
  const NcclTable table = nccl_table(CollectiveOp::AllReduce, f);
  // 30 steps, 4 of them network hops (2 x nodes); intra hops cost at least 3 x 1 us network overhead.
  EXPECT_NEAR(table.latency_us[kRing][kSimple], 8.4 + 26 * 3.4 + 4 * 14.0, 1e-9);
  // Past 64 bytes per rank and channel, the ring's plateau: latency x 1.4.
  EXPECT_EQ(*nccl_tuner_time(table, f, CollectiveOp::AllReduce, GiB, NcclAlgo::Ring, NcclProto::Simple),
            Time::us((8.4 + 26 * 3.4 + 4 * 14.0) * 1.4 + 1073741824 / (1000 * 384.0 * 16 / 30)));
  // Tree: 2 x (7 NVLink hops + 1 network hop).
  EXPECT_NEAR(table.latency_us[kTree][kLL], 6.8 + 2 * (7 * 0.6 + 1 * 5.0), 1e-9);
}

// The search's second pass raises a tree's speed inside the node while it stays under twice the
// network's and the channels fit the NVLink (search.cc, "See if we can increase bwIntra for trees").
// Two DGX A100 nodes: the network speed is 24 (NCCL's Ampere list, under the 25 GB/s NIC), 8 channels
// (one per NIC), which the ring keeps (below 25: no doubling) and the tree takes as they are (init.cc:
// the ring's channel count is the tree's minimum and maximum); inside the node 28 and 30 fit (8 x 30 =
// 240 <= 240 x 8/7), 48 does not. For one or two nodes the tuner prices the tree at its speed inside,
// up to NVIDIA's per-channel cap: min(8 x 30 x 0.92, 8 x 23.6) = 188.8 GB/s bus, 94.4 of algorithm
// bandwidth, below the ring's 8 x 24 x 16/30 = 102.4: large all-reduces run the ring.
TEST(NcclModel, TwoDgxA100NodesRaiseTheTreesSpeedInsideTheNode) {
  const NcclFabric f = *nccl_fabric(topo::dgx_a100_cluster(2), iota(16));
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Ring), (NcclGraph{8, 24, 24}));
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Tree), (NcclGraph{8, 30, 24}));
  const NcclTable t = nccl_table(CollectiveOp::AllReduce, f);
  EXPECT_NEAR(t.bandwidth_GBps[kTree][kSimple], std::min(8 * 30 * 0.92, 8 * 23.6) / 2, 1e-9);
  EXPECT_NEAR(t.bandwidth_GBps[kRing][kSimple], 8 * 24.0 * 16 / 30, 1e-9);
  EXPECT_EQ(nccl_choose({CollectiveOp::AllReduce, 16, 4 * GiB}, f).name(), "ring/Simple");
  // Beyond two nodes the tuner takes the network speed: 8 x 24, capped at 8 x 17.8.
  const NcclFabric four = *nccl_fabric(topo::dgx_a100_cluster(4), iota(32));
  EXPECT_EQ(nccl_graph(four, NcclAlgo::Tree), (NcclGraph{8, 30, 24}));
  EXPECT_NEAR(nccl_table(CollectiveOp::AllReduce, four).bandwidth_GBps[kTree][kSimple],
              std::min(8 * 24 * 0.92, 8 * 17.8) / 2, 1e-9);
  // On Hopper the fastest network speed (48) has no faster one above it: nothing to raise.
  EXPECT_EQ(nccl_graph(*nccl_fabric(topo::dgx_h100_cluster(2), iota(16)), NcclAlgo::Tree), (NcclGraph{8, 48, 48}));
}

// NCCL 2.29.2's own tuner tables, as it printed them (NCCL_DEBUG=INFO) for all-reduce on 2, 4 and 6
// GPUs of an H100 NVSwitch server (github.com/waynehacking8/nccl-collectives-bench @ec97f062,
// results/scaling_attributed/g{2,4,6}_auto.log, "Latency/bandwidth" rows of the TUNING table, to the
// 0.1 they print), modelled with 2.28's tables: the ring, the tree (12 channels, the ring's) and NVLS
// with 2.28's pricing (the NVLS graph at bwIntra 60, 60, 50 and bwInter 60).
TEST(NcclModel, TunerTablesMatchNccl229sOnAnH100Server) {
  struct Printed {
    int n;
    CollectiveOp op;
    std::array<std::array<double, 2>, 7> cells;  // tree LL, LL128, Simple, ring LL, LL128, Simple, NVLS
  };
  const std::vector<Printed> printed = {
      {2, CollectiveOp::AllReduce,
       {{{8.0, 61.1}, {16.5, 180.6}, {16.4, 232.2}, {7.8, 141.0}, {17.8, 331.2}, {15.2, 360.0}, {25.0, 102.0}}}},
      {2, CollectiveOp::AllGather, {{{0, 0}, {0, 0}, {0, 0}, {7.2, 282.0}, {15.9, 662.4}, {11.8, 720.0}, {25.0, 25.5}}}},
      {4, CollectiveOp::AllReduce,
       {{{10.4, 43.6}, {21.5, 128.8}, {32.4, 165.6}, {10.2, 94.0}, {25.4, 220.8}, {28.8, 240.0}, {25.0, 160.0}}}},
      {4, CollectiveOp::AllGather, {{{0, 0}, {0, 0}, {0, 0}, {8.4, 188.0}, {19.7, 441.6}, {18.6, 480.0}, {25.0, 114.8}}}},
      {6, CollectiveOp::AllReduce,
       {{{12.8, 43.6}, {26.5, 128.8}, {48.4, 165.6}, {12.6, 84.6}, {33.0, 198.7}, {42.4, 216.0}, {25.0, 216.0}}}},
      {6, CollectiveOp::AllGather, {{{0, 0}, {0, 0}, {0, 0}, {9.6, 169.2}, {23.5, 397.4}, {25.4, 432.0}, {25.0, 177.1}}}},
  };
  for (const Printed& p : printed) {
    NcclFabric f = *nccl_fabric(h100_node(), iota(p.n));
    f.nccl_minor = 28;
    const NcclTable t = nccl_table(p.op, f);
    for (int c = 0; c < 7; ++c) {
      const int a = c < 3 ? kTree : c < 6 ? kRing : kNvls, proto = c < 6 ? c % 3 : kSimple;
      SCOPED_TRACE(std::to_string(p.n) + " GPUs, cell " + std::to_string(c));
      EXPECT_NEAR(t.latency_us[a][proto], p.cells[c][0], 0.05);
      EXPECT_NEAR(t.bandwidth_GBps[a][proto], p.cells[c][1], 0.05);
    }
  }
  // 2.26's tables price NVLS at the graph's speed, 5/6 of it for all-reduce: on 4 GPUs 4 x 60 x 5/6.
  NcclFabric f = *nccl_fabric(h100_node(), iota(4));
  f.nccl_minor = 26;
  EXPECT_NEAR(nccl_table(CollectiveOp::AllReduce, f).bandwidth_GBps[kNvls][kSimple], 200.0, 1e-9);
}

// The tables of later releases (NVIDIA/nccl src/graph/tuning.cc, 2.21.5 to 2.26.2; nccl_model.cpp lists
// what changed): the modelled release is the fabric's nccl_minor.
TEST(NcclModel, LaterReleasesChangeTheTunersTables) {
  NcclFabric f = *nccl_fabric(h100_node(), iota(8));
  const auto table = [&](int minor, CollectiveOp op = CollectiveOp::AllReduce) {
    f.nccl_minor = minor;
    return nccl_table(op, f);
  };
  const double bus = 8.0 / 14;  // all-reduce on 8 ranks: algorithm bandwidth = bus x 8 / 14
  const double raw = table(20).bandwidth_GBps[kRing][kSimple] / bus;
  // The ring's LL: a quarter of the links' rate up to Ampere's 87.7 GB/s cap in 2.20; from 2.21 half of
  // it, up to Hopper's own 141.
  EXPECT_NEAR(table(20).bandwidth_GBps[kRing][kLL], std::min(87.7, raw / 4) * bus, 1e-9);
  EXPECT_NEAR(table(21).bandwidth_GBps[kRing][kLL], std::min(141.0, raw / 2) * bus, 1e-9);
  // NVLS's NVLink latency: 23 us, 25 from 2.21.
  EXPECT_NEAR(table(20).latency_us[kNvls][kSimple], 23, 1e-9);
  EXPECT_NEAR(table(21).latency_us[kNvls][kSimple], 25, 1e-9);
  // The tree's Simple: 28 us a hop and no base before 2.23, then 4.0 and a base of 8.4.
  EXPECT_NEAR(table(22).latency_us[kTree][kSimple], 2 * 7 * 28.0, 1e-9);
  EXPECT_NEAR(table(23).latency_us[kTree][kSimple], 8.4 + 2 * 7 * 4.0, 1e-9);
  // From 2.23 NVLS's reduce-scatter keeps its bus bandwidth (only the ring's is converted).
  EXPECT_NEAR(table(23, CollectiveOp::ReduceScatter).bandwidth_GBps[kNvls][kSimple],
              table(22, CollectiveOp::ReduceScatter).bandwidth_GBps[kNvls][kSimple] * 6 / 5, 1e-9);
  // Across two DGX H100 nodes a ring all-reduce's network steps: 2 x nodes before 2.23, 2 (nodes - 1)
  // from it (30 steps; intra hops at 3 x 1 us of network overhead over 3.4).
  NcclFabric two = *nccl_fabric(topo::dgx_h100_cluster(2), iota(16));
  two.nccl_minor = 23;
  EXPECT_NEAR(nccl_table(CollectiveOp::AllReduce, two).latency_us[kRing][kSimple], 8.4 + 28 * 3.4 + 2 * 14.0, 1e-9);
}

// What the tables change in NCCL's choice: 4 DGX H100 nodes, a 2 MiB all-reduce. The tree's LL128 (the
// same in every release): 14 + 2 (7 x 1.25 + 2 x 8.5) = 65.5 us and 232 / 2 GB/s x 0.6 (the tree's
// correction at 2 MiB) = 69.6, 95.63 us. NVLSTree: 8 x min(40, 40 / 2) x 5/6 GB/s and 23 + 4 x 14 = 79 us
// in 2.20, 94.73 us, so 2.20 runs NVLSTree; 25 + 56 = 81 us from 2.21, 96.73 us, so 2.24 runs the tree.
TEST(NcclModel, NvlsLatencyOf221MovesA2MiBAllReduceToTheTree) {
  NcclFabric f = *nccl_fabric(topo::dgx_h100_cluster(4), iota(32));
  const CollectiveRequest req{CollectiveOp::AllReduce, 32, 2 * MiB};
  const NcclTable t20 = nccl_table(CollectiveOp::AllReduce, f);
  expect_us(*nccl_tuner_time(t20, f, CollectiveOp::AllReduce, 2 * MiB, NcclAlgo::Tree, NcclProto::LL128),
            65.5 + 2097152 / (1000 * 116 * 0.6));
  expect_us(*nccl_tuner_time(t20, f, CollectiveOp::AllReduce, 2 * MiB, NcclAlgo::NvlsTree, NcclProto::Simple),
            79 + 2097152 / (1000 * 160 * 5.0 / 6));
  EXPECT_EQ(nccl_choose(req, f).name(), "nvlstree/Simple");
  f.nccl_minor = 24;
  const NcclTable t24 = nccl_table(CollectiveOp::AllReduce, f);
  expect_us(*nccl_tuner_time(t24, f, CollectiveOp::AllReduce, 2 * MiB, NcclAlgo::NvlsTree, NcclProto::Simple),
            81 + 2097152 / (1000 * 160 * 5.0 / 6));
  EXPECT_EQ(nccl_choose(req, f).name(), "tree/LL128");
}

TEST(NcclModel, TwoDgxH100NodesRunNvlsTree) {
  const Topology t = topo::dgx_h100_cluster(2);
  const NcclFabric f = *nccl_fabric(t, iota(16));
  // NVLSTree's search: a channel per head GPU and NIC, at a network speed (ppn + 1) of which fit a
  // GPU's NVLink: 9 x 48, 9 x 45, 9 x 42 exceed 370.8, 9 x 40 = 360 fits.
  EXPECT_EQ(nccl_graph(f, NcclAlgo::NvlsTree), (NcclGraph{8, 40, 40}));
  EXPECT_EQ(nccl_channels(f, NcclAlgo::NvlsTree), 16);
  // Not on one node, and only for all-reduce.
  EXPECT_EQ(nccl_graph(*nccl_fabric(h100_node(), iota(8)), NcclAlgo::NvlsTree).channels, 0);
  EXPECT_EQ(nccl_table(CollectiveOp::AllGather, f).bandwidth_GBps[3][kSimple], 0);
  // v2.20.3's tuner: 8 x min(40, 40) x 5/6 GB/s; 23 us in the node and 2 x log2(2) network hops of 14.
  const NcclTable table = nccl_table(CollectiveOp::AllReduce, f);
  EXPECT_NEAR(table.bandwidth_GBps[3][kSimple], 320.0 * 5 / 6, 1e-9);
  EXPECT_NEAR(table.latency_us[3][kSimple], 23 + 2 * 14.0, 1e-9);
  EXPECT_EQ(table.bandwidth_GBps[3][kLL], 0);
  // 1 GiB: NVLSTree beats the ring (51 + 4026 us against 1.4 x 172.8 + 5243 us).
  const NcclChoice c = nccl_choose({CollectiveOp::AllReduce, 16, GiB}, f);
  EXPECT_EQ(c.name(), "nvlstree/Simple");
  // What it takes: bus bandwidth 8 x min(40 x 0.85 x 7/8 x 2 = 59.5, 2 x 40, 57.7) = 461.6 GB/s, so
  // 461.6 x 16 / 30 = 246.19 GB/s of algorithm bandwidth, 15.387 GB/s on each of 16 channels. Each has
  // 64 MiB: 128 slices of 512 KiB through 4 stages (2 in the node, 2 across), the first paying half
  // of 23, 23, 14, 14 us and each stage at its own rate: the node's NVLS share (59.5 x 8 x 8/14 / 16
  // = 17.0 GB/s) and the NIC's share (40 x 8 / 16 = 20 GB/s); the other 127 follow at 15.387.
  EXPECT_EQ(nccl_pipeline(f, CollectiveOp::AllReduce, GiB, NcclAlgo::NvlsTree, NcclProto::Simple),
            (NcclPipeline{16, 64 * MiB, 512 * KiB, 128, 4}));
  const double slice_us = 524288 / (461.6 * 16 / 30 * 1000 / 16);
  const double node_us = 524288 / (59.5 * 8 * 8 / 14 * 1000 / 16);
  const double hop_us = 524288 / (40.0 * 8 * 1000 / 16);
  expect_us(c.time, 0.5 * (2 * 23 + 2 * 14) + 2 * node_us + 2 * hop_us + 127 * slice_us);
}

TEST(NcclModel, NvlsTreeStagesRunAtTheirOwnRatesAndTheSlicesAtTheSlowest) {
  // Four DGX H100 nodes: the tree of nodes caps NVLSTree at 8 x min(59.5, 40, 45.5) = 320 GB/s of bus
  // bandwidth, 320 x 32 / 62 = 165.2 GB/s of algorithm bandwidth, 10.32 GB/s a channel: half the
  // rate at which one slice crosses one hop (the NIC's 40 x 8 / 16 = 20 GB/s), as a tree link carries
  // each slice up and down.
  const NcclFabric f = *nccl_fabric(topo::dgx_h100_cluster(4), iota(32));
  const NcclTable table = nccl_table(CollectiveOp::AllReduce, f);
  const auto time = [&](Bytes bytes) {
    return nccl_time(table, f, CollectiveOp::AllReduce, bytes, NcclAlgo::NvlsTree, NcclProto::Simple)->microseconds();
  };
  const double latency = 0.5 * (2 * 23 + 4 * 14);
  const double node_us = 524288 / (59.5 * 8 * 8 / 14 * 1000 / 16);
  const double hop_us = 524288 / (40.0 * 8 * 1000 / 16);
  const double slice_us = 524288 / (320.0 * 32 / 62 * 1000 / 16);
  // 8 MiB: one 512 KiB slice a channel, through 2 NVLS stages and 4 network hops (2 log2 4).
  EXPECT_EQ(nccl_pipeline(f, CollectiveOp::AllReduce, 8 * MiB, NcclAlgo::NvlsTree, NcclProto::Simple),
            (NcclPipeline{16, 512 * KiB, 512 * KiB, 1, 6}));
  EXPECT_NEAR(time(8 * MiB), latency + 2 * node_us + 4 * hop_us, 1e-6);
  // Each further slice adds the slowest stage's time, here the tree's.
  EXPECT_NEAR(time(64 * MiB) - time(8 * MiB), 7 * slice_us, 1e-6);
  EXPECT_GT(slice_us, node_us);
  EXPECT_GT(slice_us, hop_us);
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

// A 2:1 oversubscribed fat-tree of H100 nodes with 2 GPUs each (NVLink 450 GB/s, NICs 50 GB/s).
Topology h100_fat_tree(int nodes, int nodes_per_leaf, int spines) {
  topo::FatTreeSpec spec;
  spec.nodes = nodes;
  spec.gpus_per_node = 2;
  spec.nodes_per_leaf = nodes_per_leaf;
  spec.spines = spines;
  spec.oversubscription = 2;
  spec.nvlink = {450 * GBps, Time::us(0.5)};
  spec.nic = {50 * GBps, Time::us(1)};
  spec.device = device_preset("h100");
  return topo::fat_tree(spec);
}

TEST(NcclModel, SharedLinksStretchNcclTimes) {
  // Two 2-rank groups on a 2:1 fat-tree, each crossing the spine: the groups share uplinks, so each
  // takes longer than NCCL's idle-fabric price, by its ring's slowdown on the flow network.
  const Topology t = h100_fat_tree(2, 1, 1);
  CollectiveSimulator sim(t, "flow");
  const CollectiveRequest req{CollectiveOp::AllReduce, 2, 64 * MiB};
  const GroupTiming both = time_group_collective(req, {{0, 2}, {1, 3}}, "auto", sim, t);
  const GroupTiming one = time_group_collective(req, {{0, 2}}, "auto", sim, t);
  EXPECT_EQ(one.max(), nccl_choose(req, *nccl_fabric(t, {0, 2})).time);
  EXPECT_GT(both.max(), one.max());
}

// One GPU of each of `nodes` DGX H100 nodes: a data-parallel group across the nodes.
std::vector<int> one_per_node(int nodes) {
  std::vector<int> v;
  for (int n = 0; n < nodes; ++n) v.push_back(8 * n);
  return v;
}

TEST(NcclModel, PatTunerArithmeticAtOneRankPerNode) {
  // PAT (NCCL 2.23 on, tuning.cc) on 64 nodes, one H100 each, their NDR NICs at 50 GB/s.
  NcclFabric f = *nccl_fabric(topo::dgx_h100_cluster(64), one_per_node(64));
  EXPECT_EQ(f.ranks, 64);
  EXPECT_EQ(f.nodes, 64);
  EXPECT_EQ(f.nccl_minor, 20);  // v2.20.3's tables by default, and 2.22 still, have none
  for (int minor : {20, 22}) {
    f.nccl_minor = minor;
    EXPECT_EQ(nccl_table(CollectiveOp::AllGather, f).bandwidth_GBps[4][kSimple], 0);
    EXPECT_EQ(nccl_channels(f, NcclAlgo::Pat), 0);
  }
  f.nccl_minor = 24;
  // PAT runs on the tree's graph: the ring's channels (one per NIC at 48 GB/s, doubled to 2 x 24), at
  // 24 across the network; inside the node, where no GPU-to-GPU hop books it, the search's second pass
  // raises the speed to 48, twice the network's.
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Pat), (NcclGraph{2, 48, 24}));
  EXPECT_EQ(nccl_graph(f, NcclAlgo::Pat), nccl_graph(f, NcclAlgo::Tree));
  for (CollectiveOp op : {CollectiveOp::AllGather, CollectiveOp::ReduceScatter}) {
    const NcclTable t = nccl_table(op, f);
    // 0.75 x 2 x 24 GB/s, left as bus bandwidth; 8 + log2(64) x 14 / 3.5 + 64 x 2.8 us, 14 the
    // tree's Simple network latency of 2.23's tables.
    EXPECT_NEAR(t.bandwidth_GBps[4][kSimple], 36.0, 1e-9);
    EXPECT_NEAR(t.latency_us[4][kSimple], 8 + 6 * 4.0 + 64 * 2.8, 1e-9);
    EXPECT_EQ(t.bandwidth_GBps[4][kLL], 0);  // Simple only
    EXPECT_EQ(t.bandwidth_GBps[4][kLL128], 0);
  }
  // 2.23 took 0.85 of the graph's bandwidth.
  f.nccl_minor = 23;
  EXPECT_NEAR(nccl_table(CollectiveOp::AllGather, f).bandwidth_GBps[4][kSimple], 0.85 * 48, 1e-9);
  f.nccl_minor = 24;
  // Not for all-reduce.
  EXPECT_EQ(nccl_table(CollectiveOp::AllReduce, f).bandwidth_GBps[4][kSimple], 0);
  // What it takes is the tuner's estimate (its pipeline is not modelled).
  const NcclTable t = nccl_table(CollectiveOp::AllGather, f);
  const Time pat = Time::us(211.2 + 4194304 / (1000 * 36.0));
  EXPECT_EQ(*nccl_tuner_time(t, f, CollectiveOp::AllGather, 4 * MiB, NcclAlgo::Pat, NcclProto::Simple), pat);
  EXPECT_EQ(*nccl_time(t, f, CollectiveOp::AllGather, 4 * MiB, NcclAlgo::Pat, NcclProto::Simple), pat);
  EXPECT_THROW(nccl_pipeline(f, CollectiveOp::AllGather, MiB, NcclAlgo::Pat, NcclProto::Simple), InvalidArgument);
}

TEST(NcclModel, PatWinsMidSizesAcrossManyNodesAndTheRingLargeOnes) {
  NcclFabric f = *nccl_fabric(topo::dgx_h100_cluster(64), one_per_node(64));
  f.nccl_minor = 24;
  // 4 MiB all-gather, every ring step a network hop at the tree's network latency (one GPU per node):
  // PAT 211.2 + 116.5 us; the ring's LL128 14 + 63 x 8.5 + 4 MiB at 0.92 x 48 x 64/63 GB/s = 643.0 us,
  // its Simple 8.4 + 63 x 14 + 86.0 us, LL 6.6 + 63 x 5.0 + 4 MiB at 20.4 x 64/63 GB/s = 524.0 us.
  const NcclTable t = nccl_table(CollectiveOp::AllGather, f);
  EXPECT_NEAR(t.latency_us[kRing][kLL128], 14 + 63 * 8.5, 1e-9);
  EXPECT_NEAR(t.bandwidth_GBps[kRing][kLL128], 0.92 * 48 * 64 / 63, 1e-9);
  EXPECT_NEAR(t.latency_us[kRing][kLL], 6.6 + 63 * 5.0, 1e-9);
  const NcclChoice mid = nccl_choose({CollectiveOp::AllGather, 64, 4 * MiB}, f);
  EXPECT_EQ(mid.name(), "pat/Simple");
  EXPECT_EQ(mid.channels, 2);
  // 1 GiB: bandwidth decides, and PAT has 0.75 of the graph's: the ring (48 x 64/63 GB/s).
  EXPECT_EQ(nccl_choose({CollectiveOp::AllGather, 64, GiB}, f).name(), "ring/Simple");
  // Before 2.23, the same 4 MiB goes by the ring.
  f.nccl_minor = 22;
  EXPECT_EQ(nccl_choose({CollectiveOp::AllGather, 64, 4 * MiB}, f).algo, NcclAlgo::Ring);
}

TEST(NcclModel, PatNeedsEveryRankOnItsOwnNode) {
  // Two whole DGX H100 nodes: eight ranks per node, no PAT even when the NCCL modelled has it.
  NcclFabric f = *nccl_fabric(topo::dgx_h100_cluster(2), iota(16));
  f.nccl_minor = 26;
  EXPECT_EQ(nccl_table(CollectiveOp::ReduceScatter, f).bandwidth_GBps[4][kSimple], 0);
  EXPECT_EQ(nccl_channels(f, NcclAlgo::Pat), 0);
  EXPECT_NE(nccl_choose({CollectiveOp::ReduceScatter, 16, 4 * MiB}, f).algo, NcclAlgo::Pat);
}

TEST(NcclModel, AutoRunsPatFromNccl223AndSharesLinksAsRecursiveHalvingDoubling) {
  const Topology t = topo::dgx_h100_cluster(64);
  CollectiveSimulator sim(t, "flow");
  const CollectiveRequest req{CollectiveOp::AllGather, 64, 4 * MiB};
  EXPECT_EQ(time_group_collective(req, {one_per_node(64)}, "auto", sim, t).algorithm.substr(0, 4), "ring");
  const GroupTiming pat = time_group_collective(req, {one_per_node(64)}, "auto", sim, t, /*nccl_minor=*/24);
  EXPECT_EQ(pat.algorithm, "pat/Simple");
  NcclFabric f = *nccl_fabric(t, one_per_node(64));
  f.nccl_minor = 24;
  EXPECT_EQ(pat.max(), nccl_choose(req, f).time);
  EXPECT_EQ(pat.channels, 2);
}

TEST(NcclModel, PatGroupsSharingLinksSlowEachOther) {
  // 32 nodes of 2 GPUs on a 2:1 fat-tree: the groups of GPU 0 and of GPU 1 of every node have one rank
  // per node and share the leaves' uplinks. With NCCL 2.24's tables at 32 nodes PAT (8 + 5 x 4 + 32 x
  // 2.8 = 117.6 us, 36 GB/s) beats the ring's LL128 (14 + 31 x 8.5 = 277.5 us) and its Simple (8.4 + 31
  // x 14 = 442.4 us) at 4 MiB. Together the groups take longer than one alone, by rhd's slowdown on the
  // flow network.
  const Topology t = h100_fat_tree(32, 4, 2);
  std::vector<int> gpu0, gpu1;
  for (int n = 0; n < 32; ++n) {
    gpu0.push_back(2 * n);
    gpu1.push_back(2 * n + 1);
  }
  CollectiveSimulator sim(t, "flow");
  const CollectiveRequest req{CollectiveOp::ReduceScatter, 32, 4 * MiB};
  const GroupTiming one = time_group_collective(req, {gpu0}, "auto", sim, t, 24);
  const GroupTiming both = time_group_collective(req, {gpu0, gpu1}, "auto", sim, t, 24);
  EXPECT_EQ(one.algorithm, "pat/Simple");
  EXPECT_EQ(both.algorithm, "pat/Simple");
  EXPECT_GT(both.max(), one.max());
}

}  // namespace
}  // namespace twinbed::sim
