// Network models: how long messages take on a Topology.
//
// A Network carries flows between ranks on one Engine. start_flow() begins a message now; its
// callback runs when the last byte has arrived. Models are found by name (network_models()):
//  - "flow": flow-level (fluid) model. Active flows share every link by max-min fairness. A flow
//    drains at its fair rate, releases its bandwidth when drained, and is delivered one path latency
//    (sum of per-hop latencies) later. Rates are recomputed incrementally: only the flows connected to
//    a changed link (through shared links) are recomputed, and all starts and ends that happen at the
//    same instant are handled in one recomputation, so symmetric flows that finish together cost one
//    event, not one each.
//  - "analytical": contention-free; a message takes path latency + bytes / bottleneck bandwidth.
//    For huge sweeps, and the closed forms.
// Messages between the same pair of ranks follow one ECMP path (flow_key 0), as one connection would.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "twinbed/core/registry.hpp"
#include "twinbed/core/topology.hpp"
#include "twinbed/sim/engine.hpp"

namespace twinbed::sim {

// Routes between rank pairs, computed once each. Borrows the topology; not thread-safe.
class RouteCache {
 public:
  explicit RouteCache(const Topology& topology) : topology_(topology), router_(topology) {}
  const Path& path(int src, int dst);
  const Topology& topology() const { return topology_; }

 private:
  const Topology& topology_;
  Router router_;
  std::unordered_map<std::uint64_t, Path> paths_;  // references stay valid on rehash
};

class Network {
 public:
  virtual ~Network() = default;
  // Sends `bytes` from rank `src` to rank `dst`, starting at the engine's now. `on_delivered` runs as
  // an engine event when the message has fully arrived. A message to oneself arrives at once.
  virtual void start_flow(int src, int dst, Bytes bytes, Engine::Callback on_delivered) = 0;
  virtual int active_flows() const = 0;
};

// Both borrow the engine and the route cache, which must outlive the network.
using NetworkFactory = std::function<std::unique_ptr<Network>(Engine&, RouteCache&)>;

struct NetworkModel {
  NetworkFactory make;
  // False when messages never slow each other down, so a message's time is known when it starts.
  bool shares_links = true;
};
Registry<NetworkModel> network_models();  // "flow", "analytical"

std::unique_ptr<Network> make_flow_network(Engine& engine, RouteCache& routes);
std::unique_ptr<Network> make_analytical_network(Engine& engine, RouteCache& routes);

}  // namespace twinbed::sim
