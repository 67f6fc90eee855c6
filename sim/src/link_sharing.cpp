#include "twinbed/sim/link_sharing.hpp"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <queue>

namespace twinbed::sim {

LinkSharing::LinkSharing(Engine& engine, const Topology& topology)
    : engine_(engine),
      topology_(topology),
      links_(static_cast<std::size_t>(topology.num_links())),
      link_footprints_(static_cast<std::size_t>(topology.num_links())) {}

void LinkSharing::start(Time alone, const Footprint* footprint, Engine::Callback done) {
  if (alone <= Time{} || footprint == nullptr || footprint->empty()) {
    engine_.schedule_after(alone, std::move(done));
    return;
  }
  int id = 0;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    id = static_cast<int>(activities_.size());
    activities_.emplace_back();
  }
  Activity& a = activities_[static_cast<std::size_t>(id)];
  a.footprint = footprint;
  a.alone_ps = static_cast<double>(alone.picoseconds());
  a.remaining_ps = a.alone_ps;
  a.speed = 1;
  a.updated = engine_.now();
  a.done = std::move(done);
  a.active = true;
  a.entered = false;
  ++active_;
  a.footprint_id = footprint_id(footprint);
  const std::vector<int>& overlapping = footprints_[static_cast<std::size_t>(a.footprint_id)].overlapping;
  const bool company = std::any_of(overlapping.begin(), overlapping.end(),
                                   [&](int o) { return footprints_[static_cast<std::size_t>(o)].active > 0; });
  ++footprints_[static_cast<std::size_t>(a.footprint_id)].active;
  if (!company) {
    // No other active activity can be on its links: alone, as below, without entering it on them.
    footprints_[static_cast<std::size_t>(a.footprint_id)].not_entered = id;
    schedule_completion(id);
    return;
  }
  // Whatever it might meet is entered first, as if every activity had been entered at its start.
  for (int o : overlapping) {
    FootprintState& f = footprints_[static_cast<std::size_t>(o)];
    if (f.not_entered >= 0) add_to_links(f.not_entered);
    f.not_entered = -1;
  }
  if (add_to_links(id)) {
    // Nothing to share with: it runs at full speed and ends exactly `alone` from now unless another
    // activity joins one of its links.
    schedule_completion(id);
    return;
  }
  a.speed = 0;  // not yet rated: the recomputation gives it a speed and a completion
  std::vector<LinkId> seeds;
  seeds.reserve(footprint->size());
  for (const LinkBytes& lb : *footprint) seeds.push_back(lb.link);
  recompute(seeds);
}

int LinkSharing::footprint_id(const Footprint* footprint) {
  const auto [it, fresh] = footprint_ids_.try_emplace(footprint, static_cast<int>(footprints_.size()));
  if (!fresh) return it->second;
  const int id = it->second;
  footprints_.emplace_back();
  std::vector<int> overlapping{id};
  for (const LinkBytes& lb : *footprint) {
    std::vector<int>& on = link_footprints_[lb.link];
    overlapping.insert(overlapping.end(), on.begin(), on.end());
    on.push_back(id);
  }
  std::sort(overlapping.begin(), overlapping.end());
  overlapping.erase(std::unique(overlapping.begin(), overlapping.end()), overlapping.end());
  for (int o : overlapping) {
    if (o != id) footprints_[static_cast<std::size_t>(o)].overlapping.push_back(id);
  }
  footprints_[static_cast<std::size_t>(id)].overlapping = std::move(overlapping);
  return id;
}

bool LinkSharing::add_to_links(int id) {
  Activity& a = activities_[static_cast<std::size_t>(id)];
  a.entered = true;
  ++entered_;
  a.pos.resize(a.footprint->size());
  bool alone = true;
  for (std::size_t i = 0; i < a.footprint->size(); ++i) {
    auto& on = links_[(*a.footprint)[i].link].activities;
    alone = alone && on.empty();
    a.pos[i] = static_cast<int>(on.size());
    on.push_back({id, static_cast<int>(i)});
  }
  return alone;
}

void LinkSharing::remove_from_links(int id, std::vector<LinkId>& still_used) {
  Activity& a = activities_[static_cast<std::size_t>(id)];
  for (std::size_t i = 0; i < a.footprint->size(); ++i) {
    const LinkId l = (*a.footprint)[i].link;
    auto& on = links_[l].activities;
    const OnLink moved = on.back();
    on[static_cast<std::size_t>(a.pos[i])] = moved;
    on.pop_back();
    if (moved.id != id) activities_[static_cast<std::size_t>(moved.id)].pos[static_cast<std::size_t>(moved.index)] = a.pos[i];
    if (!on.empty()) still_used.push_back(l);
  }
}

void LinkSharing::schedule_completion(int id) {
  Activity& a = activities_[static_cast<std::size_t>(id)];
  ++a.version;
  // At full speed from its start the remaining time is a whole number of picoseconds: exact.
  const Time left = a.speed == 1 ? Time::ps(std::llround(a.remaining_ps))
                                 : Time::from_seconds(a.remaining_ps / a.speed * 1e-12);
  const std::uint32_t version = a.version;
  engine_.schedule_at(engine_.now() + left, [this, id, version] { finish(id, version); });
}

void LinkSharing::finish(int id, std::uint32_t version) {
  Activity& a = activities_[static_cast<std::size_t>(id)];
  if (!a.active || a.version != version) return;  // superseded by a later recomputation
  a.active = false;
  --active_;
  FootprintState& f = footprints_[static_cast<std::size_t>(a.footprint_id)];
  --f.active;
  std::vector<LinkId> seeds;  // its links that others still use
  if (a.entered) {
    remove_from_links(id, seeds);
  } else {
    f.not_entered = -1;  // it was alone on its links
  }
  Engine::Callback done = std::move(a.done);
  a.done = nullptr;
  free_.push_back(id);
  if (!seeds.empty()) recompute(seeds);
  done();
}

// Weighted max-min speeds for the activities connected to `seeds` through shared links, by progressive
// filling: repeatedly take the link that fills at the lowest common speed (its free capacity over its
// unfrozen activities' full-speed demand), freeze its activities at that speed and charge their demand
// to every link they use; the activities left when no link would fill below speed 1 run at 1.
void LinkSharing::recompute(const std::vector<LinkId>& seeds) {
  ++recomputations_;
  ++stamp_;
  comp_.clear();
  comp_links_.clear();
  for (LinkId l : seeds) {
    if (links_[l].stamp != stamp_) {
      links_[l].stamp = stamp_;
      comp_links_.push_back(l);
    }
  }
  for (std::size_t i = 0; i < comp_links_.size(); ++i) {
    for (const OnLink& on : links_[comp_links_[i]].activities) {
      Activity& a = activities_[static_cast<std::size_t>(on.id)];
      if (a.stamp == stamp_) continue;
      a.stamp = stamp_;
      comp_.push_back(on.id);
      for (const LinkBytes& lb : *a.footprint) {
        if (links_[lb.link].stamp != stamp_) {
          links_[lb.link].stamp = stamp_;
          comp_links_.push_back(lb.link);
        }
      }
    }
  }
  old_speed_.clear();
  for (LinkId l : comp_links_) {
    LinkState& s = links_[l];
    s.capacity = topology_.link(l).bandwidth;
    s.demand = 0;
    s.unfrozen = 0;
  }
  for (int id : comp_) {
    Activity& a = activities_[static_cast<std::size_t>(id)];
    old_speed_.push_back(a.speed);
    a.speed = -1;  // unfrozen
    for (const LinkBytes& lb : *a.footprint) {
      LinkState& s = links_[lb.link];
      s.demand += lb.bytes / (a.alone_ps * 1e-12);
      ++s.unfrozen;
    }
  }
  // (speed at which the link fills, link, version)
  using Fill = std::tuple<double, LinkId, std::uint32_t>;
  std::priority_queue<Fill, std::vector<Fill>, std::greater<>> fills;
  for (LinkId l : comp_links_) {
    LinkState& s = links_[l];
    fills.emplace(s.capacity / s.demand, l, ++s.version);
  }
  while (!fills.empty()) {
    const auto [level, l, version] = fills.top();
    fills.pop();
    LinkState& s = links_[l];
    if (version != s.version || s.unfrozen == 0) continue;  // stale entry
    if (level >= 1) break;                                   // no link fills below full speed
    for (const OnLink& on : s.activities) {
      Activity& a = activities_[static_cast<std::size_t>(on.id)];
      if (a.speed >= 0) continue;
      a.speed = std::max(level, 0.0);
      for (const LinkBytes& lb : *a.footprint) {
        LinkState& t = links_[lb.link];
        const double d = lb.bytes / (a.alone_ps * 1e-12);
        t.capacity = std::max(0.0, t.capacity - a.speed * d);
        t.demand -= d;
        if (--t.unfrozen > 0 && lb.link != l) fills.emplace(t.demand > 0 ? t.capacity / t.demand : 1.0, lb.link, ++t.version);
      }
    }
  }
  // Progress at the old speeds up to now, then new completions for the activities whose speed changed;
  // the others keep theirs exactly.
  const Time now = engine_.now();
  for (std::size_t i = 0; i < comp_.size(); ++i) {
    Activity& a = activities_[static_cast<std::size_t>(comp_[i])];
    if (a.speed < 0) a.speed = 1;
    if (a.speed == old_speed_[i]) continue;
    a.remaining_ps = std::max(0.0, a.remaining_ps - old_speed_[i] * static_cast<double>((now - a.updated).picoseconds()));
    a.updated = now;
    schedule_completion(comp_[i]);
  }
}

}  // namespace twinbed::sim
