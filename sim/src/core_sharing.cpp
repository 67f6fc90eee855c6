#include "twinbed/sim/core_sharing.hpp"

#include <algorithm>
#include <bit>
#include <string>

#include "twinbed/core/error.hpp"

namespace twinbed::sim {

namespace {

// kernel/sched/fair.c (Linux 6.6 on): sysctl_sched_base_slice = 750000 ns, scaled under the default
// SCHED_TUNABLESCALING_LOG by 1 + ilog2(min(CPUs, 8)) (get_update_sysctl_factor).
constexpr double kBaseSliceMs = 0.75;
constexpr int kSliceScalingCpus = 8;

}  // namespace

CoreSharing::CoreSharing(Engine& engine, int cores, int ranks, Time slice)
    : engine_(engine), slice_(slice), ranks_(ranks) {
  if (cores < 1) throw InvalidArgument("CoreSharing: cores must be >= 1, got " + std::to_string(cores));
  if (ranks < 1) throw InvalidArgument("CoreSharing: ranks must be >= 1, got " + std::to_string(ranks));
  if (!(slice > Time{})) throw InvalidArgument("CoreSharing: the slice must be > 0");
  cores_.resize(static_cast<std::size_t>(cores));
}

Time CoreSharing::linux_slice(int cores) {
  const int log2 = std::bit_width(static_cast<unsigned>(std::clamp(cores, 1, kSliceScalingCpus))) - 1;
  return Time::ms(kBaseSliceMs * (1 + log2));
}

CoreSharing::Core& CoreSharing::core_of(int rank) {
  if (rank < 0 || rank >= ranks_) {
    throw InvalidArgument("CoreSharing: no rank " + std::to_string(rank) + " of " + std::to_string(ranks_));
  }
  return cores_[static_cast<std::size_t>(rank) % cores_.size()];
}

bool CoreSharing::holds(int rank) const {
  return rank >= 0 && rank < ranks_ && cores_[static_cast<std::size_t>(rank) % cores_.size()].holder == rank;
}

int CoreSharing::busy() const {
  return static_cast<int>(std::count_if(cores_.begin(), cores_.end(), [](const Core& c) { return c.holder >= 0; }));
}

int CoreSharing::waiting() const {
  std::size_t n = 0;
  for (const Core& c : cores_) n += c.waiting.size();
  return static_cast<int>(n);
}

void CoreSharing::acquire(int rank, Granted granted) {
  Core& core = core_of(rank);
  if (std::any_of(core.waiting.begin(), core.waiting.end(), [rank](const auto& w) { return w.first == rank; }))
    throw InvalidArgument("CoreSharing: rank " + std::to_string(rank) + " already waits for its core");
  if (core.holder == rank && !core.waiting.empty() && engine_.now() - core.since >= slice_) {
    // Its slice is over and another of the core's ranks waits: that one runs, this one waits at the back.
    core.holder = -1;
    hand_over(core);
  }
  if (core.holder < 0) take(core, rank);
  if (core.holder == rank) {
    granted();
    return;
  }
  core.waiting.emplace_back(rank, std::move(granted));
}

void CoreSharing::release(int rank) {
  Core& core = core_of(rank);
  if (core.holder != rank) return;
  core.holder = -1;
  hand_over(core);
}

void CoreSharing::take(Core& core, int rank) {
  core.holder = rank;
  core.since = engine_.now();
}

void CoreSharing::hand_over(Core& core) {
  if (core.waiting.empty()) return;
  auto [rank, granted] = std::move(core.waiting.front());
  core.waiting.pop_front();
  take(core, rank);
  engine_.schedule_after(Time{}, std::move(granted));
}

}  // namespace twinbed::sim
