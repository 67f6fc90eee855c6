// The flow-level network against hand-computed cases and against an independent, deliberately naive
// max-min implementation on random flow sets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "twinbed/core/topology.hpp"
#include "twinbed/sim/network.hpp"

using namespace twinbed;
using namespace twinbed::sim;

namespace {

constexpr double B = 100 * GBps;

// n devices on one switch, one duplex link each.
Topology star(int n, BytesPerSec bw, Time latency) {
  Topology t;
  NodeId sw = t.add_switch("sw");
  for (int i = 0; i < n; ++i) {
    NodeId d = t.add_device("d" + std::to_string(i), 0, DeviceSpec{});
    t.add_duplex(d, sw, bw, latency);
  }
  return t;
}

struct Deliveries {
  std::map<int, Time> done;  // flow index -> delivery time
};

// Starts flow i = (src, dst, bytes) at start time; returns delivery times.
Deliveries run_flows(const Topology& topo, const std::string& model,
              const std::vector<std::tuple<Time, int, int, Bytes>>& flows) {
  Engine engine;
  RouteCache routes(topo);
  auto net = network_models().get(model).make(engine, routes);
  Deliveries out;
  for (std::size_t i = 0; i < flows.size(); ++i) {
    auto [at, src, dst, bytes] = flows[i];
    int idx = static_cast<int>(i);
    engine.schedule_at(at, [&, idx, src = src, dst = dst, bytes = bytes] {
      net->start_flow(src, dst, bytes, [&, idx] { out.done[idx] = engine.now(); });
    });
  }
  engine.run();
  EXPECT_EQ(net->active_flows(), 0);
  return out;
}

}  // namespace

TEST(FlowNetwork, OneFlowTakesLatencyPlusBytesOverBandwidth) {
  Topology t = star(2, B, Time::us(1));
  Deliveries r = run_flows(t, "flow", {{Time{}, 0, 1, 1'000'000}});
  EXPECT_EQ(r.done[0], Time::us(2) + transfer_time(1'000'000, B));
}

TEST(FlowNetwork, TwoFlowsSharingALinkGetHalfEachAndTheSurvivorTheWholeLinkAfter) {
  Topology t = star(3, B, Time{});
  const Bytes S = 1'000'000;
  Deliveries r = run_flows(t, "flow", {{Time{}, 0, 2, S}, {Time{}, 1, 2, 2 * S}});
  // Both drain at B/2 into rank 2: the first ends at 2S/B, the second has S left, then gets all of B.
  EXPECT_NEAR(r.done[0].seconds(), 2.0 * S / B, 1e-12);
  EXPECT_NEAR(r.done[1].seconds(), 3.0 * S / B, 1e-12);
}

TEST(FlowNetwork, MaxMinGivesTheUnusedShareToTheUnconstrainedFlow) {
  // Links: a->sw 100, b->sw 100, sw->c 100 shared by a->c and b->c, plus b's slow path: a flow b->d
  // where sw->d is 20. b->d gets 20, leaving b's uplink 80; a->c and b->c share sw->c at 50 each.
  Topology t;
  NodeId sw = t.add_switch("sw");
  NodeId a = t.add_device("a", 0, DeviceSpec{}), b = t.add_device("b", 1, DeviceSpec{});
  NodeId c = t.add_device("c", 2, DeviceSpec{}), d = t.add_device("d", 3, DeviceSpec{});
  t.add_duplex(a, sw, 100 * GBps, Time{});
  t.add_duplex(b, sw, 100 * GBps, Time{});
  t.add_duplex(c, sw, 100 * GBps, Time{});
  t.add_duplex(d, sw, 20 * GBps, Time{});
  const Bytes S = 1'000'000'000;
  Deliveries r = run_flows(t, "flow", {{Time{}, 0, 2, S}, {Time{}, 1, 2, S}, {Time{}, 1, 3, S}});
  EXPECT_NEAR(r.done[0].seconds(), S / (50 * GBps), 1e-9);
  EXPECT_NEAR(r.done[1].seconds(), S / (50 * GBps), 1e-9);
  // b->d drains at 20 GB/s throughout (its own bottleneck).
  EXPECT_NEAR(r.done[2].seconds(), S / (20 * GBps), 1e-9);
}

TEST(AnalyticalNetwork, IgnoresContention) {
  Topology t = star(3, B, Time::us(1));
  const Bytes S = 1'000'000;
  Deliveries r = run_flows(t, "analytical", {{Time{}, 0, 2, S}, {Time{}, 1, 2, S}});
  EXPECT_EQ(r.done[0], Time::us(2) + transfer_time(S, B));
  EXPECT_EQ(r.done[1], r.done[0]);
}

TEST(FlowNetwork, ZeroByteAndSelfMessagesCostOnlyLatency) {
  Topology t = star(2, B, Time::us(1));
  Deliveries r = run_flows(t, "flow", {{Time{}, 0, 1, 0}, {Time::us(5), 1, 1, 100}});
  EXPECT_EQ(r.done[0], Time::us(2));
  EXPECT_EQ(r.done[1], Time::us(5));
}

// A naive reference: at every event, recompute max-min rates of all active flows from scratch by
// progressive filling, advance to the next start or finish. Independent of FlowNetwork's incremental
// bookkeeping, component search and batching.
std::vector<double> reference_maxmin(const Topology& topo, const std::vector<std::tuple<Time, int, int, Bytes>>& flows) {
  struct F { double start, remaining, rate = 0; Path path; bool active = false, done = false; double end = 0; };
  std::vector<F> fs;
  for (auto& [at, s, d, b] : flows) fs.push_back({at.seconds(), static_cast<double>(b), 0, topo.route(s, d)});
  double now = 0;
  while (true) {
    for (auto& f : fs) if (!f.done && !f.active && f.start <= now + 1e-15) f.active = true;
    // progressive filling over all active flows
    std::vector<double> cap(topo.num_links());
    std::vector<int> cnt(topo.num_links(), 0);
    for (int l = 0; l < topo.num_links(); ++l) cap[l] = topo.link(l).bandwidth;
    std::vector<bool> frozen(fs.size(), true);
    for (std::size_t i = 0; i < fs.size(); ++i) if (fs[i].active) { frozen[i] = false; for (auto l : fs[i].path) cnt[l]++; }
    while (true) {
      double best = 1e300; int bl = -1;
      for (int l = 0; l < topo.num_links(); ++l) if (cnt[l] > 0 && cap[l] / cnt[l] < best) { best = cap[l] / cnt[l]; bl = l; }
      if (bl < 0) break;
      for (std::size_t i = 0; i < fs.size(); ++i) {
        if (frozen[i] || std::find(fs[i].path.begin(), fs[i].path.end(), bl) == fs[i].path.end()) continue;
        frozen[i] = true; fs[i].rate = best;
        for (auto l : fs[i].path) { cap[l] -= best; cnt[l]--; }
      }
    }
    double next = 1e300;
    for (auto& f : fs) {
      if (f.active) next = std::min(next, now + f.remaining / f.rate);
      else if (!f.done) next = std::min(next, f.start);
    }
    if (next == 1e300) break;
    for (auto& f : fs) {
      if (!f.active) continue;
      f.remaining -= f.rate * (next - now);
      if (f.remaining <= 1e-3) {  // bytes: rounding residue only
        f.active = false;
        f.done = true;
        f.end = next + topo.path_latency(f.path).seconds();
      }
    }
    now = next;
  }
  std::vector<double> ends;
  for (auto& f : fs) ends.push_back(f.end);
  return ends;
}

TEST(FlowNetwork, MatchesANaiveMaxMinOnRandomFlowSets) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    // Random two-switch topology with random link speeds.
    Topology t;
    NodeId s0 = t.add_switch("s0"), s1 = t.add_switch("s1");
    std::uniform_real_distribution<double> bw(10, 100);
    t.add_duplex(s0, s1, bw(rng) * GBps, Time::ns(100));
    const int n = 6;
    for (int i = 0; i < n; ++i) {
      NodeId d = t.add_device("d" + std::to_string(i), i, DeviceSpec{});
      t.add_duplex(d, i % 2 ? s1 : s0, bw(rng) * GBps, Time::ns(200));
    }
    std::vector<std::tuple<Time, int, int, Bytes>> flows;
    std::uniform_int_distribution<int> rank(0, n - 1);
    std::uniform_int_distribution<Bytes> size(1'000'000, 50'000'000);
    std::uniform_int_distribution<int> start_us(0, 500);
    for (int f = 0; f < 12; ++f) {
      int s = rank(rng), d = rank(rng);
      if (s == d) d = (d + 1) % n;
      flows.emplace_back(Time::us(start_us(rng)), s, d, size(rng));
    }
    Deliveries got = run_flows(t, "flow", flows);
    std::vector<double> want = reference_maxmin(t, flows);
    for (std::size_t i = 0; i < flows.size(); ++i) {
      EXPECT_NEAR(got.done[static_cast<int>(i)].seconds(), want[i], 1e-9 + 1e-6 * want[i]) << "trial " << trial << " flow " << i;
    }
  }
}
