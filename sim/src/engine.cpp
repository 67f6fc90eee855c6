#include "twinbed/sim/engine.hpp"

#include <algorithm>

#include "twinbed/core/error.hpp"

namespace twinbed::sim {

// A 4-ary heap: half the depth of a binary heap, and a node's four children share a cache line.

void Engine::sift_up(std::size_t i) {
  Key k = heap_[i];
  while (i > 0) {
    std::size_t parent = (i - 1) / 4;
    if (!(k < heap_[parent])) break;
    heap_[i] = heap_[parent];
    i = parent;
  }
  heap_[i] = k;
}

void Engine::sift_down(std::size_t i) {
  const std::size_t n = heap_.size();
  Key k = heap_[i];
  while (true) {
    std::size_t first = 4 * i + 1;
    if (first >= n) break;
    std::size_t best = first;
    std::size_t last = std::min(first + 4, n);
    for (std::size_t c = first + 1; c < last; ++c) {
      if (heap_[c] < heap_[best]) best = c;
    }
    if (!(heap_[best] < k)) break;
    heap_[i] = heap_[best];
    i = best;
  }
  heap_[i] = k;
}

void Engine::schedule_at(Time t, Callback cb) {
  if (t < now_) throw InvalidArgument("Engine::schedule_at: event time is before now");
  std::uint64_t slot;
  if (free_slots_.empty()) {
    slot = slots_.size();
    if (slot >= (std::uint64_t{1} << kSlotBits)) throw InvalidArgument("Engine: more than 2^24 pending events");
    slots_.push_back(std::move(cb));
  } else {
    slot = free_slots_.back();
    free_slots_.pop_back();
    slots_[slot] = std::move(cb);
  }
  if (next_seq_ >= (std::uint64_t{1} << (64 - kSlotBits))) throw InvalidArgument("Engine: more than 2^40 events");
  heap_.push_back({t.picoseconds(), next_seq_++ << kSlotBits | slot});
  sift_up(heap_.size() - 1);
}

bool Engine::step() {
  if (heap_.empty()) return false;
  Key key = heap_.front();
  heap_.front() = heap_.back();
  heap_.pop_back();
  if (!heap_.empty()) {
    sift_down(0);
    // The next event's closure is a random slab slot: start fetching it while this one runs.
    __builtin_prefetch(&slots_[heap_.front().order & ((std::uint64_t{1} << kSlotBits) - 1)]);
  }
  now_ = Time::ps(key.time);
  auto slot = static_cast<std::uint32_t>(key.order & ((std::uint64_t{1} << kSlotBits) - 1));
  // Move the closure out first: it may schedule events, which can reuse or reallocate the slab.
  Callback cb = std::move(slots_[slot]);
  free_slots_.push_back(slot);
  ++events_run_;
  cb();
  return true;
}

void Engine::rewind() {
  if (!heap_.empty()) throw InvalidArgument("Engine::rewind: events are still pending");
  now_ = Time{};
}

void Engine::run() {
  while (step()) {
  }
}

}  // namespace twinbed::sim
