// How much of what a CPU rank's compute op touches is still in the caches when the op starts.
//
// The CPU backend runs every compute op of a rank on one pool of memory, each op from the start of the
// pool's input and output regions (real/src/cpu/cpu_compute.hpp; core's cpu_pool_footprint says how far
// an op reaches). An op therefore finds in cache what ops shortly before it touched, and goes to memory
// for the rest of its footprint. `calibrate` times the backend's streaming op over and over on the same
// arrays, in cache as far as the caches hold them; in a run the far end of a large op's footprint was
// last touched by the previous large op, often tens of milliseconds before. Where other processes share
// the caches, as on a virtual machine's host, the data has gone by then: on this project's 2-core VM the
// 8.4 MB stream of a cross-entropy op ran at 29 GB/s repeated back to back and at 14 GB/s, DRAM's rate,
// 20 ms after its last run, and the compare run measured it at the second (real/src/cpu/calibrate.cpp
// measures how fast data goes: MachineProfile::cache_half_life).
//
// Model: a float last touched `age` ago is still cached with probability 2^(-age / half_life); a float
// no op has touched is not (the plan simulator starts a rank with its whole pool touched as the step
// starts, as the step before leaves it). Capacity is not this model's business: a stream's rate by
// working-set size (memory_samples) holds it.
//
// Per region the floats' last touches form a staircase: the latest op touched [0, e0), an earlier one
// reaching further [e0, e1), and so on (an op reaching no further than a later one is hidden by it), so
// a query and an update walk only the steps they cover, popping the ones an update hides.
#pragma once

#include <cstdint>
#include <vector>

#include "twinbed/core/model.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed::sim {

class CacheResidency {
 public:
  // half_life > 0.
  explicit CacheResidency(Time half_life);
  // The expected bytes of footprint `f` that an op starting at `now` reads or writes in memory rather
  // than in cache.
  double cold_bytes(const PoolFootprint& f, Time now) const;
  // An op that touched `f` ended at `end` (no earlier than any end given before).
  void touch(const PoolFootprint& f, Time end);

 private:
  struct Step {
    std::int64_t extent;  // floats [previous step's extent, extent) ...
    Time touched;         // ... were last touched then
  };
  double cold_floats(const std::vector<Step>& steps, std::int64_t extent, Time now) const;
  static void touch(std::vector<Step>& steps, std::int64_t extent, Time end);

  Time half_life_;
  std::vector<Step> input_, output_;  // the furthest-reaching (oldest) first, the latest last
};

}  // namespace twinbed::sim
