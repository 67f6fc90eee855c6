// A deterministic discrete-event engine.
//
// Events are closures run at an integer-picosecond time. Ties are broken by insertion order (an
// event's key is (time, sequence number)), so identical runs are bit-identical. There is no global
// state: every simulation owns its Engine. Not thread-safe; one engine per thread.
//
// Cost: schedule and pop are O(log pending). The queue is a 4-ary heap of 16-byte keys (time, then
// sequence number and closure slot packed in one word); closures live in a slab reused through a free
// list, so the heap never moves std::function objects. Limits: 2^24 pending events, 2^40 events
// scheduled over an engine's life (InvalidArgument beyond).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "twinbed/core/units.hpp"

namespace twinbed::sim {

class Engine {
 public:
  using Callback = std::function<void()>;

  Time now() const { return now_; }

  // Runs `cb` at time `t`. Throws InvalidArgument if t < now() (the past cannot be changed).
  void schedule_at(Time t, Callback cb);
  void schedule_after(Time delay, Callback cb) { schedule_at(now_ + delay, std::move(cb)); }

  // Runs the earliest event; false when none is pending.
  bool step();
  // Runs events until none is pending.
  void run();

  // Sets the clock back to zero so one engine (and the models bound to it) can run many independent
  // simulations. Throws InvalidArgument while events are pending.
  void rewind();

  std::size_t pending() const { return heap_.size(); }
  std::uint64_t events_run() const { return events_run_; }

 private:
  static constexpr int kSlotBits = 24;
  struct Key {
    std::int64_t time;
    std::uint64_t order;  // sequence number << kSlotBits | slot of the closure in slots_
    bool operator<(const Key& o) const { return time != o.time ? time < o.time : order < o.order; }
  };
  void sift_up(std::size_t i);
  void sift_down(std::size_t i);

  Time now_;
  std::uint64_t next_seq_ = 0;
  std::uint64_t events_run_ = 0;
  std::vector<Key> heap_;
  std::vector<Callback> slots_;
  std::vector<std::uint32_t> free_slots_;
};

}  // namespace twinbed::sim
