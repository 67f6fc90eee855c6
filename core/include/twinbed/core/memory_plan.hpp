// Memory planning for ZRDF ("zero-redundancy data flow"): give every tensor of a program an offset in
// one arena, so that tensors whose lifetimes never overlap share memory. These are the pure algorithms;
// the Plan-facing pass (passes/) turns a Program's Alloc/Free ops into TensorLife records and back.
//
// Units: sizes and offsets are Bytes; positions are indices in one sequential execution order of the
// program (any integers; only their order matters). `alignment` is in bytes and must be >= 1: every
// offset is a multiple of it and every tensor takes its size rounded up to a multiple of it
// ("aligned bytes"). Zero-byte tensors are allowed: they take no space, get offset 0 and never overlap
// anything in memory.
//
// Two tensors conflict — must not share memory — when their lives [alloc, free) intersect. Lives from
// concurrent streams must be made such that this is enough: the ZRDF pass (passes/zrdf.hpp) starts each
// life at the first position not ordered before its allocation in every execution.
//
// Every function throws InvalidArgument for a tensor with bytes < 0 or alloc >= free, for
// alignment < 1, and when a byte total does not fit in int64. Functions are pure and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "twinbed/core/units.hpp"

namespace twinbed {

// One tensor's life, as positions in one sequential execution order of a program (e.g. program order,
// which is a valid topological order of the program's dependencies): it is live on [alloc, free).
// free == kNeverFreed for tensors that live to the end (model state).
inline constexpr std::int64_t kNeverFreed = INT64_MAX;
struct TensorLife {
  Bytes bytes = 0;
  std::int64_t alloc = 0;
  std::int64_t free = kNeverFreed;
  bool operator==(const TensorLife&) const = default;
};

// Whether [a.alloc, a.free) and [b.alloc, b.free) intersect: whether a and b conflict.
inline bool intervals_overlap(const TensorLife& a, const TensorLife& b) {
  return a.alloc < b.free && b.alloc < a.free;
}

struct ArenaPlan {
  std::string planner;         // "greedy_by_size" or "greedy_by_breadth"
  std::vector<Bytes> offsets;  // per tensor, multiples of `alignment`
  Bytes size = 0;              // arena bytes: max over tensors of offset + aligned size (0 if none)
  bool operator==(const ArenaPlan&) const = default;
};

// Greedy by size (Pisarchyk & Lee 2020, "Efficient Memory Management for Deep Neural Net Inference",
// arXiv:2001.03288): tensors in decreasing size (ties: earlier alloc, then index); each goes into the
// smallest gap between already-placed conflicting tensors that fits it (ties: the lowest gap), else
// above the highest one. Deterministic. O(T^2) time, O(T) memory.
ArenaPlan plan_greedy_by_size(const std::vector<TensorLife>& tensors, Bytes alignment);
// Greedy by breadth (same paper): positions in decreasing "breadth" (the aligned bytes live there;
// ties: earlier position); at each, its still-unplaced live tensors in decreasing size (ties as
// above), each placed as above. Same complexity as greedy by size.
ArenaPlan plan_greedy_by_breadth(const std::vector<TensorLife>& tensors, Bytes alignment);

// The largest sum of aligned bytes live at one position: no arena can be smaller, because tensors live
// at one position all conflict pairwise. O(T log T).
Bytes live_bytes_lower_bound(const std::vector<TensorLife>& tensors, Bytes alignment);
// Every tensor in memory of its own, never reused: the sum of aligned bytes. O(T).
Bytes no_reuse_bytes(const std::vector<TensorLife>& tensors, Bytes alignment);

// Checks a plan: offsets aligned and non-negative, size covers every tensor (offset + aligned bytes),
// and no two conflicting tensors' [offset, offset + bytes) ranges overlap. Returns an empty string when
// valid, else a one-line description of the first problem found. Throws InvalidArgument also when
// plan.offsets.size() != tensors.size(). O(T log T) plus one test per pair of tensors whose memory
// ranges overlap.
std::string check_arena_plan(const std::vector<TensorLife>& tensors, const ArenaPlan& plan, Bytes alignment);

// A model of PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp, one stream, default
// settings: no max_split_size, no expandable segments), run over the tensors' alloc/free events in
// position order (at one position: frees first, then allocs, each by tensor index). Returns the peak
// of reserved (cudaMalloc'ed) bytes. Zero-byte tensors allocate nothing, as in PyTorch.
// Requests are rounded up to multiples of 512 bytes; requests of at most 1 MiB come from a small pool
// of 2 MiB segments; larger ones from a large pool: a 20 MiB segment below 10 MiB, else a segment of
// the request rounded up to 2 MiB. A request takes the best-fitting cached free block of its pool
// (smallest that fits, ties by lower address), split when the rest is big enough; freed blocks merge
// with free neighbours and stay cached (segments are never released). O(E log E) for E events.
Bytes caching_allocator_peak(const std::vector<TensorLife>& tensors);

}  // namespace twinbed
