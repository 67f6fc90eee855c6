#include "twinbed/sim/group_collectives.hpp"

#include <algorithm>
#include <unordered_set>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/sim/nccl_model.hpp"

namespace twinbed::sim {

namespace {

// The inner schedule replicated over disjoint groups; group g's local rank i is topology rank
// groups[g][i], its chunk c is chunk g·chunks + c.
class MappedSchedule : public Schedule {
 public:
  MappedSchedule(std::shared_ptr<const Schedule> inner, std::vector<std::vector<int>> groups, CollectiveRequest request,
                 std::vector<Chunk> chunks)
      : Schedule(request, inner->algorithm(), std::move(chunks)), inner_(std::move(inner)), groups_(std::move(groups)) {}

  int num_rounds() const override { return inner_->num_rounds(); }
  void round(int k, std::vector<Transfer>& out) const override {
    inner_->round(k, scratch_);
    out.clear();
    out.reserve(scratch_.size() * groups_.size());
    const int nchunks = static_cast<int>(inner_->chunks().size());
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      const auto& members = groups_[g];
      for (const Transfer& t : scratch_) {
        out.push_back({members[static_cast<std::size_t>(t.src)], members[static_cast<std::size_t>(t.dst)],
                       static_cast<int>(g) * nchunks + t.chunk, t.reduce});
      }
    }
  }
  int round_shape(int k) const override { return inner_->round_shape(k); }

 private:
  std::shared_ptr<const Schedule> inner_;
  std::vector<std::vector<int>> groups_;
  mutable std::vector<Transfer> scratch_;  // round() is called from one thread at a time
};

}  // namespace

std::unique_ptr<Schedule> map_schedule(std::shared_ptr<const Schedule> inner, std::vector<std::vector<int>> groups,
                                       int world) {
  const int n = inner->request().ranks;
  std::vector<char> used(static_cast<std::size_t>(std::max(world, 0)), 0);
  for (const auto& g : groups) {
    if (static_cast<int>(g.size()) != n) {
      throw InvalidArgument("map_schedule: a group of " + std::to_string(g.size()) + " ranks for a schedule of " +
                            std::to_string(n));
    }
    for (int r : g) {
      if (r < 0 || r >= world) throw InvalidArgument("map_schedule: rank " + std::to_string(r) + " outside the world");
      if (used[static_cast<std::size_t>(r)]++) {
        throw InvalidArgument("map_schedule: rank " + std::to_string(r) + " is in two groups");
      }
    }
  }
  CollectiveRequest request = inner->request();
  request.ranks = world;
  request.ranks_per_host = 0;
  std::vector<Chunk> chunks;
  chunks.reserve(inner->chunks().size() * groups.size());
  for (std::size_t g = 0; g < groups.size(); ++g) {
    for (Chunk c : inner->chunks()) chunks.push_back(c);  // block ids stay the group's own
  }
  return std::make_unique<MappedSchedule>(std::move(inner), std::move(groups), request, std::move(chunks));
}

Time GroupTiming::max() const {
  Time t;
  for (Time g : group_time) t = std::max(t, g);
  return t;
}

bool GroupTiming::uniform() const {
  return std::all_of(group_time.begin(), group_time.end(), [&](Time t) { return t == group_time.front(); });
}

bool groups_alike(const Schedule& inner, const std::vector<std::vector<int>>& groups, RouteCache& routes,
                  const Topology& topology) {
  const std::vector<int>& first = groups.front();
  for (const auto& g : groups) {
    for (std::size_t i = 0; i < g.size(); ++i) {
      if (!(topology.device(g[i]) == topology.device(first[i]))) return false;
    }
  }
  std::vector<std::pair<int, int>> pairs;  // (src, dst) of the inner schedule's messages
  std::unordered_set<int> shapes;
  std::vector<Transfer> transfers;
  for (int k = 0; k < inner.num_rounds(); ++k) {
    const int shape = inner.round_shape(k);
    if (shape >= 0 && !shapes.insert(shape).second) continue;
    inner.round(k, transfers);
    for (const Transfer& t : transfers) {
      if (t.src != t.dst) pairs.emplace_back(t.src, t.dst);
    }
  }
  std::sort(pairs.begin(), pairs.end());
  pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());

  const auto links = static_cast<std::size_t>(topology.num_links());
  std::vector<int> owner(links, -1);       // the group whose traffic crosses the link
  std::vector<LinkId> preimage(links, 0);  // the first group's link it stands for
  std::vector<int> mapped_for(links, -1);  // the group for which image[] holds
  std::vector<LinkId> image(links, 0);     // a first-group link's counterpart in that group
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const int id = static_cast<int>(g);
    for (const auto& [src, dst] : pairs) {
      const Path& ref = routes.path(first[static_cast<std::size_t>(src)], first[static_cast<std::size_t>(dst)]);
      const Path& path = routes.path(groups[g][static_cast<std::size_t>(src)], groups[g][static_cast<std::size_t>(dst)]);
      if (path.size() != ref.size()) return false;
      for (std::size_t i = 0; i < path.size(); ++i) {
        const LinkId a = ref[i];
        const LinkId b = path[i];
        if (owner[b] < 0) {
          owner[b] = id;
          preimage[b] = a;
        } else if (owner[b] != id || preimage[b] != a) {
          return false;
        }
        if (mapped_for[a] != id) {
          mapped_for[a] = id;
          image[a] = b;
        } else if (image[a] != b) {
          return false;
        }
        const Link& la = topology.link(a);
        const Link& lb = topology.link(b);
        if (la.bandwidth != lb.bandwidth || la.latency != lb.latency) return false;
      }
    }
  }
  return true;
}

namespace {

GroupTiming time_with(std::shared_ptr<const Schedule> inner, const std::vector<std::vector<int>>& groups,
                      CollectiveSimulator& sim, const Topology& topology) {
  GroupTiming out;
  out.algorithm = inner->algorithm();
  if (groups.size() > 1 && groups_alike(*inner, groups, sim.routes(), topology)) {
    const Time alone = time_with(std::move(inner), {groups.front()}, sim, topology).max();
    out.group_time.assign(groups.size(), alone);
    return out;
  }
  auto mapped = map_schedule(std::move(inner), groups, topology.num_ranks());
  CollectiveTiming t = sim.run(*mapped);
  for (const auto& g : groups) {
    Time done;
    for (int r : g) done = std::max(done, t.rank_done[static_cast<std::size_t>(r)]);
    out.group_time.push_back(done);
  }
  return out;
}

}  // namespace

GroupTiming time_group_collective(const CollectiveRequest& request, const std::vector<std::vector<int>>& groups,
                                  const std::string& algorithm, CollectiveSimulator& sim, const Topology& topology,
                                  int nccl_minor) {
  if (request.ranks <= 1) {
    GroupTiming out;
    out.algorithm = algorithm;
    out.group_time.assign(groups.size(), Time{});
    return out;
  }
  if (algorithm == "auto" && request.op != CollectiveOp::AllToAll) {
    if (auto fabric = nccl_fabric(topology, groups.front())) {
      fabric->nccl_minor = nccl_minor;
      return time_nccl(request, groups, *fabric, sim, topology);
    }
  }
  // "auto" where NCCL's model does not apply: the cheapest schedule by the cost model
  // (choose_algorithm) with the first group's ranks, then timed on every group at once.
  const std::string name = algorithm != "auto" ? algorithm
                                               : choose_algorithm(request, topology, sim.network_model(), [&](std::shared_ptr<const Schedule> inner) {
                                                   return map_schedule(std::move(inner), {groups.front()}, topology.num_ranks());
                                                 });
  return time_with(build_schedule(name, request), groups, sim, topology);
}

GroupTiming time_nccl(const CollectiveRequest& request, const std::vector<std::vector<int>>& groups,
                      const NcclFabric& fabric, CollectiveSimulator& sim, const Topology& topology) {
  const NcclChoice choice = nccl_choose(request, fabric);
  GroupTiming out;
  out.algorithm = choice.name();
  out.group_time.assign(groups.size(), choice.time);
  out.channels = choice.channels;
  // NCCL's model prices a communicator on an idle fabric. Where groups share links, each group's
  // time grows as its shared schedule's does on the simulator's network when every group runs it at once
  // rather than the first alone. NVLS has no schedule; it stays inside one NVSwitch node, whose links
  // no other group crosses. NVLSTree crosses the network as a tree of the nodes: the tree schedule
  // stands for it. PAT's rounds exchange with ranks at doubling (all-gather) or halving
  // (reduce-scatter) distances: recursive halving-doubling's schedule stands for it.
  if (groups.size() < 2 || choice.algo == NcclAlgo::Nvls) return out;
  const std::string shape = choice.algo == NcclAlgo::NvlsTree ? "tree"
                            : choice.algo == NcclAlgo::Pat    ? "rhd"
                                                              : to_string(choice.algo);
  std::shared_ptr<const Schedule> schedule = build_schedule(shape, request);
  if (groups_alike(*schedule, groups, sim.routes(), topology)) return out;
  const double alone = time_with(schedule, {groups.front()}, sim, topology).max().seconds();
  const GroupTiming together = time_with(schedule, groups, sim, topology);
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const double slowdown = alone > 0 ? std::max(1.0, together.group_time[g].seconds() / alone) : 1.0;
    out.group_time[g] = Time::from_seconds(choice.time.seconds() * slowdown);
  }
  return out;
}

}  // namespace twinbed::sim
