// Topology, routing and the builders/presets: counts, hop counts, ECMP, and argument checking.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>

#include "twinbed/core/device.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/topology.hpp"
#include "twinbed/core/topology_builders.hpp"

namespace twinbed {
namespace {

// Runs `statement`, expecting exception type `type` whose what() contains `text`.
#define EXPECT_THROW_WITH(statement, type, text)                                              \
  do {                                                                                        \
    try {                                                                                     \
      statement;                                                                              \
      ADD_FAILURE() << "expected " #type " from: " #statement;                                \
    } catch (const type& e) {                                                                 \
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos)                          \
          << "message '" << e.what() << "' lacks '" << (text) << "'";                         \
    }                                                                                         \
  } while (0)

const DeviceSpec kH100 = device_preset("h100");
const topo::LinkSpec kLink{100e9, Time::us(1)};

// The nodes a path visits after its source.
std::vector<std::string> hops_through(const Topology& t, const Path& p) {
  std::vector<std::string> names;
  for (LinkId l : p) names.push_back(t.node(t.link(l).dst).name);
  return names;
}

// A path is well formed: consecutive links, from src's node to dst's node.
void expect_connected(const Topology& t, const Path& p, int src, int dst) {
  ASSERT_FALSE(p.empty());
  EXPECT_EQ(t.link(p.front()).src, t.node_of_rank(src));
  EXPECT_EQ(t.link(p.back()).dst, t.node_of_rank(dst));
  for (std::size_t i = 1; i < p.size(); ++i) EXPECT_EQ(t.link(p[i - 1]).dst, t.link(p[i]).src);
}

topo::FatTreeSpec small_fat_tree() {
  return {.nodes = 4,
          .gpus_per_node = 8,
          .nodes_per_leaf = 2,
          .spines = 2,
          .oversubscription = 1.0,
          .nvlink = {450e9, Time::us(0.5)},
          .nic = {50e9, Time::us(1)},
          .device = kH100};
}

// ---- devices ----------------------------------------------------------------------------------------

TEST(Device, PresetsCarryDatasheetFigures) {
  const DeviceSpec a100 = device_preset("a100");
  EXPECT_EQ(a100.peak_bf16, 312e12);
  EXPECT_EQ(a100.peak_fp8, 0);
  EXPECT_EQ(a100.memory_bandwidth, 2.039e12);
  EXPECT_EQ(kH100.peak_bf16, 989e12);
  EXPECT_EQ(kH100.peak_fp8, 1979e12);
  const DeviceSpec h200 = device_preset("h200");
  EXPECT_EQ(h200.memory, 141'000'000'000);
  EXPECT_EQ(h200.memory_bandwidth, 4.8e12);
  EXPECT_GT(h200.launch_overhead, Time{});
  EXPECT_EQ(device_preset_names(), (std::vector<std::string>{"a100", "h100", "h200"}));
}

TEST(Device, UnknownNameListsPresets) { EXPECT_THROW_WITH(device_preset("h900"), UnknownName, "a100, h100, h200"); }

// ---- Topology core ------------------------------------------------------------------------------------

TEST(Topology, AddLinkRejectsBadArguments) {
  Topology t;
  const NodeId a = t.add_device("a", 0, kH100);
  const NodeId b = t.add_switch("b");
  EXPECT_THROW_WITH(t.add_link(a, 7, 1e9, Time{}), InvalidArgument, "unknown node");
  EXPECT_THROW_WITH(t.add_link(a, a, 1e9, Time{}), InvalidArgument, "itself");
  EXPECT_THROW_WITH(t.add_link(a, b, 0, Time{}), InvalidArgument, "bandwidth");
  EXPECT_THROW_WITH(t.add_link(a, b, -1, Time{}), InvalidArgument, "bandwidth");
  EXPECT_THROW_WITH(t.add_link(a, b, 1e9, Time::us(-1)), InvalidArgument, "latency");
  EXPECT_THROW_WITH(t.add_device("c", -1, kH100), InvalidArgument, "host");
}

TEST(Topology, ValidateCatchesEmptyAndDisconnectedGraphs) {
  EXPECT_THROW_WITH(Topology{}.validate(), InvalidArgument, "no ranks");

  Topology islands;
  islands.add_device("a", 0, kH100);
  islands.add_device("b", 1, kH100);
  EXPECT_THROW_WITH(islands.validate(), InvalidArgument, "disconnected");
  EXPECT_THROW_WITH(islands.route(0, 1), InvalidArgument, "unreachable");

  // One-way only: rank 1 reaches nothing, so the reverse search must catch it.
  Topology one_way;
  const NodeId a = one_way.add_device("a", 0, kH100);
  const NodeId b = one_way.add_device("b", 0, kH100);
  one_way.add_link(a, b, 1e9, Time{});
  EXPECT_THROW_WITH(one_way.validate(), InvalidArgument, "rank 0 is unreachable from rank 1");
  EXPECT_EQ(one_way.route(0, 1).size(), 1u);

  Topology single;
  single.add_device("only", 0, kH100);
  EXPECT_NO_THROW(single.validate());
}

TEST(Topology, RouteRejectsRanksOutOfRange) {
  const Topology t = topo::single_switch(4, kLink, kH100);
  EXPECT_THROW_WITH(t.route(0, 4), InvalidArgument, "destination rank 4");
  EXPECT_THROW_WITH(t.route(-1, 0), InvalidArgument, "source rank -1");
}

TEST(Topology, UniformRanksPerHost) {
  const auto with_hosts = [](std::vector<int> hosts) {
    Topology t;
    for (std::size_t i = 0; i < hosts.size(); ++i) t.add_device(std::to_string(i), hosts[i], kH100);
    return t.uniform_ranks_per_host();
  };
  EXPECT_EQ(with_hosts({0, 0, 1, 1}), 2);
  EXPECT_EQ(with_hosts({3, 3, 3, 7, 7, 7}), 3);  // any host ids, as long as blocks are consecutive
  EXPECT_EQ(with_hosts({0, 1, 0, 1}), 0);        // not consecutive
  EXPECT_EQ(with_hosts({0, 0, 0, 1}), 0);        // unequal
  EXPECT_EQ(with_hosts({0, 0, 1, 1, 0, 0}), 0);  // host 0 twice
  EXPECT_EQ(with_hosts({}), 0);
}

TEST(Topology, PathLatencyAndBandwidth) {
  Topology t;
  const NodeId a = t.add_device("a", 0, kH100);
  const NodeId s = t.add_switch("s");
  const NodeId b = t.add_device("b", 0, kH100);
  t.add_duplex(a, s, 100e9, Time::us(1));
  t.add_duplex(s, b, 25e9, Time::ns(300));
  const Path p = t.route(0, 1);
  EXPECT_EQ(hops_through(t, p), (std::vector<std::string>{"s", "b"}));
  EXPECT_EQ(t.path_latency(p), Time::ns(1300));
  EXPECT_EQ(t.path_bandwidth(p), 25e9);
  EXPECT_TRUE(t.route(1, 1).empty());
  EXPECT_EQ(t.path_latency({}), Time{});
  EXPECT_TRUE(std::isinf(t.path_bandwidth({})));
}

TEST(Topology, RouteTakesTheQuickestOfTheWidestFewestHopPaths) {
  // Three 3-hop paths a -> b: through x (100 GB/s, 5 us then 100), through y (50 GB/s, 1 us then 50)
  // and through z (20 GB/s, 0.1 us). The last hop (50 GB/s) makes the first two equally wide; the one
  // through y is quicker, although the path to u through x is the wider one.
  Topology t;
  const NodeId a = t.add_device("a", 0, kH100);
  const NodeId x = t.add_switch("x");
  const NodeId y = t.add_switch("y");
  const NodeId z = t.add_switch("z");
  const NodeId u = t.add_switch("u");
  const NodeId b = t.add_device("b", 1, kH100);
  t.add_duplex(a, x, 100e9, Time::us(5));
  t.add_duplex(x, u, 100e9, Time{});
  t.add_duplex(a, y, 50e9, Time::us(1));
  t.add_duplex(y, u, 50e9, Time{});
  t.add_duplex(a, z, 20e9, Time::ns(100));
  t.add_duplex(z, u, 20e9, Time{});
  t.add_duplex(u, b, 50e9, Time::us(1));
  const Path p = t.route(0, 1);
  EXPECT_EQ(hops_through(t, p), (std::vector<std::string>{"y", "u", "b"}));
  EXPECT_EQ(t.path_latency(p), Time::us(2));
  EXPECT_EQ(t.path_bandwidth(p), 50e9);
}

// ---- builders -------------------------------------------------------------------------------------------

TEST(Builders, SingleSwitch) {
  const Topology t = topo::single_switch(8, kLink, kH100);
  EXPECT_EQ(t.num_ranks(), 8);
  EXPECT_EQ(t.num_nodes(), 9);
  EXPECT_EQ(t.num_links(), 16);
  EXPECT_EQ(t.num_hosts(), 1);
  EXPECT_EQ(t.uniform_ranks_per_host(), 8);
  const Path p = t.route(0, 5);
  ASSERT_EQ(p.size(), 2u);
  expect_connected(t, p, 0, 5);
  EXPECT_EQ(t.path_latency(p), Time::us(2));
  EXPECT_EQ(t.path_bandwidth(p), 100e9);
  EXPECT_EQ(t.device(3), kH100);
  EXPECT_FALSE(t.description.empty());
}

TEST(Builders, NvswitchNode) {
  const Topology t = topo::nvswitch_node(4, {450e9, Time::us(0.5)}, kH100);
  EXPECT_EQ(t.num_ranks(), 4);
  EXPECT_EQ(t.num_links(), 8);
  EXPECT_EQ(t.num_hosts(), 1);
  EXPECT_EQ(t.route(1, 2).size(), 2u);
}

TEST(Builders, FatTreeCounts) {
  const Topology t = topo::fat_tree(small_fat_tree());
  EXPECT_EQ(t.num_ranks(), 32);
  EXPECT_EQ(t.num_hosts(), 4);
  EXPECT_EQ(t.uniform_ranks_per_host(), 8);
  EXPECT_EQ(t.num_nodes(), 32 + 4 /*nvswitches*/ + 2 /*leaves*/ + 2 /*spines*/);
  EXPECT_EQ(t.num_links(), 2 * 32 /*nvlink*/ + 2 * 32 /*nic*/ + 2 * 2 * 2 /*leaf-spine*/);
}

TEST(Builders, FatTreeRoutes) {
  const Topology t = topo::fat_tree(small_fat_tree());
  // Same server: over the NVSwitch, never the NIC, whatever the flow.
  for (std::uint64_t key = 0; key < 16; ++key) {
    const Path p = t.route(0, 3, key);
    EXPECT_EQ(hops_through(t, p), (std::vector<std::string>{"node0/nvswitch", "node0/gpu3"}));
    EXPECT_EQ(t.path_bandwidth(p), 450e9);
  }
  // Other server, same leaf: GPU -> leaf -> GPU.
  EXPECT_EQ(hops_through(t, t.route(0, 8)), (std::vector<std::string>{"leaf0", "node1/gpu0"}));
  // Across leaves: through a spine, 4 hops, 4 us.
  const Path across = t.route(0, 16);
  ASSERT_EQ(across.size(), 4u);
  expect_connected(t, across, 0, 16);
  EXPECT_EQ(t.node(t.link(across[1]).dst).name.rfind("spine", 0), 0u);
  EXPECT_EQ(t.path_latency(across), Time::us(4));
  EXPECT_EQ(t.path_bandwidth(across), 50e9);
}

TEST(Builders, FatTreeEcmpSpreadsFlowsOverSpinesDeterministically) {
  const Topology t = topo::fat_tree(small_fat_tree());
  std::set<std::string> spines;
  for (std::uint64_t key = 0; key < 64; ++key) {
    const Path p = t.route(2, 21, key);
    EXPECT_EQ(p, t.route(2, 21, key));  // same flow, same path
    spines.insert(t.node(t.link(p[1]).dst).name);
  }
  EXPECT_EQ(spines, (std::set<std::string>{"spine0", "spine1"}));
  // Different pairs with the same flow key are spread too.
  std::set<std::string> by_pair;
  for (int src = 0; src < 16; ++src) by_pair.insert(t.node(t.link(t.route(src, 16 + src, 0)[1]).dst).name);
  EXPECT_EQ(by_pair.size(), 2u);
}

TEST(Builders, FatTreeOversubscriptionNarrowsUplinks) {
  topo::FatTreeSpec spec = small_fat_tree();
  spec.oversubscription = 2;
  const Topology t = topo::fat_tree(spec);
  const Path across = t.route(0, 16);
  // A leaf has 16 GPUs x 50 GB/s down, so 400 GB/s up over 2 spines = 200 GB/s per uplink.
  EXPECT_EQ(t.link(across[1]).bandwidth, 200e9);
}

TEST(Builders, RailOptimized) {
  const Topology t = topo::rail_optimized(small_fat_tree());
  EXPECT_EQ(t.num_ranks(), 32);
  EXPECT_EQ(t.num_nodes(), 32 + 4 + 8 /*rails*/ + 2 /*spines*/);
  EXPECT_EQ(t.num_links(), 4 * 32 + 2 * 8 * 2);
  // GPU 3 of node 0 to GPU 3 of node 2: one rail switch.
  EXPECT_EQ(hops_through(t, t.route(3, 19)), (std::vector<std::string>{"rail3", "node2/gpu3"}));
  // Different rails and servers: 4 hops, never through a spine (4 x 1 us). Of the two equally quick
  // paths (2 x 1 us + 2 x 0.5 us), NVLink to the sender's GPU on the peer's rail, then that rail (NCCL's
  // PXN), for every flow; not this GPU's rail and NVLink in the receiver's server.
  for (std::uint64_t key = 0; key < 8; ++key) {
    const Path p = t.route(3, 20, key);
    expect_connected(t, p, 3, 20);
    EXPECT_EQ(hops_through(t, p), (std::vector<std::string>{"node0/nvswitch", "node0/gpu4", "rail4", "node2/gpu4"}))
        << key;
  }
}

TEST(Builders, RingTakesTheShorterDirection) {
  const Topology t = topo::ring(8, kLink, kH100);
  EXPECT_EQ(t.num_ranks(), 8);
  EXPECT_EQ(t.num_links(), 16);
  EXPECT_EQ(t.num_hosts(), 8);
  EXPECT_EQ(t.route(0, 1).size(), 1u);
  EXPECT_EQ(t.route(0, 3).size(), 3u);
  EXPECT_EQ(hops_through(t, t.route(0, 6)), (std::vector<std::string>{"gpu7", "gpu6"}));
  // Opposite ranks: both directions are equal cost; flows use both.
  std::set<std::string> first_hops;
  for (std::uint64_t key = 0; key < 32; ++key) first_hops.insert(hops_through(t, t.route(0, 4, key)).front());
  EXPECT_EQ(first_hops, (std::set<std::string>{"gpu1", "gpu7"}));
  EXPECT_EQ(topo::ring(2, kLink, kH100).num_links(), 2);
  EXPECT_EQ(topo::ring(1, kLink, kH100).num_links(), 0);
}

TEST(Builders, TorusWrapsAround) {
  const Topology t = topo::torus({4, 4}, kLink, kH100);
  EXPECT_EQ(t.num_ranks(), 16);
  EXPECT_EQ(t.num_links(), 2 /*dims*/ * 4 /*lines*/ * 4 /*cables*/ * 2);
  EXPECT_EQ(t.route(0, 3).size(), 1u);   // (0,0) -> (3,0): the wrap-around link
  EXPECT_EQ(t.route(0, 12).size(), 1u);  // (0,0) -> (0,3)
  EXPECT_EQ(t.route(0, 15).size(), 2u);  // (3,3)
  EXPECT_EQ(t.route(0, 10).size(), 4u);  // (2,2): the farthest
  std::set<std::string> first_hops;
  for (std::uint64_t key = 0; key < 32; ++key) first_hops.insert(hops_through(t, t.route(0, 5, key)).front());
  EXPECT_EQ(first_hops, (std::set<std::string>{"gpu1", "gpu4"}));  // both dimension orders
}

TEST(Builders, TorusSizeTwoDimensionsGetOneCable) {
  EXPECT_EQ(topo::torus({2, 3}, kLink, kH100).num_links(), 2 * (3 * 1 + 2 * 3));
  const Topology cube = topo::torus({2, 2, 2}, kLink, kH100);
  EXPECT_EQ(cube.num_ranks(), 8);
  EXPECT_EQ(cube.num_links(), 2 * 3 * 4);
  EXPECT_EQ(cube.route(0, 7).size(), 3u);
}

TEST(Builders, MultiDim) {
  const topo::LinkSpec nvlink{450e9, Time::us(0.5)};
  const topo::LinkSpec nic{50e9, Time::us(1)};
  const Topology t = topo::multi_dim({{"switch", 4, nvlink}, {"ring", 2, nic}}, kH100);
  EXPECT_EQ(t.num_ranks(), 8);
  EXPECT_EQ(t.num_hosts(), 2);
  EXPECT_EQ(t.uniform_ranks_per_host(), 4);
  EXPECT_EQ(t.num_nodes(), 8 + 2);
  EXPECT_EQ(t.num_links(), 2 * 8 + 2 * 4);
  EXPECT_EQ(t.path_bandwidth(t.route(0, 3)), 450e9);
  EXPECT_EQ(t.route(0, 4).size(), 1u);
  const Topology fc = topo::multi_dim({{"fully_connected", 4, nic}}, kH100);
  EXPECT_EQ(fc.num_links(), 2 * 6);
  EXPECT_EQ(fc.route(1, 3).size(), 1u);
}

TEST(Builders, DgxClusters) {
  const Topology h = topo::dgx_h100_cluster(2);
  EXPECT_EQ(h.num_ranks(), 16);
  EXPECT_EQ(h.num_hosts(), 2);
  EXPECT_EQ(h.uniform_ranks_per_host(), 8);
  EXPECT_EQ(h.device(0).name, "h100");
  EXPECT_EQ(h.path_bandwidth(h.route(0, 7)), 450e9);
  EXPECT_EQ(h.route(0, 8).size(), 2u);
  EXPECT_EQ(h.path_bandwidth(h.route(0, 8)), 50e9);
  const Topology a = topo::dgx_a100_cluster(1);
  EXPECT_EQ(a.num_ranks(), 8);
  EXPECT_EQ(a.device(0).name, "a100");
  EXPECT_EQ(a.path_bandwidth(a.route(0, 7)), 300e9);
  EXPECT_EQ(a.description.rfind("dgx-a100", 0), 0u);
}

TEST(Builders, BadArgumentsNameTheParameter) {
  const topo::LinkSpec zero_bw{0, Time{}};
  const topo::LinkSpec neg_lat{1e9, Time::us(-1)};
  EXPECT_THROW_WITH(topo::single_switch(0, kLink, kH100), InvalidArgument, "ranks must be in 1..");
  EXPECT_THROW_WITH(topo::single_switch(-3, kLink, kH100), InvalidArgument, "ranks");
  EXPECT_THROW_WITH(topo::single_switch(4, zero_bw, kH100), InvalidArgument, "link.bandwidth must be finite and > 0");
  EXPECT_THROW_WITH(topo::single_switch(4, neg_lat, kH100), InvalidArgument, "link.latency must be >= 0");
  EXPECT_THROW_WITH(topo::nvswitch_node(0, kLink, kH100), InvalidArgument, "gpus");
  EXPECT_THROW_WITH(topo::ring(0, kLink, kH100), InvalidArgument, "ranks");
  EXPECT_THROW_WITH(topo::ring(4, neg_lat, kH100), InvalidArgument, "link.latency");

  const auto fat_tree_with = [](auto edit) {
    topo::FatTreeSpec s = small_fat_tree();
    edit(s);
    return topo::fat_tree(s);
  };
  EXPECT_THROW_WITH(fat_tree_with([](auto& s) { s.nodes = 0; }), InvalidArgument, "nodes must be in 1..");
  EXPECT_THROW_WITH(fat_tree_with([](auto& s) { s.gpus_per_node = 0; }), InvalidArgument, "gpus_per_node");
  EXPECT_THROW_WITH(fat_tree_with([](auto& s) { s.nodes = 3; }), InvalidArgument, "nodes_per_leaf must be a divisor");
  EXPECT_THROW_WITH(fat_tree_with([](auto& s) { s.spines = 0; }), InvalidArgument, "spines");
  EXPECT_THROW_WITH(fat_tree_with([](auto& s) { s.oversubscription = 0.5; }), InvalidArgument,
                    "oversubscription must be finite and >= 1");
  EXPECT_THROW_WITH(fat_tree_with([](auto& s) { s.nic.bandwidth = -1; }), InvalidArgument, "nic.bandwidth");
  EXPECT_THROW_WITH(fat_tree_with([](auto& s) { s.nvlink.latency = Time::ns(-1); }), InvalidArgument,
                    "nvlink.latency");
  topo::FatTreeSpec rail = small_fat_tree();
  rail.nodes = 3;  // nodes_per_leaf is unused by the rail builder
  EXPECT_EQ(topo::rail_optimized(rail).num_ranks(), 24);
  rail.spines = -1;
  EXPECT_THROW_WITH(topo::rail_optimized(rail), InvalidArgument, "spines");

  EXPECT_THROW_WITH(topo::torus({16}, kLink, kH100), InvalidArgument, "dims must be 2 or 3 sizes");
  EXPECT_THROW_WITH(topo::torus({4, 0}, kLink, kH100), InvalidArgument, "dims[1]");
  EXPECT_THROW_WITH(topo::torus({4096, 4096}, kLink, kH100), InvalidArgument, "dims");
  EXPECT_THROW_WITH(topo::multi_dim({}, kH100), InvalidArgument, "dims");
  EXPECT_THROW_WITH(topo::multi_dim({{"mesh", 4, kLink}}, kH100), InvalidArgument,
                    "dims[0].kind must be one of ring, switch, fully_connected");
  EXPECT_THROW_WITH(topo::multi_dim({{"ring", 4, kLink}, {"ring", 0, kLink}}, kH100), InvalidArgument, "dims[1].size");
  EXPECT_THROW_WITH(topo::multi_dim({{"ring", 4, zero_bw}}, kH100), InvalidArgument, "dims[0].link.bandwidth");
  EXPECT_THROW_WITH(topo::dgx_h100_cluster(0), InvalidArgument, "nodes");
  EXPECT_THROW_WITH(topo::dgx_a100_cluster(-1), InvalidArgument, "nodes");
}

// ---- presets --------------------------------------------------------------------------------------------

TEST(Presets, RegistryListsEveryPresetWithDefaults) {
  const auto presets = topo::topology_presets();
  EXPECT_EQ(presets.names(), (std::vector<std::string>{"switch", "nvswitch-node", "fat-tree", "rail", "ring", "torus",
                                                       "multi-dim", "dgx-a100", "dgx-h100"}));
  for (const auto& entry : presets.entries()) {
    SCOPED_TRACE(entry.name);
    EXPECT_NE(entry.description.find("default"), std::string::npos);
    const Topology t = entry.value(topo::PresetParams{});
    EXPECT_NO_THROW(t.validate());
    EXPECT_FALSE(t.description.empty());
    EXPECT_GT(t.uniform_ranks_per_host(), 0);
    expect_connected(t, t.route(0, t.num_ranks() - 1), 0, t.num_ranks() - 1);
  }
  EXPECT_THROW_WITH(presets.get("fat_tree"), UnknownName, "fat-tree");
}

TEST(Presets, DefaultsAsDescribed) {
  const auto presets = topo::topology_presets();
  const topo::PresetParams none;
  EXPECT_EQ(presets.get("switch")(none).num_ranks(), 8);
  EXPECT_EQ(presets.get("nvswitch-node")(none).num_ranks(), 8);
  EXPECT_EQ(presets.get("fat-tree")(none).num_ranks(), 32);
  EXPECT_EQ(presets.get("fat-tree")(none).num_hosts(), 4);
  EXPECT_EQ(presets.get("torus")(none).num_ranks(), 16);
  EXPECT_EQ(presets.get("multi-dim")(none).num_ranks(), 32);
  const Topology a100 = presets.get("dgx-a100")(none);
  EXPECT_EQ(a100.device(0).name, "a100");
  EXPECT_EQ(a100.path_bandwidth(a100.route(0, 8)), 25e9);
}

TEST(Presets, ParamsOverrideDefaults) {
  const auto presets = topo::topology_presets();
  topo::PresetParams p;
  p.ranks = 64;
  p.oversubscription = 2.0;
  p.bandwidth = 25e9;
  p.device = "a100";
  const Topology ft = presets.get("fat-tree")(p);
  EXPECT_EQ(ft.num_ranks(), 64);
  EXPECT_EQ(ft.num_hosts(), 8);
  EXPECT_EQ(ft.device(0).name, "a100");
  EXPECT_EQ(ft.path_bandwidth(ft.route(0, 8)), 25e9);

  topo::PresetParams ring_params;
  ring_params.ranks = 5;
  ring_params.latency = Time::us(2);
  const Topology r = presets.get("ring")(ring_params);
  EXPECT_EQ(r.num_ranks(), 5);
  EXPECT_EQ(r.path_latency(r.route(0, 2)), Time::us(4));

  topo::PresetParams torus_params;
  torus_params.ranks = 12;
  EXPECT_EQ(presets.get("torus")(torus_params).description.find("3x4") != std::string::npos, true);
  torus_params.dims = std::vector<int>{2, 2, 3};
  EXPECT_EQ(presets.get("torus")(torus_params).num_ranks(), 12);

  topo::PresetParams md;
  md.dims = std::vector<int>{4, 2, 2};
  md.intra_bandwidth = 900e9;
  const Topology m = presets.get("multi-dim")(md);
  EXPECT_EQ(m.num_ranks(), 16);
  EXPECT_EQ(m.path_bandwidth(m.route(0, 1)), 900e9);

  topo::PresetParams nv;
  nv.gpus_per_node = 4;
  nv.intra_bandwidth = 900e9;
  const Topology n = presets.get("nvswitch-node")(nv);
  EXPECT_EQ(n.num_ranks(), 4);
  EXPECT_EQ(n.path_bandwidth(n.route(0, 1)), 900e9);

  topo::PresetParams dgx;
  dgx.ranks = 128;
  EXPECT_EQ(presets.get("dgx-h100")(dgx).num_hosts(), 16);
}

TEST(Presets, BadParamsNameTheParameter) {
  const auto presets = topo::topology_presets();
  topo::PresetParams p;
  p.ranks = 12;
  EXPECT_THROW_WITH(presets.get("fat-tree")(p), InvalidArgument, "ranks must be a multiple of gpus_per_node (8)");
  EXPECT_THROW_WITH(presets.get("dgx-h100")(p), InvalidArgument, "ranks must be a multiple of gpus_per_node");
  p.ranks = 0;
  EXPECT_THROW_WITH(presets.get("switch")(p), InvalidArgument, "ranks must be in 1..");

  topo::PresetParams dims;
  dims.dims = std::vector<int>{4, 4};
  EXPECT_THROW_WITH(presets.get("ring")(dims), InvalidArgument, "does not take 'dims'");
  try {
    presets.get("ring")(dims);
    ADD_FAILURE() << "no error for dims on a ring";
  } catch (const topo::UnsupportedPresetParam& e) {  // what the edges word as keys or flags
    EXPECT_EQ(e.preset, "ring");
    EXPECT_EQ(e.param, "dims");
    EXPECT_EQ(e.accepted, (std::vector<std::string>{"ranks", "bandwidth", "latency", "device"}));
  }
  dims.ranks = 8;
  EXPECT_THROW_WITH(presets.get("torus")(dims), InvalidArgument, "ranks (8) must equal the product of dims");

  topo::PresetParams bw;
  bw.bandwidth = -1;
  EXPECT_THROW_WITH(presets.get("rail")(bw), InvalidArgument, "bandwidth must be finite and > 0");
  topo::PresetParams lat;
  lat.intra_latency = Time::us(-1);
  EXPECT_THROW_WITH(presets.get("dgx-a100")(lat), InvalidArgument, "intra_latency must be >= 0");
  topo::PresetParams over;
  over.oversubscription = 0.9;
  EXPECT_THROW_WITH(presets.get("fat-tree")(over), InvalidArgument, "oversubscription");
  topo::PresetParams dev;
  dev.device = "tpu";
  EXPECT_THROW_WITH(presets.get("switch")(dev), UnknownName, "h100");
  topo::PresetParams conflict;
  conflict.bandwidth = 100e9;
  conflict.intra_bandwidth = 200e9;
  EXPECT_THROW_WITH(presets.get("nvswitch-node")(conflict), InvalidArgument, "must agree");
}

// ---- scale ----------------------------------------------------------------------------------------------

// Ring neighbours on a 4,096-GPU cluster take the shortest routes (how fast routing is, is the
// benchmarks' business: no test has a wall-clock bound).
TEST(Scale, RingNeighbourRoutesOn4096Ranks) {
  const Topology t = topo::dgx_h100_cluster(512);
  ASSERT_EQ(t.num_ranks(), 4096);
  for (int r = 0; r < t.num_ranks(); ++r) {
    const int next = (r + 1) % t.num_ranks();
    const Path p = t.route(r, next, static_cast<std::uint64_t>(r));
    EXPECT_EQ(p.size(), t.host_of_rank(r) == t.host_of_rank(next) ? 2u : 4u);
  }

  const Topology torus = topo::torus({64, 64}, kLink, kH100);
  for (int r = 0; r < torus.num_ranks(); ++r) EXPECT_EQ(torus.route(r, (r + 1) % 4096).size(), r % 64 == 63 ? 2u : 1u);
}

}  // namespace
}  // namespace twinbed
