#include "twinbed/sim/link_sharing.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

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
  seeds.reserve(a.shared.size());
  for (int i : a.shared) seeds.push_back((*footprint)[static_cast<std::size_t>(i)].link);
  recompute(seeds);
}

int LinkSharing::footprint_id(const Footprint* footprint) {
  const auto [it, fresh] = footprint_ids_.try_emplace(footprint, static_cast<int>(footprints_.size()));
  if (!fresh) return it->second;
  const int id = it->second;
  footprints_.emplace_back();
  std::vector<int> overlapping{id};
  double min_capacity_per_byte = std::numeric_limits<double>::infinity();
  for (const LinkBytes& lb : *footprint) {
    min_capacity_per_byte = std::min(min_capacity_per_byte, topology_.link(lb.link).bandwidth / lb.bytes);
    std::vector<int>& on = link_footprints_[lb.link];
    overlapping.insert(overlapping.end(), on.begin(), on.end());
    on.push_back(id);
  }
  std::sort(overlapping.begin(), overlapping.end());
  overlapping.erase(std::unique(overlapping.begin(), overlapping.end()), overlapping.end());
  for (int o : overlapping) {
    if (o != id) footprints_[static_cast<std::size_t>(o)].overlapping.push_back(id);
  }
  FootprintState& state = footprints_[static_cast<std::size_t>(id)];
  state.overlapping = std::move(overlapping);
  state.min_capacity_per_byte = min_capacity_per_byte;
  return id;
}

bool LinkSharing::add_to_links(int id) {
  Activity& a = activities_[static_cast<std::size_t>(id)];
  a.entered = true;
  ++entered_;
  a.pos.resize(a.footprint->size());
  a.shared.clear();
  a.shared_pos.assign(a.footprint->size(), -1);
  bool alone = true;
  for (std::size_t i = 0; i < a.footprint->size(); ++i) {
    auto& on = links_[(*a.footprint)[i].link].activities;
    if (!on.empty()) {
      alone = false;
      share(id, static_cast<int>(i));
      if (on.size() == 1) share(on.front().id, on.front().index);
    }
    a.pos[i] = static_cast<int>(on.size());
    on.push_back({id, static_cast<int>(i)});
  }
  return alone;
}

void LinkSharing::share(int id, int index) {
  Activity& a = activities_[static_cast<std::size_t>(id)];
  a.shared_pos[static_cast<std::size_t>(index)] = static_cast<int>(a.shared.size());
  a.shared.push_back(index);
}

void LinkSharing::unshare(int id, int index) {
  Activity& a = activities_[static_cast<std::size_t>(id)];
  const int at = a.shared_pos[static_cast<std::size_t>(index)];
  const int last = a.shared.back();
  a.shared[static_cast<std::size_t>(at)] = last;
  a.shared_pos[static_cast<std::size_t>(last)] = at;
  a.shared.pop_back();
  a.shared_pos[static_cast<std::size_t>(index)] = -1;
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
    if (on.size() == 1) unshare(on.front().id, on.front().index);
  }
  a.shared.clear();
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

// Weighted max-min speeds for the activities connected to the links `seeds` through shared links, by
// progressive filling: repeatedly take the shared link that fills at the lowest common speed (its free
// capacity over its unfrozen activities' full-speed demand), or the activity whose ceiling is lowest,
// freeze those activities at that speed and charge their demand to every shared link they use; the
// activities left when nothing would stop them below speed 1 run at 1. A link an activity has to itself
// would fill at exactly its ceiling, with nothing charged to it by others: the ceiling stands for it.
void LinkSharing::recompute(const std::vector<LinkId>& seeds) {
  ++recomputations_;
  ++stamp_;
  comp_.clear();
  comp_links_.clear();
  const auto join = [&](int id) {
    Activity& a = activities_[static_cast<std::size_t>(id)];
    if (a.stamp == stamp_) return;
    a.stamp = stamp_;
    comp_.push_back(id);
  };
  for (LinkId l : seeds) {
    for (const OnLink& on : links_[l].activities) join(on.id);
  }
  for (std::size_t k = 0; k < comp_.size(); ++k) {
    const Activity& a = activities_[static_cast<std::size_t>(comp_[k])];
    for (int i : a.shared) {
      const LinkId l = (*a.footprint)[static_cast<std::size_t>(i)].link;
      if (links_[l].stamp == stamp_) continue;
      links_[l].stamp = stamp_;
      comp_links_.push_back(l);
      for (const OnLink& on : links_[l].activities) join(on.id);
    }
  }
  old_speed_.clear();
  for (LinkId l : comp_links_) {
    LinkState& s = links_[l];
    s.capacity = topology_.link(l).bandwidth;
    s.demand = 0;
    s.unfrozen = 0;
  }
  // fills_: a min-heap of (the speed at which it stops: a shared link (key: the link) fills or an
  // activity (key: -1 - its id) reaches its ceiling; key; version). Only speeds below 1 are entered: a
  // link that would fill at 1 or above stays there as activities on it freeze below 1 (its capacity
  // stays at least its demand), and nothing at 1 or above stops anyone.
  fills_.clear();
  for (int id : comp_) {
    Activity& a = activities_[static_cast<std::size_t>(id)];
    old_speed_.push_back(a.speed);
    a.speed = -1;  // unfrozen
    for (int i : a.shared) {
      const LinkBytes& lb = (*a.footprint)[static_cast<std::size_t>(i)];
      LinkState& s = links_[lb.link];
      s.demand += lb.bytes / (a.alone_ps * 1e-12);
      ++s.unfrozen;
    }
    const double ceiling = a.alone_ps * 1e-12 * footprints_[static_cast<std::size_t>(a.footprint_id)].min_capacity_per_byte;
    if (ceiling < 1) fills_.emplace_back(ceiling, -1 - static_cast<std::int64_t>(id), 0);
  }
  for (LinkId l : comp_links_) {
    LinkState& s = links_[l];
    if (s.capacity < s.demand) fills_.emplace_back(s.capacity / s.demand, l, ++s.version);
  }
  std::make_heap(fills_.begin(), fills_.end(), std::greater<>{});
  std::size_t unfrozen = comp_.size();
  const auto freeze = [&](Activity& a, double level, std::int64_t key) {
    --unfrozen;
    a.speed = std::max(level, 0.0);
    for (int i : a.shared) {
      const LinkBytes& lb = (*a.footprint)[static_cast<std::size_t>(i)];
      LinkState& t = links_[lb.link];
      const double d = lb.bytes / (a.alone_ps * 1e-12);
      t.capacity = std::max(0.0, t.capacity - a.speed * d);
      t.demand -= d;
      if (--t.unfrozen == 0 || lb.link == key) continue;
      ++t.version;  // its entry, if any, is stale
      if (t.capacity < t.demand) {
        fills_.emplace_back(t.capacity / t.demand, lb.link, t.version);
        std::push_heap(fills_.begin(), fills_.end(), std::greater<>{});
      }
    }
  };
  while (unfrozen > 0 && !fills_.empty()) {
    std::pop_heap(fills_.begin(), fills_.end(), std::greater<>{});
    const auto [level, key, version] = fills_.back();
    fills_.pop_back();
    if (key < 0) {
      Activity& a = activities_[static_cast<std::size_t>(-1 - key)];
      if (a.speed < 0) freeze(a, level, key);
      continue;
    }
    LinkState& s = links_[static_cast<LinkId>(key)];
    if (version != s.version || s.unfrozen == 0) continue;  // stale entry
    for (const OnLink& on : s.activities) {
      Activity& a = activities_[static_cast<std::size_t>(on.id)];
      if (a.speed < 0) freeze(a, level, key);
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
