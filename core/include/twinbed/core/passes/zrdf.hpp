// ZRDF — zero-redundancy data flow (seed 004, claim ZRDF-MEM) as a Plan pass: lifetime analysis over
// each program's Alloc/Free gives every tensor an offset in one arena (memory_plan.hpp's planners).
//
//   {"pass": "zrdf", "planner": "greedy_by_size", "alignment_bytes": 512}
//
// planner: "greedy_by_size" (default), "greedy_by_breadth" (Pisarchyk & Lee 2020) or "none" (the
// neutral setting: the plan is left unchanged); alignment_bytes >= 1 (default 512, the granularity of
// PyTorch's CUDA caching allocator). It must be the last pass: offsets belong to the ops they were
// planned on, and the Plan editor refuses a program with an arena.
//
// What it changes: every program gets an Arena (plan.hpp): each tensor it allocates gets an offset, and
// the rank's memory becomes one allocation of Arena::size bytes, live for the whole run and reused by
// every iteration (model state keeps its place; everything else is placed again each iteration at the
// same offsets — the seed's "cross-iteration sharing"). No op changes.
//
// Lifetimes. Two tensors may share memory only when one is freed before the other is allocated in
// every execution of the program, not only in program order: streams run concurrently. On one rank an
// op happens before another when a chain of dependencies and same-stream (FIFO) order leads from one to
// the other; a vector clock per op (the last position on the compute and on the collective stream
// that happens before it) decides that exactly. Each tensor's interval runs from the earliest program
// position whose op does not happen before its Alloc up to its Free, so that intervals that do not
// overlap are ordered in every execution; the planners then need interval overlap only.
//
// Figures kept in the Arena, per program (a rank):
//   size               the planned arena
//   lower_bound        the most bytes live at one point of program order: no planner can do better
//   no_reuse           every tensor of the iteration in memory of its own
//   caching_allocator  the peak that PyTorch's CUDA caching allocator would reserve for the same
//                      Alloc/Free sequence (memory_plan.hpp)
// and the reuse ratio is defined as 1 − size / no_reuse: the fraction of the bytes allocated during an
// iteration that are served by memory an earlier tensor of the iteration already used (zrdf_reuse_ratio).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "twinbed/core/plan.hpp"

namespace twinbed {

struct ZrdfParams {
  std::string planner = "greedy_by_size";  // greedy_by_size | greedy_by_breadth | none
  Bytes alignment = 512;
  bool operator==(const ZrdfParams&) const = default;
};

ZrdfParams zrdf_params_from_json(const nlohmann::json& entry, const std::string& path);
nlohmann::json zrdf_params_to_json(const ZrdfParams& p);
void apply_zrdf(Plan& plan, const ZrdfParams& p);

// 1 − arena.size / arena.no_reuse; 0 for an empty arena.
double zrdf_reuse_ratio(const Arena& arena);

}  // namespace twinbed
