#include "twinbed/sim/network.hpp"

#include <algorithm>
#include <cmath>
#include <queue>
#include <vector>

namespace twinbed::sim {

const Path& RouteCache::path(int src, int dst) {
  std::uint64_t key = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(src)) << 32) |
                      static_cast<std::uint32_t>(dst);
  auto it = paths_.find(key);
  if (it == paths_.end()) it = paths_.emplace(key, router_.route(src, dst)).first;
  return it->second;
}

namespace {

// Contention-free: every message sees the whole bottleneck bandwidth of its path.
class AnalyticalNetwork final : public Network {
 public:
  AnalyticalNetwork(Engine& engine, RouteCache& routes) : engine_(engine), routes_(routes) {}

  void start_flow(int src, int dst, Bytes bytes, Engine::Callback on_delivered) override {
    Time t = engine_.now();
    if (src != dst) {
      const Path& p = routes_.path(src, dst);
      const Topology& topo = routes_.topology();
      t += topo.path_latency(p) + transfer_time(bytes, topo.path_bandwidth(p));
    }
    engine_.schedule_at(t, std::move(on_delivered));
  }
  int active_flows() const override { return 0; }

 private:
  Engine& engine_;
  RouteCache& routes_;
};

// Flow-level max-min fair sharing.
//
// Invariant: every active flow has a rate fixed by the last recomputation of its component and a
// completion entry in `completions_` for the time it drains at that rate. Recomputation touches one
// connected component of the flow/link graph (flows joined by shared links), found from the links
// whose flow set changed since the last recomputation.
class FlowNetwork final : public Network {
 public:
  FlowNetwork(Engine& engine, RouteCache& routes)
      : engine_(engine), routes_(routes), links_(static_cast<std::size_t>(routes.topology().num_links())) {}

  void start_flow(int src, int dst, Bytes bytes, Engine::Callback on_delivered) override {
    if (src == dst) {
      engine_.schedule_at(engine_.now(), std::move(on_delivered));
      return;
    }
    const Path& path = routes_.path(src, dst);
    Time latency = routes_.topology().path_latency(path);
    if (bytes <= 0) {
      engine_.schedule_at(engine_.now() + latency, std::move(on_delivered));
      return;
    }
    int id = new_flow();
    Flow& f = flows_[id];
    f.path = &path;
    f.remaining = static_cast<double>(bytes);
    f.rate = 0;
    f.updated = engine_.now();
    f.latency = latency;
    f.done = std::move(on_delivered);
    f.active = true;
    f.pos.resize(path.size());
    for (std::size_t i = 0; i < path.size(); ++i) {
      auto& on_link = links_[path[i]].flows;
      f.pos[i] = static_cast<int>(on_link.size());
      on_link.push_back(id);
      mark_dirty(path[i]);
    }
    ++active_;
    // All starts of this instant share one recomputation, run after the events already queued for now.
    if (!recompute_queued_) {
      recompute_queued_ = true;
      engine_.schedule_at(engine_.now(), [this] {
        recompute_queued_ = false;
        recompute();
      });
    }
  }

  int active_flows() const override { return active_; }

 private:
  struct Flow {
    const Path* path = nullptr;
    std::vector<int> pos;  // pos[i]: index of this flow in links_[path[i]].flows
    double remaining = 0;  // bytes still to drain at time `updated`
    double rate = 0;       // bytes/s
    Time updated;
    Time latency;
    Engine::Callback done;
    std::uint32_t version = 0;
    std::uint32_t stamp = 0;
    bool active = false;
  };
  struct LinkState {
    std::vector<int> flows;
    std::uint32_t stamp = 0;
    bool dirty = false;
    double capacity = 0;  // scratch for progressive filling
    int unfrozen = 0;
  };
  struct Completion {
    std::int64_t time;
    int flow;
    std::uint32_t version;
    bool operator>(const Completion& o) const { return time != o.time ? time > o.time : flow > o.flow; }
  };

  int new_flow() {
    if (!free_.empty()) {
      int id = free_.back();
      free_.pop_back();
      return id;
    }
    flows_.emplace_back();
    return static_cast<int>(flows_.size()) - 1;
  }

  void mark_dirty(LinkId l) {
    if (!links_[l].dirty) {
      links_[l].dirty = true;
      dirty_.push_back(l);
    }
  }

  void remove_from_links(int id) {
    Flow& f = flows_[id];
    for (std::size_t i = 0; i < f.path->size(); ++i) {
      LinkId l = (*f.path)[i];
      auto& on_link = links_[l].flows;
      int moved = on_link.back();
      on_link[f.pos[i]] = moved;
      on_link.pop_back();
      if (moved != id) {
        Flow& m = flows_[moved];
        auto it = std::find(m.path->begin(), m.path->end(), l);
        m.pos[static_cast<std::size_t>(it - m.path->begin())] = f.pos[i];
      }
      mark_dirty(l);
    }
  }

  // Max-min fair rates for the component(s) reachable from the dirty links, by progressive filling:
  // repeatedly take the link whose remaining capacity per unfrozen flow is smallest, give each of its
  // unfrozen flows that share, and charge it to every link those flows cross.
  void recompute() {
    if (dirty_.empty()) return;
    const Topology& topo = routes_.topology();
    ++stamp_;
    comp_flows_.clear();
    comp_links_.clear();
    for (LinkId l : dirty_) {
      links_[l].dirty = false;
      if (links_[l].stamp != stamp_) {
        links_[l].stamp = stamp_;
        comp_links_.push_back(l);
      }
    }
    dirty_.clear();
    for (std::size_t i = 0; i < comp_links_.size(); ++i) {
      for (int id : links_[comp_links_[i]].flows) {
        Flow& f = flows_[id];
        if (f.stamp == stamp_) continue;
        f.stamp = stamp_;
        comp_flows_.push_back(id);
        for (LinkId l : *f.path) {
          if (links_[l].stamp != stamp_) {
            links_[l].stamp = stamp_;
            comp_links_.push_back(l);
          }
        }
      }
    }
    const Time now = engine_.now();
    old_rates_.clear();
    for (int id : comp_flows_) {
      Flow& f = flows_[id];
      old_rates_.push_back(f.rate);
      f.rate = -1;  // unfrozen
    }
    using Share = std::pair<double, LinkId>;
    std::priority_queue<Share, std::vector<Share>, std::greater<>> shares;
    for (LinkId l : comp_links_) {
      LinkState& s = links_[l];
      s.capacity = topo.link(l).bandwidth;
      s.unfrozen = static_cast<int>(s.flows.size());
      if (s.unfrozen > 0) shares.push({s.capacity / s.unfrozen, l});
    }
    while (!shares.empty()) {
      auto [share, l] = shares.top();
      shares.pop();
      LinkState& s = links_[l];
      if (s.unfrozen == 0 || share != s.capacity / s.unfrozen) continue;  // stale entry
      for (int id : s.flows) {
        Flow& f = flows_[id];
        if (f.rate >= 0) continue;
        f.rate = share;
        for (LinkId m : *f.path) {
          LinkState& t = links_[m];
          t.capacity = std::max(0.0, t.capacity - share);
          if (--t.unfrozen > 0 && m != l) shares.push({t.capacity / t.unfrozen, m});
        }
      }
    }
    // A flow whose rate did not change keeps its drain state and completion: it finishes exactly when
    // it would have alone at that rate, not re-rounded at every change elsewhere in its component.
    for (std::size_t i = 0; i < comp_flows_.size(); ++i) {
      Flow& f = flows_[comp_flows_[i]];
      const double old_rate = old_rates_[i];
      if (f.rate == old_rate && old_rate > 0) continue;
      f.remaining = std::max(0.0, f.remaining - old_rate * (now - f.updated).seconds());
      f.updated = now;
      ++f.version;
      completions_.push({(now + drain_time(f.remaining, f.rate)).picoseconds(), comp_flows_[i], f.version});
    }
    arm_wakeup();
  }

  void arm_wakeup() {
    if (completions_.empty()) return;
    std::int64_t t = completions_.top().time;
    if (wakeup_armed_ && wakeup_time_ <= t) return;
    wakeup_armed_ = true;
    wakeup_time_ = t;
    engine_.schedule_at(Time::ps(t), [this, t] { on_wakeup(t); });
  }

  // Completes every flow that has drained by now (one event for flows finishing together), then
  // recomputes the rates of the flows they shared links with.
  void on_wakeup(std::int64_t t) {
    if (wakeup_armed_ && wakeup_time_ == t) wakeup_armed_ = false;
    const std::int64_t now = engine_.now().picoseconds();
    while (!completions_.empty() && completions_.top().time <= now) {
      Completion c = completions_.top();
      completions_.pop();
      Flow& f = flows_[c.flow];
      if (!f.active || f.version != c.version) continue;  // superseded by a later recomputation
      remove_from_links(c.flow);
      f.active = false;
      --active_;
      engine_.schedule_at(engine_.now() + f.latency, std::move(f.done));
      f.done = nullptr;
      free_.push_back(c.flow);
    }
    recompute();
    arm_wakeup();
  }

  Engine& engine_;
  RouteCache& routes_;
  std::vector<LinkState> links_;
  std::vector<Flow> flows_;
  std::vector<int> free_;
  std::vector<LinkId> dirty_;
  std::vector<int> comp_flows_;
  std::vector<LinkId> comp_links_;
  std::vector<double> old_rates_;  // per comp_flows_ entry: its rate before the recomputation
  std::priority_queue<Completion, std::vector<Completion>, std::greater<>> completions_;
  std::uint32_t stamp_ = 0;
  int active_ = 0;
  bool recompute_queued_ = false;
  bool wakeup_armed_ = false;
  std::int64_t wakeup_time_ = 0;
};

}  // namespace

std::unique_ptr<Network> make_flow_network(Engine& engine, RouteCache& routes) {
  return std::make_unique<FlowNetwork>(engine, routes);
}

std::unique_ptr<Network> make_analytical_network(Engine& engine, RouteCache& routes) {
  return std::make_unique<AnalyticalNetwork>(engine, routes);
}

Registry<NetworkModel> network_models() {
  Registry<NetworkModel> r("network model");
  r.add("flow", "flow-level: max-min fair sharing of links, recomputed incrementally, per-hop latency",
        {make_flow_network, true});
  r.add("analytical", "contention-free: latency + bytes / bottleneck bandwidth per message",
        {make_analytical_network, false});
  return r;
}

}  // namespace twinbed::sim
