#include "twinbed/core/memory_plan.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <iterator>
#include <map>
#include <numeric>
#include <set>
#include <utility>

#include "twinbed/core/error.hpp"

namespace twinbed {

namespace {

// a + b for non-negative byte counts; a sum that does not fit in int64 is the caller's error.
Bytes checked_add(Bytes a, Bytes b) {
  if (a > INT64_MAX - b) throw InvalidArgument("memory plan: byte total does not fit in int64");
  return a + b;
}

Bytes round_up(Bytes bytes, Bytes multiple) {
  Bytes rest = bytes % multiple;
  return rest == 0 ? bytes : checked_add(bytes, multiple - rest);
}

// Validates the tensors and returns their aligned sizes. Their sum must fit in int64 too: planners
// never place a tensor's end above that sum, so no offset arithmetic after this can overflow.
std::vector<Bytes> aligned_sizes(const std::vector<TensorLife>& tensors, Bytes alignment) {
  if (alignment < 1) throw InvalidArgument("memory plan: alignment " + std::to_string(alignment) + " < 1");
  std::vector<Bytes> sizes;
  sizes.reserve(tensors.size());
  Bytes total = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const TensorLife& t = tensors[i];
    if (t.bytes < 0) {
      throw InvalidArgument("memory plan: tensor " + std::to_string(i) + " has " + std::to_string(t.bytes) +
                            " bytes");
    }
    if (t.alloc >= t.free) {
      throw InvalidArgument("memory plan: tensor " + std::to_string(i) + " is allocated at " +
                            std::to_string(t.alloc) + " but freed at " + std::to_string(t.free));
    }
    sizes.push_back(round_up(t.bytes, alignment));
    total = checked_add(total, sizes.back());
  }
  return sizes;
}

// The aligned bytes live at each distinct alloc position, positions ascending. Between two consecutive
// alloc positions the live set only shrinks, so these positions hold every maximal live set.
struct Breadths {
  std::vector<std::int64_t> positions;
  std::vector<Bytes> bytes;
};

Breadths breadths_at_allocs(const std::vector<TensorLife>& tensors, const std::vector<Bytes>& sizes) {
  std::vector<std::size_t> by_alloc(tensors.size());
  std::iota(by_alloc.begin(), by_alloc.end(), std::size_t{0});
  std::vector<std::size_t> by_free = by_alloc;
  std::sort(by_alloc.begin(), by_alloc.end(),
            [&](std::size_t a, std::size_t b) { return tensors[a].alloc < tensors[b].alloc; });
  std::sort(by_free.begin(), by_free.end(),
            [&](std::size_t a, std::size_t b) { return tensors[a].free < tensors[b].free; });

  // Sweep: at position p the live bytes are those allocated at or before p minus those freed at or
  // before p (a tensor freed by p was allocated before it). kNeverFreed exceeds every alloc position.
  Breadths out;
  Bytes live = 0;
  std::size_t a = 0;
  std::size_t f = 0;
  while (a < by_alloc.size()) {
    const std::int64_t p = tensors[by_alloc[a]].alloc;
    for (; a < by_alloc.size() && tensors[by_alloc[a]].alloc == p; ++a) live += sizes[by_alloc[a]];
    for (; f < by_free.size() && tensors[by_free[f]].free <= p; ++f) live -= sizes[by_free[f]];
    out.positions.push_back(p);
    out.bytes.push_back(live);
  }
  return out;
}

// Minimum over index ranges of a fixed array (sparse table): O(n log n) to build, O(1) per query.
class RangeMin {
 public:
  explicit RangeMin(std::vector<std::size_t> values) {
    levels_.push_back(std::move(values));
    // Level k holds the minimum of every window of 2^k values.
    for (std::size_t w = 1; 2 * w <= levels_[0].size(); w *= 2) {
      const std::vector<std::size_t>& prev = levels_.back();
      std::vector<std::size_t> next(prev.size() - w);
      for (std::size_t i = 0; i < next.size(); ++i) next[i] = std::min(prev[i], prev[i + w]);
      levels_.push_back(std::move(next));
    }
  }
  // The minimum of values[lo, hi); needs lo < hi. Two windows of the largest power of two that fits.
  std::size_t min(std::size_t lo, std::size_t hi) const {
    const auto k = static_cast<std::size_t>(std::bit_width(hi - lo)) - 1;
    const std::size_t w = std::size_t{1} << k;
    return std::min(levels_[k][lo], levels_[k][hi - w]);
  }

 private:
  std::vector<std::vector<std::size_t>> levels_;
};

// The arena as placed so far: the non-empty placed tensors ordered by offset, so one pass over them
// finds the gaps a new tensor could take between the tensors it conflicts with.
class Arena {
 public:
  explicit Arena(const std::vector<TensorLife>& tensors) : tensors_(tensors), offsets_(tensors.size(), 0) {}

  // Puts tensor `index` of `size` aligned bytes into the smallest gap between placed tensors it
  // conflicts with (ties: the lowest), else above the highest of them.
  void place(std::size_t index, Bytes size) {
    if (size == 0) return;  // occupies nothing: offset 0
    const TensorLife& t = tensors_[index];
    Bytes frontier = 0;     // the highest end of the conflicting tensors seen so far
    Bytes best_offset = -1;
    Bytes best_gap = INT64_MAX;
    for (const Block& b : blocks_) {
      // A block that ends below the frontier opens no gap and cannot raise it; one whose tensor is not
      // live with this one is no obstacle.
      if (b.end <= frontier) continue;
      if (!(t.alloc < b.free && b.alloc < t.free)) continue;
      const Bytes gap = b.offset - frontier;
      if (gap >= size && gap < best_gap) {
        best_gap = gap;
        best_offset = frontier;
        if (gap == size) break;  // no gap can fit better, and later ones are higher
      }
      frontier = b.end;
    }
    const Bytes offset = best_offset >= 0 ? best_offset : frontier;
    const Block placed{offset, offset + size, t.alloc, t.free};
    auto at = std::upper_bound(blocks_.begin(), blocks_.end(), placed,
                               [](const Block& x, const Block& y) { return x.offset < y.offset; });
    blocks_.insert(at, placed);
    offsets_[index] = offset;
    size_ = std::max(size_, placed.end);
  }

  ArenaPlan finish(std::string planner) && {
    return ArenaPlan{std::move(planner), std::move(offsets_), size_};
  }

 private:
  struct Block {  // a placed tensor, with its life copied in to keep the scan in one array
    Bytes offset;
    Bytes end;
    std::int64_t alloc;
    std::int64_t free;
  };
  const std::vector<TensorLife>& tensors_;
  std::vector<Block> blocks_;
  std::vector<Bytes> offsets_;
  Bytes size_ = 0;
};

// Both planners visit tensors by decreasing size; ties go to the earlier alloc, then the lower index.
bool larger_first(const std::vector<TensorLife>& tensors, std::size_t a, std::size_t b) {
  if (tensors[a].bytes != tensors[b].bytes) return tensors[a].bytes > tensors[b].bytes;
  if (tensors[a].alloc != tensors[b].alloc) return tensors[a].alloc < tensors[b].alloc;
  return a < b;
}

ArenaPlan place_in_order(const std::vector<std::size_t>& order, const std::vector<TensorLife>& tensors,
                         const std::vector<Bytes>& sizes, std::string planner) {
  Arena arena(tensors);
  for (std::size_t i : order) arena.place(i, sizes[i]);
  return std::move(arena).finish(std::move(planner));
}

}  // namespace

ArenaPlan plan_greedy_by_size(const std::vector<TensorLife>& tensors, Bytes alignment) {
  const std::vector<Bytes> sizes = aligned_sizes(tensors, alignment);
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return larger_first(tensors, a, b); });
  return place_in_order(order, tensors, sizes, "greedy_by_size");
}

ArenaPlan plan_greedy_by_breadth(const std::vector<TensorLife>& tensors, Bytes alignment) {
  const std::vector<Bytes> sizes = aligned_sizes(tensors, alignment);
  const Breadths breadths = breadths_at_allocs(tensors, sizes);
  const std::vector<std::int64_t>& positions = breadths.positions;

  // Step 1: the order positions are visited in: broadest first, ties to the earlier position.
  std::vector<std::size_t> visit(positions.size());
  std::iota(visit.begin(), visit.end(), std::size_t{0});
  std::sort(visit.begin(), visit.end(), [&](std::size_t a, std::size_t b) {
    return breadths.bytes[a] != breadths.bytes[b] ? breadths.bytes[a] > breadths.bytes[b] : a < b;
  });
  std::vector<std::size_t> rank(positions.size());
  for (std::size_t r = 0; r < visit.size(); ++r) rank[visit[r]] = r;

  // Step 2: a tensor is placed at the first visited position where it is live, i.e. the least rank
  // among the alloc positions in [alloc, free). Its own alloc is one, so the range is never empty.
  const RangeMin least_rank(std::move(rank));
  std::vector<std::size_t> first_visit(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    auto lo = std::lower_bound(positions.begin(), positions.end(), tensors[i].alloc);
    auto hi = std::lower_bound(lo, positions.end(), tensors[i].free);
    first_visit[i] = least_rank.min(static_cast<std::size_t>(lo - positions.begin()),
                                    static_cast<std::size_t>(hi - positions.begin()));
  }

  // Step 3: place by visit, and within a visit by decreasing size.
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return first_visit[a] != first_visit[b] ? first_visit[a] < first_visit[b] : larger_first(tensors, a, b);
  });
  return place_in_order(order, tensors, sizes, "greedy_by_breadth");
}

Bytes live_bytes_lower_bound(const std::vector<TensorLife>& tensors, Bytes alignment) {
  const Breadths breadths = breadths_at_allocs(tensors, aligned_sizes(tensors, alignment));
  return breadths.bytes.empty() ? 0 : *std::max_element(breadths.bytes.begin(), breadths.bytes.end());
}

Bytes no_reuse_bytes(const std::vector<TensorLife>& tensors, Bytes alignment) {
  const std::vector<Bytes> sizes = aligned_sizes(tensors, alignment);  // the sum is known to fit
  return std::accumulate(sizes.begin(), sizes.end(), Bytes{0});
}

std::string check_arena_plan(const std::vector<TensorLife>& tensors, const ArenaPlan& plan, Bytes alignment) {
  const std::vector<Bytes> sizes = aligned_sizes(tensors, alignment);
  if (plan.offsets.size() != tensors.size()) {
    throw InvalidArgument("check_arena_plan: " + std::to_string(plan.offsets.size()) + " offsets for " +
                          std::to_string(tensors.size()) + " tensors");
  }
  if (plan.size < 0) return "negative arena size " + std::to_string(plan.size);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const Bytes offset = plan.offsets[i];
    const std::string name = "tensor " + std::to_string(i);
    if (offset < 0) return name + ": negative offset " + std::to_string(offset);
    if (offset % alignment != 0) {
      return name + ": offset " + std::to_string(offset) + " is not a multiple of " + std::to_string(alignment);
    }
    if (offset > plan.size - sizes[i]) {  // no overflow: both sides are within [-INT64_MAX, INT64_MAX]
      return name + ": offset " + std::to_string(offset) + " + " + std::to_string(sizes[i]) +
             " aligned bytes exceeds the arena size " + std::to_string(plan.size);
    }
  }

  // Sweep by offset: every pair whose memory ranges overlap is met once, from its lower member.
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return plan.offsets[a] != plan.offsets[b] ? plan.offsets[a] < plan.offsets[b] : a < b;
  });
  for (std::size_t x = 0; x < order.size(); ++x) {
    const std::size_t i = order[x];
    const Bytes end = plan.offsets[i] + tensors[i].bytes;
    for (std::size_t y = x + 1; y < order.size() && plan.offsets[order[y]] < end; ++y) {
      const std::size_t j = order[y];
      if (tensors[j].bytes == 0) continue;
      if (!intervals_overlap(tensors[i], tensors[j])) continue;
      return "tensors " + std::to_string(std::min(i, j)) + " and " + std::to_string(std::max(i, j)) +
             " conflict but their memory overlaps: [" + std::to_string(plan.offsets[i]) + ", " +
             std::to_string(end) + ") and [" + std::to_string(plan.offsets[j]) + ", " +
             std::to_string(plan.offsets[j] + tensors[j].bytes) + ")";
    }
  }
  return "";
}

namespace {

// Constants of PyTorch's c10/cuda/CUDACachingAllocator.cpp, with that file's comments (newer releases
// keep them in c10/core/AllocatorConfig.h, unchanged).
constexpr Bytes kMinBlockSize = 512;        // "all sizes are rounded to at least 512 bytes"
constexpr Bytes kSmallSize = 1048576;       // "largest 'small' allocation is 1 MiB"
constexpr Bytes kSmallBuffer = 2097152;     // "'small' allocations are packed in 2 MiB blocks"
constexpr Bytes kLargeBuffer = 20971520;    // "'large' allocations may be packed in 20 MiB blocks"
constexpr Bytes kMinLargeAlloc = 10485760;  // "allocations between 1 and 10 MiB may use kLargeBuffer"
constexpr Bytes kRoundLarge = 2097152;      // "round up large allocs to 2 MiB"

// The allocator's state: blocks by address (a segment's blocks are contiguous), and per pool the
// cached free blocks ordered as PyTorch's BlockComparator orders them: by size, then by address.
class CachingAllocatorModel {
 public:
  // Returns the address of a block for a request of `bytes` > 0.
  Bytes malloc(Bytes bytes) {
    const Bytes size = round_up(bytes, kMinBlockSize);  // round_size()
    const bool small = size <= kSmallSize;              // get_pool()
    std::set<std::pair<Bytes, Bytes>>& pool = free_blocks_[small ? 0 : 1];

    // get_free_block(): best fit; else alloc_block(): a new segment, never released afterwards.
    Bytes address = 0;
    auto fit = pool.lower_bound({size, 0});
    if (fit != pool.end()) {
      address = fit->second;
      pool.erase(fit);
    } else {
      address = reserved_;  // segments laid end to end in a model address space
      const Bytes segment = allocation_size(size);
      blocks_[address] = Block{segment, segments_++, small, false};
      reserved_ = checked_add(reserved_, segment);
    }

    // alloc_found_block(): keep the front, return the rest to the pool if should_split() says so.
    Block& block = blocks_.at(address);
    const Bytes rest = block.size - size;
    if (small ? rest >= kMinBlockSize : rest > kSmallSize) {
      blocks_[address + size] = Block{rest, block.segment, small, false};
      pool.insert({rest, address + size});
      block.size = size;
    }
    block.allocated = true;
    return address;
  }

  // free_block(): the block merges with free neighbours of its segment and stays cached.
  void free(Bytes address) {
    auto it = blocks_.find(address);
    std::set<std::pair<Bytes, Bytes>>& pool = free_blocks_[it->second.small ? 0 : 1];
    it->second.allocated = false;
    auto next = std::next(it);
    if (next != blocks_.end() && mergeable(it->second, next->second)) {
      pool.erase({next->second.size, next->first});
      it->second.size += next->second.size;
      blocks_.erase(next);
    }
    if (it != blocks_.begin()) {
      auto prev = std::prev(it);
      if (mergeable(it->second, prev->second)) {
        pool.erase({prev->second.size, prev->first});
        prev->second.size += it->second.size;
        blocks_.erase(it);
        it = prev;
      }
    }
    pool.insert({it->second.size, it->first});
  }

  Bytes reserved() const { return reserved_; }

 private:
  struct Block {
    Bytes size = 0;
    std::int64_t segment = 0;
    bool small = false;  // in the small pool (its segment is kSmallBuffer bytes)
    bool allocated = false;
  };

  // get_allocation_size(): the size of a new segment for a request of `size` rounded bytes.
  static Bytes allocation_size(Bytes size) {
    if (size <= kSmallSize) return kSmallBuffer;
    if (size < kMinLargeAlloc) return kLargeBuffer;
    return round_up(size, kRoundLarge);
  }
  static bool mergeable(const Block& freed, const Block& neighbour) {
    return neighbour.segment == freed.segment && !neighbour.allocated;
  }

  std::map<Bytes, Block> blocks_;
  std::array<std::set<std::pair<Bytes, Bytes>>, 2> free_blocks_;  // small pool, large pool
  Bytes reserved_ = 0;
  std::int64_t segments_ = 0;
};

}  // namespace

Bytes caching_allocator_peak(const std::vector<TensorLife>& tensors) {
  aligned_sizes(tensors, 1);  // validates

  struct Event {
    std::int64_t position;
    bool is_alloc;  // false sorts first: frees before allocs at one position
    std::size_t tensor;
    auto operator<=>(const Event&) const = default;
  };
  std::vector<Event> events;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].bytes == 0) continue;  // PyTorch hands out a null pointer for 0 bytes
    events.push_back({tensors[i].alloc, true, i});
    if (tensors[i].free != kNeverFreed) events.push_back({tensors[i].free, false, i});
  }
  std::sort(events.begin(), events.end());

  CachingAllocatorModel allocator;
  std::vector<Bytes> address(tensors.size(), 0);
  for (const Event& e : events) {
    if (e.is_alloc) {
      address[e.tensor] = allocator.malloc(tensors[e.tensor].bytes);
    } else {
      allocator.free(address[e.tensor]);
    }
  }
  return allocator.reserved();  // segments are never released, so the final reservation is the peak
}

}  // namespace twinbed
