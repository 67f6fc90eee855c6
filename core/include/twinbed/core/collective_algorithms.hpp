// The registry of collective algorithms. Each entry says which ops it implements and builds a
// Schedule for a request. Names: ring, tree (double binary tree), rhd (recursive halving-doubling),
// direct, hierarchical. The automatic choice between them is made by whoever can time them (the
// simulator's cost model, sim/collective_sim.hpp).
#pragma once

#include <functional>
#include <memory>
#include <set>

#include "twinbed/core/registry.hpp"
#include "twinbed/core/schedule.hpp"

namespace twinbed {

struct CollectiveAlgorithm {
  std::set<CollectiveOp> ops;
  // Throws InvalidArgument (naming the field) when the request is impossible for this algorithm:
  // zero ranks, a root out of range, an op it does not implement, ranks_per_host not dividing ranks.
  std::function<std::unique_ptr<Schedule>(const CollectiveRequest&)> build;
};

Registry<CollectiveAlgorithm> collective_algorithms();

// Shortcut: look up `algorithm` and build. Throws UnknownName / InvalidArgument.
std::unique_ptr<Schedule> build_schedule(const std::string& algorithm, const CollectiveRequest& request);

}  // namespace twinbed
