// Concurrent communication sharing links: a fluid model of whole collectives and messages.
//
// The plan simulator (plan_sim.hpp) knows how long each collective and each message takes alone on
// the topology (`alone`: the collective simulator's or NCCL's time, memoised; a message's solo time).
// When several are in flight at once and cross the same links — a DP all-reduce and a pipeline
// message on one NIC, the tied-embedding all-reduce and a TP all-reduce on one NVLink — they slow
// each other down. LinkSharing models that as the flow network (network.hpp) models messages, one
// level up: each activity is one fluid whose progress rate is a fraction x of its alone rate, and x
// is shared out whenever an activity starts or ends.
//
// Model:
//  - An activity's footprint is the bytes it moves over each link (its schedule's traffic, summed over
//    rounds). Alone it moves them in `alone`, so at full speed it asks link l for bytes_l / alone B/s.
//  - At speed x (0 < x ≤ 1) it asks x times that, and finishes after `alone` / x of its time.
//  - Speeds are max-min fair over the activities, weighted by their demands (progressive filling): all
//    speeds rise together until some link is full; the activities on it freeze at that speed; the
//    others continue, up to 1. A link that carries one activity, or several whose full-speed demands
//    fit in its bandwidth, slows none of them: every activity then takes exactly its alone time, so
//    everything the contention-free timings give (the closed forms) is unchanged.
//  - Two equal activities on one link each get half of it, as two flows would; where each activity
//    is one flow on the shared link this is the flow network's max-min, else it is its generalisation
//    that shares a link in proportion to the activities' full-speed demands.
//
// Approximations (said where they matter): an activity is stretched as a whole — its latency terms
// stretch with its bandwidth terms, which overstates the slow-down of latency-bound collectives on a
// full link; and within an activity the traffic is spread evenly over its duration (its rounds are
// not resolved against the others' traffic). An activity's own alone time already includes the
// contention among the communicators it stands for (group_collectives.hpp), and its footprint counts
// their traffic too; since that traffic fitted in `alone`, it never slows itself down twice.
//
// Cost: an activity that no other active activity could meet (none runs on a footprint sharing a link
// with its own, nor on its own) runs alone without being entered on its links: O(the footprints that
// overlap its own), which are found once, the first time a footprint is given. It is entered the
// moment an activity that might meet it starts, so every two active activities that could share a
// link are entered on their links, and the speeds are what entering every activity would give.
// Entering or leaving costs O(its links). When a start or an end leaves others beside it on a link,
// the speeds of the activities connected to it through shared links (links two or more of them are on)
// are recomputed: O((shared links + activities) log) of that component. A link that carries one
// activity cannot hold it below its own ceiling (the lowest speed at which it would fill one of its
// links alone: 1 or more unless its footprint asks more of a link than the link has, known per
// footprint), so the recomputation looks at shared links and ceilings only. (A collective's footprint
// can span thousands of links; in Llama 3 405B on 16,384 GPUs a third of those in a recomputation
// were shared.) Speeds that did not change keep their completion times exactly.
// Not thread-safe; borrows the engine and topology, which must outlive it.
#pragma once

#include <cstdint>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "twinbed/core/topology.hpp"
#include "twinbed/sim/engine.hpp"

namespace twinbed::sim {

// Bytes an activity moves over each link it uses: unique links, each with bytes > 0.
struct LinkBytes {
  LinkId link = 0;
  double bytes = 0;
  bool operator==(const LinkBytes&) const = default;
};
using Footprint = std::vector<LinkBytes>;

class LinkSharing {
 public:
  LinkSharing(Engine& engine, const Topology& topology);

  // Starts, at the engine's now, an activity that alone would take `alone` and moves `footprint`
  // (borrowed, and known by its address: it must stay alive and unchanged as long as this object).
  // `done` runs as an engine event when it has finished.
  // An activity of zero time or with an empty footprint takes exactly `alone`, sharing nothing.
  void start(Time alone, const Footprint* footprint, Engine::Callback done);

  int active() const { return active_; }
  // Recomputations of speeds so far (starts and ends that met another activity on a link).
  std::int64_t recomputations() const { return recomputations_; }
  // Activities entered on their links so far (the others ran alone without touching them).
  std::int64_t entered() const { return entered_; }

 private:
  struct Activity {
    const Footprint* footprint = nullptr;
    double alone_ps = 0;      // alone time, picoseconds
    double remaining_ps = 0;  // alone-time still to go at `updated`
    double speed = 1;         // fraction of the alone rate
    Time updated;
    Engine::Callback done;
    std::vector<int> pos;     // pos[i]: its index in links_[footprint[i].link].activities
    std::vector<int> shared;      // indices i of its footprint whose link carries another entered activity
    std::vector<int> shared_pos;  // shared_pos[i]: the index of i in `shared`, -1 when not there
    std::uint32_t version = 0;
    std::uint32_t stamp = 0;
    bool active = false;
    int footprint_id = -1;  // index in footprints_
    bool entered = false;   // on its links' activity lists
  };
  // What is known of a footprint: the footprints that share a link with it (itself among them), how
  // many of its activities are active, and the one of them not entered on its links (-1: none; an
  // activity not entered is the only active one of the footprints it overlaps).
  struct FootprintState {
    std::vector<int> overlapping;
    int active = 0;
    int not_entered = -1;
    double min_capacity_per_byte = 0;  // min over its links of bandwidth / bytes: ceiling = alone (s) x this
  };
  struct OnLink {
    int id;     // the activity
    int index;  // the link's index in the activity's footprint
  };
  struct LinkState {
    std::vector<OnLink> activities;
    std::uint32_t stamp = 0;
    double capacity = 0;  // scratch for progressive filling: bandwidth not yet given to frozen activities
    double demand = 0;    // scratch: full-speed demand of the unfrozen activities on it
    int unfrozen = 0;
    std::uint32_t version = 0;  // scratch: stale heap entries
  };

  int footprint_id(const Footprint* footprint);  // a new footprint's links are read here
  bool add_to_links(int id);  // true when no other activity was on its links
  void remove_from_links(int id, std::vector<LinkId>& still_used);  // appends the links others still use
  void share(int id, int index);    // footprint[index]'s link now carries another activity
  void unshare(int id, int index);  // ... and no longer does
  void recompute(const std::vector<LinkId>& seeds);  // for the activities on `seeds` and all they share with
  void schedule_completion(int id);
  void finish(int id, std::uint32_t version);

  Engine& engine_;
  const Topology& topology_;
  std::vector<LinkState> links_;
  std::vector<Activity> activities_;
  std::vector<int> free_;
  std::unordered_map<const Footprint*, int> footprint_ids_;
  std::vector<FootprintState> footprints_;
  std::vector<std::vector<int>> link_footprints_;  // per link: the footprints that use it
  std::vector<int> comp_;           // scratch: activities of the component being recomputed
  std::vector<LinkId> comp_links_;  // scratch: its shared links
  std::vector<double> old_speed_;   // scratch
  std::vector<std::tuple<double, std::int64_t, std::uint32_t>> fills_;  // scratch: recompute's heap
  std::uint32_t stamp_ = 0;
  int active_ = 0;
  std::int64_t recomputations_ = 0;
  std::int64_t entered_ = 0;
};

}  // namespace twinbed::sim
