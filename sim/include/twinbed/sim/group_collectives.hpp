// Timing collectives of communicators (subsets of the topology's ranks).
//
// CollectiveSimulator (collective_sim.hpp) times a Schedule whose ranks are the topology's ranks. A
// training plan runs a collective on a communicator — e.g. the 8 data-parallel ranks 3, 11, 19, ... —
// and usually on every communicator of that kind at once (all DP groups reduce together). This builds
// one combined Schedule: the group's schedule replicated on each listed group, its local rank i mapped
// to the group's i-th topology rank, chunks renumbered per group; ranks outside every group take no
// part. Timing that on the whole topology gives each group's time with the others' traffic contending
// for shared links, exactly as the collective simulator would for a single schedule.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "twinbed/core/schedule.hpp"
#include "twinbed/core/topology.hpp"
#include "twinbed/sim/collective_sim.hpp"
#include "twinbed/sim/nccl_model.hpp"

namespace twinbed::sim {

// A Schedule over `world` ranks running `inner` (a schedule over n ranks) on each of `groups`
// (disjoint; each of size n; ranks < world) concurrently. Rounds are generated on demand from the inner
// schedule's (O(groups · transfers per round) per round); round shapes are the inner schedule's.
// Throws InvalidArgument on a group of the wrong size, an out-of-range or repeated rank.
std::unique_ptr<Schedule> map_schedule(std::shared_ptr<const Schedule> inner, std::vector<std::vector<int>> groups,
                                       int world);

// Whether every group would run exactly as the first one alone does: no link carries two groups'
// traffic (the flow network then never couples them), and each group's messages map onto its own
// links one to one as the first group's do, with equal bandwidths and latencies, between equal
// devices (its rounds then unfold identically, message by message). time_group_collective then times
// the first group alone. Costs a route lookup per group and distinct message pair (each round shape
// once). `routes` must be of `topology`.
bool groups_alike(const Schedule& inner, const std::vector<std::vector<int>>& groups, RouteCache& routes,
                  const Topology& topology);

struct GroupTiming {
  std::string algorithm;
  std::vector<Time> group_time;  // per group: when its last member finishes (all start at 0)
  // The CTAs (one per channel) NCCL's kernel holds on each member GPU while it runs: the chosen
  // algorithm's channels that carry data (NcclChoice::channels). 0 where NCCL's model did not time it
  // (an explicit schedule, a device NCCL's model does not cover, a communicator of one rank).
  int channels = 0;
  Time max() const;
  bool uniform() const;          // every group took the same time
  bool operator==(const GroupTiming&) const = default;
};

// Times `request` (its `ranks` must equal the groups' size; ranks_per_host is set by the caller) on
// every group at once (when the groups are alike, by timing the first alone: the same result) with
// `algorithm`, a registry name. With "auto", the collective NCCL would run: where NCCL's model
// applies (nccl_fabric of the first group; not all-to-all), time_nccl; elsewhere the cheapest
// schedule by choose_algorithm's cost model placed on the first group's ranks. A group of one rank
// takes no time. `sim` must be bound to `topology`. `nccl_minor`: the NCCL release auto models,
// 2.<nccl_minor> (NcclFabric::nccl_minor).
GroupTiming time_group_collective(const CollectiveRequest& request, const std::vector<std::vector<int>>& groups,
                                  const std::string& algorithm, CollectiveSimulator& sim, const Topology& topology,
                                  int nccl_minor = kNcclOldestMinor);

// NCCL's own collective on every group (nccl_model.hpp): the algorithm and protocol NCCL's tuner picks
// for the first group's fabric, timed as its tuner prices it; where groups share links (not
// groups_alike), each group's time is stretched by how much slower the corresponding shared schedule
// (ring, tree, or rhd for PAT) runs on `sim`'s network model (the flow network by default; under
// "analytical" groups never contend) with every group at once than with the first alone.
// GroupTiming::algorithm names the pair ("nvls/Simple"), GroupTiming::channels its channels.
GroupTiming time_nccl(const CollectiveRequest& request, const std::vector<std::vector<int>>& groups,
                      const NcclFabric& fabric, CollectiveSimulator& sim, const Topology& topology);

}  // namespace twinbed::sim
