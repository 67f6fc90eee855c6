// Topology: devices (ranks), switches and directed links {bandwidth, latency}, with ECMP routing.
//
// A Topology is built once (by a builder, a preset or JSON) and then read-only. Ranks are the devices
// in the order they were added: rank r is the r-th device. Every device belongs to a host (a server:
// ranks of one host share its intra-node fabric); hierarchical collectives group ranks by host.
// A full-duplex cable is two directed links. Bandwidth is bytes/s per direction.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "twinbed/core/device.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed {

using NodeId = int;
using LinkId = int;

struct Link {
  NodeId src = 0;
  NodeId dst = 0;
  BytesPerSec bandwidth = 0;
  Time latency;
  bool operator==(const Link&) const = default;
};

struct Node {
  enum class Kind { Device, Switch };
  Kind kind = Kind::Switch;
  std::string name;
  int rank = -1;  // devices only
  int host = -1;  // devices only
  bool operator==(const Node&) const = default;
};

// A route: the links a message crosses, in order from source to destination.
using Path = std::vector<LinkId>;

class Topology {
 public:
  // Adds a device and returns its node id; its rank is the number of devices added before it.
  NodeId add_device(std::string name, int host, DeviceSpec spec);
  NodeId add_switch(std::string name);
  // One directed link. Throws InvalidArgument on an unknown node, bandwidth <= 0 or negative latency.
  LinkId add_link(NodeId src, NodeId dst, BytesPerSec bandwidth, Time latency);
  // Two directed links, one each way.
  void add_duplex(NodeId a, NodeId b, BytesPerSec bandwidth, Time latency);

  int num_ranks() const { return static_cast<int>(rank_nodes_.size()); }
  int num_nodes() const { return static_cast<int>(nodes_.size()); }
  int num_links() const { return static_cast<int>(links_.size()); }
  int num_hosts() const;
  const Node& node(NodeId id) const { return nodes_.at(id); }
  const Link& link(LinkId id) const { return links_.at(id); }
  NodeId node_of_rank(int rank) const { return rank_nodes_.at(rank); }
  int host_of_rank(int rank) const { return nodes_.at(rank_nodes_.at(rank)).host; }
  const DeviceSpec& device(int rank) const { return specs_.at(rank); }
  const std::vector<LinkId>& out_links(NodeId id) const { return out_.at(id); }
  const std::vector<LinkId>& in_links(NodeId id) const { return in_.at(id); }
  // Ranks per host when every host holds the same number of consecutive ranks; 0 otherwise.
  int uniform_ranks_per_host() const;

  // Shortest path (fewest hops) from rank `src` to rank `dst`; among fewest-hop paths the widest
  // (largest bottleneck bandwidth), so a server's GPUs talk over NVLink even when their NICs share a
  // leaf; among the widest the quickest (least latency), so a GPU reaches another rail's GPU through
  // NVLink to its own node's GPU on that rail rather than through a spine, as NCCL's PXN does; among
  // the quickest, the one taking its slow hops last (at each hop back from the destination the
  // slowest link that continues such a path), so that NVLink hop is in the sender's node, as PXN's
  // is, not in the receiver's. Among the remaining equal-cost next hops the choice is ECMP: a
  // deterministic hash of
  // (src, dst, flow_key), so different flows between the same pair may take different paths and
  // identical runs take identical ones. Empty when src == dst.
  // Throws InvalidArgument when dst is unreachable. Cost O(nodes + links) in the worst case; a
  // Router (below) answers many calls without per-call allocation.
  Path route(int src, int dst, std::uint64_t flow_key = 0) const;

  // Sum of the path's link latencies; the smallest bandwidth on it (infinity for an empty path).
  Time path_latency(const Path& p) const;
  BytesPerSec path_bandwidth(const Path& p) const;

  // Throws InvalidArgument unless there is at least one rank and every rank reaches every other.
  void validate() const;

  std::string description;  // one line for summaries ("fat-tree: 16 nodes x 8 GPUs, 2:1")

 private:
  std::vector<Node> nodes_;
  std::vector<Link> links_;
  std::vector<std::vector<LinkId>> out_;
  std::vector<std::vector<LinkId>> in_;  // incoming links, for route()'s backtracking and validate()
  std::vector<NodeId> rank_nodes_;
  std::vector<DeviceSpec> specs_;
};

// Topology::route for many pairs: the same paths, with visit marks kept between calls (reset by a
// generation stamp), so a call costs what its search explores and allocates nothing. Borrows the
// topology, which must outlive it. Not thread-safe: one Router per thread.
class Router {
 public:
  // A path's bottleneck bandwidth and latency.
  struct Label {
    BytesPerSec width;
    Time latency;
  };

  explicit Router(const Topology& topology);
  Path route(int src, int dst, std::uint64_t flow_key = 0);

 private:
  const Topology& topology_;
  std::vector<int> dist_;                  // hop count from the source, valid where stamp_ == generation_
  std::vector<std::vector<Label>> front_;  // the Pareto front of the fewest-hop paths to the node
  std::vector<std::uint32_t> stamp_;
  std::uint32_t generation_ = 0;
  std::vector<NodeId> level_nodes_;        // the nodes reached, level by level
  std::vector<std::size_t> level_start_;   // where each level begins in level_nodes_
  std::vector<std::size_t> level_links_;   // out-links scanned expanding each level
  std::vector<LinkId> choices_;
};

}  // namespace twinbed
