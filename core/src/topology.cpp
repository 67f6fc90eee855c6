#include "twinbed/core/topology.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <utility>

#include "twinbed/core/error.hpp"
#include "twinbed/core/hash.hpp"

namespace twinbed {

namespace {

// ECMP needs a choice that is deterministic across runs and machines (so no std::hash) yet spreads
// neighbouring flow keys: splitmix64 (core/hash.hpp).

std::string rank_text(int rank) { return "rank " + std::to_string(rank); }

}  // namespace

NodeId Topology::add_device(std::string name, int host, DeviceSpec spec) {
  if (host < 0) {
    throw InvalidArgument("add_device '" + name + "': host must be >= 0, got " + std::to_string(host));
  }
  const NodeId id = num_nodes();
  nodes_.push_back({.kind = Node::Kind::Device, .name = std::move(name), .rank = num_ranks(), .host = host});
  out_.emplace_back();
  in_.emplace_back();
  rank_nodes_.push_back(id);
  specs_.push_back(std::move(spec));
  return id;
}

NodeId Topology::add_switch(std::string name) {
  const NodeId id = num_nodes();
  nodes_.push_back({.kind = Node::Kind::Switch, .name = std::move(name), .rank = -1, .host = -1});
  out_.emplace_back();
  in_.emplace_back();
  return id;
}

LinkId Topology::add_link(NodeId src, NodeId dst, BytesPerSec bandwidth, Time latency) {
  const auto valid = [&](NodeId n) { return n >= 0 && n < num_nodes(); };
  if (!valid(src) || !valid(dst)) {
    throw InvalidArgument("add_link: unknown node " + std::to_string(valid(src) ? dst : src) + " (nodes are 0.." +
                          std::to_string(num_nodes() - 1) + ")");
  }
  if (src == dst) throw InvalidArgument("add_link: a link from node '" + nodes_[src].name + "' to itself");
  if (!(bandwidth > 0) || !std::isfinite(bandwidth)) {
    throw InvalidArgument("add_link: bandwidth must be finite and > 0 bytes/s, got " + std::to_string(bandwidth));
  }
  if (latency < Time{}) {
    throw InvalidArgument("add_link: latency must be >= 0, got " + std::to_string(latency.picoseconds()) + " ps");
  }
  const LinkId id = num_links();
  links_.push_back({.src = src, .dst = dst, .bandwidth = bandwidth, .latency = latency});
  out_[src].push_back(id);
  in_[dst].push_back(id);
  return id;
}

void Topology::add_duplex(NodeId a, NodeId b, BytesPerSec bandwidth, Time latency) {
  add_link(a, b, bandwidth, latency);
  add_link(b, a, bandwidth, latency);
}

int Topology::num_hosts() const {
  std::set<int> hosts;
  for (NodeId n : rank_nodes_) hosts.insert(nodes_[n].host);
  return static_cast<int>(hosts.size());
}

int Topology::uniform_ranks_per_host() const {
  const int ranks = num_ranks();
  if (ranks == 0) return 0;
  // The first host's block fixes the block size; every later block must be one host, never seen before.
  int per_host = 0;
  while (per_host < ranks && host_of_rank(per_host) == host_of_rank(0)) ++per_host;
  if (ranks % per_host != 0) return 0;
  std::set<int> seen;
  for (int first = 0; first < ranks; first += per_host) {
    const int host = host_of_rank(first);
    if (!seen.insert(host).second) return 0;
    for (int r = first; r < first + per_host; ++r) {
      if (host_of_rank(r) != host) return 0;
    }
  }
  return per_host;
}

// Level-synchronous BFS from the source, recording for every reached node its hop count and, over the
// fewest-hop paths to it, the Pareto front of (bottleneck bandwidth, latency): each entry a path no
// other is both wider and quicker than (a handful at most: one per link class). Before a level is
// expanded, the destination's own in-links say whether it is one hop away (a GPU has a link or two; a
// rail or leaf switch has thousands, which expanding would scan): if so the search stops, every node of
// that level being final, which is all the backtracking reads. Likewise when it is two hops away, where
// reaching its in-neighbours alone is cheaper than expanding the level. A Router keeps its marks between calls
// (reset by a generation stamp), so a call costs what it explores, not the size of the whole graph.
//
// The route is a fewest-hop path, the widest of those, and the quickest of the widest. Equal hop counts
// are common where a server's GPUs share both an NVSwitch and a leaf switch: both are 2 hops; the
// widest keeps intra-node traffic on NVLink. Among equally wide paths the quickest wins: a GPU whose
// rail differs from its peer's reaches it through NVLink to the GPU on the peer's rail rather than
// up through a spine, as NCCL's PXN does ("Doubling all2all Performance with NVIDIA Collective
// Communication Library 2.12", NVIDIA technical blog, 2022: data moves over NVLink "on a GPU on the same
// rail as the destination" in the sender's node first). Of equally quick paths the one whose slow hops
// come last is kept, which puts that NVLink hop in the sender's node. ECMP hashing then chooses among the
// paths still equal (the spines of a fat-tree, the two directions of an even ring, the dimension orders
// of a torus), taken in ascending link id.
Path Topology::route(int src, int dst, std::uint64_t flow_key) const { return Router(*this).route(src, dst, flow_key); }

Router::Router(const Topology& topology)
    : topology_(topology),
      dist_(static_cast<std::size_t>(topology.num_nodes()), 0),
      front_(static_cast<std::size_t>(topology.num_nodes())),
      stamp_(static_cast<std::size_t>(topology.num_nodes()), 0) {}

namespace {

// Adds a path of `width` and `latency` to a Pareto front kept widest first (and so slowest first).
void add_to_front(std::vector<Router::Label>& front, BytesPerSec width, Time latency) {
  for (const auto& l : front) {
    if (l.width >= width && l.latency <= latency) return;  // no better than one already there
  }
  std::erase_if(front, [&](const Router::Label& l) { return l.width <= width && l.latency >= latency; });
  const auto at = std::find_if(front.begin(), front.end(), [&](const Router::Label& l) { return l.width < width; });
  front.insert(at, {width, latency});
}

// The least latency of the paths in `front` at least `width` wide, or Time::max() if none is.
Time quickest_at_least(const std::vector<Router::Label>& front, BytesPerSec width) {
  Time best = Time::max();
  for (const auto& l : front) {
    if (l.width >= width) best = std::min(best, l.latency);
  }
  return best;
}

}  // namespace

Path Router::route(int src, int dst, std::uint64_t flow_key) {
  const Topology& t = topology_;
  const auto check = [&](int r, const char* what) {
    if (r < 0 || r >= t.num_ranks()) {
      throw InvalidArgument(std::string("route: ") + what + " rank " + std::to_string(r) + " out of range 0.." +
                            std::to_string(t.num_ranks() - 1));
    }
  };
  check(src, "source");
  check(dst, "destination");
  if (src == dst) return {};

  if (++generation_ == 0) {  // the stamp wrapped: forget every old mark
    std::fill(stamp_.begin(), stamp_.end(), 0);
    generation_ = 1;
  }
  const auto seen = [&](NodeId v) { return stamp_[v] == generation_; };
  const auto at_level = [&](NodeId v, int level) { return seen(v) && dist_[v] == level; };
  const NodeId source = t.node_of_rank(src);
  const NodeId target = t.node_of_rank(dst);
  stamp_[source] = generation_;
  dist_[source] = 0;
  front_[source].assign(1, {std::numeric_limits<BytesPerSec>::infinity(), Time{}});

  // level_nodes_[level_start_[d] .. level_start_[d + 1]) are the nodes d hops from the source;
  // level_links_[d] counts the out-links scanned expanding level d.
  level_nodes_.assign(1, source);
  level_start_.assign({0, 1});
  level_links_.clear();
  int hops = 0;
  // Whether the destination is two hops from `level`: then only its in-neighbours need reaching from
  // that level, not everything the level links to (a spine's thousands of leaves), when their in-links
  // are the fewer to read. Reached, they form level + 1 (that level's only nodes the backtracking reads).
  const auto reach_in_neighbours = [&](int level) {
    const std::size_t begin = level_start_[static_cast<std::size_t>(level)];
    const std::size_t end = level_start_[static_cast<std::size_t>(level) + 1];
    std::size_t level_out = 0;
    for (std::size_t i = begin; i < end; ++i) level_out += t.out_links(level_nodes_[i]).size();
    std::size_t near_in = 0;
    for (LinkId l : t.in_links(target)) near_in += t.in_links(t.link(l).src).size();
    if (near_in >= level_out) return false;
    const std::size_t first = level_nodes_.size();
    for (LinkId l : t.in_links(target)) {
      const NodeId w = t.link(l).src;
      if (seen(w)) continue;  // reached through an earlier parallel link
      for (LinkId m : t.in_links(w)) {
        const Link& link = t.link(m);
        if (!at_level(link.src, level)) continue;
        if (!seen(w)) {
          stamp_[w] = generation_;
          dist_[w] = level + 1;
          front_[w].clear();
          level_nodes_.push_back(w);
        }
        for (const Label& from : front_[link.src]) add_to_front(front_[w], std::min(from.width, link.bandwidth), from.latency + link.latency);
      }
    }
    if (level_nodes_.size() == first) return false;
    level_links_.push_back(std::numeric_limits<std::size_t>::max());  // not expanded: backtrack by in-links
    level_start_.push_back(level_nodes_.size());
    return true;
  };
  for (int level = 0; hops == 0; ++level) {
    const std::size_t begin = level_start_[static_cast<std::size_t>(level)];
    const std::size_t end = level_start_[static_cast<std::size_t>(level) + 1];
    if (begin == end) throw InvalidArgument("route: " + rank_text(dst) + " is unreachable from " + rank_text(src));
    const auto& into_target = t.in_links(target);
    if (std::any_of(into_target.begin(), into_target.end(), [&](LinkId l) { return at_level(t.link(l).src, level); })) {
      hops = level + 1;
      break;
    }
    if (reach_in_neighbours(level)) {
      hops = level + 2;
      break;
    }
    std::size_t scanned = 0;
    for (std::size_t i = begin; i < end; ++i) {
      const NodeId u = level_nodes_[i];
      scanned += t.out_links(u).size();
      for (LinkId l : t.out_links(u)) {
        const Link& link = t.link(l);
        const NodeId v = link.dst;
        if (!seen(v)) {
          stamp_[v] = generation_;
          dist_[v] = level + 1;
          front_[v].clear();
          level_nodes_.push_back(v);
        } else if (dist_[v] != level + 1) {
          continue;
        }
        for (const Label& from : front_[u]) add_to_front(front_[v], std::min(from.width, link.bandwidth), from.latency + link.latency);
      }
    }
    level_links_.push_back(scanned);
    level_start_.push_back(level_nodes_.size());
  }

  // The widest path into the destination, and the quickest of those.
  BytesPerSec width = 0;
  Time latency = Time::max();
  for (LinkId l : t.in_links(target)) {
    const Link& link = t.link(l);
    if (!at_level(link.src, hops - 1)) continue;
    for (const Label& from : front_[link.src]) {
      const BytesPerSec w = std::min(from.width, link.bandwidth);
      const Time lat = from.latency + link.latency;
      if (w > width || (w == width && lat < latency)) {
        width = w;
        latency = lat;
      }
    }
  }

  // Backtrack from the destination: at each node, the incoming links from one level closer that
  // continue a path of that width and latency are the equal-cost choices; the flow hash picks one.
  // They are found from whichever side is smaller: the node's in-links, or the out-links of the level
  // before it.
  const std::uint64_t flow_hash =
      splitmix64(splitmix64(splitmix64(static_cast<std::uint64_t>(src)) ^ static_cast<std::uint64_t>(dst)) ^ flow_key);
  Path path(static_cast<std::size_t>(hops));
  NodeId v = target;
  for (int d = hops; d >= 1; --d) {
    const auto level = static_cast<std::size_t>(d - 1);
    const auto continues = [&](LinkId l) {
      const Link& link = t.link(l);
      return link.bandwidth >= width && quickest_at_least(front_[link.src], width) + link.latency == latency;
    };
    choices_.clear();
    if (d < hops && level_links_[level] < t.in_links(v).size()) {
      for (std::size_t i = level_start_[level]; i < level_start_[level + 1]; ++i) {
        for (LinkId l : t.out_links(level_nodes_[i])) {
          if (t.link(l).dst == v && continues(l)) choices_.push_back(l);
        }
      }
      std::sort(choices_.begin(), choices_.end());
    } else {
      for (LinkId l : t.in_links(v)) {
        if (at_level(t.link(l).src, d - 1) && continues(l)) choices_.push_back(l);
      }
    }
    // Non-empty: the path of this width and latency into v continues from some node at level d-1. Of
    // those, the slowest link: equal paths take their slow (network) hops last and their fast ones
    // first, so a message that changes rails crosses NVLink in the sender's node, as NCCL's PXN
    // forwards it through the sender-side GPU on the destination's rail (see route() in the header),
    // never in the receiver's.
    Time slowest;
    for (LinkId l : choices_) slowest = std::max(slowest, t.link(l).latency);
    std::erase_if(choices_, [&](LinkId l) { return t.link(l).latency != slowest; });
    const std::uint64_t h = splitmix64(flow_hash ^ (static_cast<std::uint64_t>(v) * 0x9E3779B97F4A7C15ULL));
    const LinkId chosen = choices_[static_cast<std::size_t>(h % choices_.size())];
    path[static_cast<std::size_t>(d - 1)] = chosen;
    latency -= t.link(chosen).latency;
    v = t.link(chosen).src;
  }
  return path;
}

Time Topology::path_latency(const Path& p) const {
  Time total;
  for (LinkId l : p) total += link(l).latency;
  return total;
}

BytesPerSec Topology::path_bandwidth(const Path& p) const {
  // An empty path (a rank to itself) has no bottleneck.
  BytesPerSec narrowest = std::numeric_limits<BytesPerSec>::infinity();
  for (LinkId l : p) narrowest = std::min(narrowest, link(l).bandwidth);
  return narrowest;
}

void Topology::validate() const {
  if (num_ranks() == 0) throw InvalidArgument("topology has no ranks (devices); at least one is needed");
  // Every rank reaches rank 0 and rank 0 reaches every rank, hence every rank reaches every other:
  // one forward and one reverse search instead of all pairs.
  const auto reached_from_rank0 = [&](const std::vector<std::vector<LinkId>>& adjacency, bool forward) {
    std::vector<char> reached(static_cast<std::size_t>(num_nodes()), 0);
    std::vector<NodeId> stack{rank_nodes_[0]};
    reached[static_cast<std::size_t>(rank_nodes_[0])] = 1;
    while (!stack.empty()) {
      const NodeId u = stack.back();
      stack.pop_back();
      for (LinkId l : adjacency[u]) {
        const NodeId v = forward ? links_[l].dst : links_[l].src;
        if (!reached[static_cast<std::size_t>(v)]) {
          reached[static_cast<std::size_t>(v)] = 1;
          stack.push_back(v);
        }
      }
    }
    return reached;
  };
  const std::vector<char> out_of_0 = reached_from_rank0(out_, true);
  const std::vector<char> into_0 = reached_from_rank0(in_, false);
  for (int r = 1; r < num_ranks(); ++r) {
    const auto n = static_cast<std::size_t>(rank_nodes_[r]);
    if (!out_of_0[n]) throw InvalidArgument("topology is disconnected: " + rank_text(r) + " is unreachable from rank 0");
    if (!into_0[n]) throw InvalidArgument("topology is disconnected: rank 0 is unreachable from " + rank_text(r));
  }
}

}  // namespace twinbed
