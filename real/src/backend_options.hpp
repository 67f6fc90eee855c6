// Internal to real/: what the CPU and CUDA backends' options share — checked alike, and taken from an
// experiment alike — written once.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/real/collectives.hpp"

namespace twinbed::real::detail {

// UnknownName (listing real_collective_algorithm_names()) for an unknown algorithm, InvalidArgument for
// a negative ranks_per_host or warmup_iters.
inline void validate_shared_options(const std::string& algorithm, int ranks_per_host, int warmup_iters) {
  const std::vector<std::string> known = real_collective_algorithm_names();
  if (std::find(known.begin(), known.end(), algorithm) == known.end()) throw UnknownName("collective algorithm", algorithm, known);
  if (ranks_per_host < 0) throw InvalidArgument("ranks_per_host must be >= 0 (got " + std::to_string(ranks_per_host) + ")");
  if (warmup_iters < 0) throw InvalidArgument("warmup_iters must be >= 0 (got " + std::to_string(warmup_iters) + ")");
}

// The experiment's collective algorithm for a real backend: its own, or `fallback` (the options'
// default, the library's own collectives) for "auto".
inline std::string experiment_collective_algorithm(const Experiment& experiment, const std::string& fallback) {
  const std::string& a = experiment.simulation.collective_algorithm;
  return a == "auto" ? fallback : a;
}

}  // namespace twinbed::real::detail
