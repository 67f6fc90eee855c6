// Editing Plans: what technique passes (core/passes.hpp) need to rewrite one.
//
// ProgramEditor records edits against the original program's op indices — drop an op, change its
// fields, insert ops before or after one, add or replace dependencies, add parameter tensors and sets —
// and finish() applies them all in one pass, O(ops + deps + edits), returning a Program whose
// dependencies are consistent CSR again:
//  - ops come in the original order with the inserted ones at their places (several inserted at one
//    place keep the order they were inserted in), so program order stays the issue order of each
//    FIFO stream;
//  - a dependency on a dropped op becomes a dependency on that op's own (resolved) dependencies, so
//    every ordering that went through it is kept;
//  - dependencies are deduplicated; one that would point forward is an InvalidArgument naming the op;
//  - collective tags are renumbered per communicator kind in program order (the builder's numbering),
//    so members stay matched after collectives were added or dropped.
// Not thread-safe; one editor per program.
//
// PlanTables interns names and costs into a Plan's shared tables (each once), for the ops the builder
// and the passes add; gradient_reduction and parameter_gather make the data-parallel buckets for both.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <unordered_map>
#include <vector>

#include "twinbed/core/plan.hpp"

namespace twinbed {

// A node of an edited program: an op of the original program, or one the editor added.
struct OpRef {
  std::uint32_t index = 0;
  bool added = false;
  static OpRef original(std::uint32_t i) { return {i, false}; }
  bool operator==(const OpRef&) const = default;
};

class ProgramEditor {
 public:
  // Throws InvalidArgument when the program has a planned arena: offsets are only valid for the ops
  // they were planned on, so the memory-planning pass must come last.
  explicit ProgramEditor(const Program& original);

  const Program& original() const { return original_; }
  std::size_t size() const { return original_.ops.size(); }

  // The fields of original op i, to change in place (its dependencies are not touched).
  PlanOp& op(std::uint32_t i);
  // The fields of an added op.
  PlanOp& added(OpRef r);
  // Drops original op i (see above for what happens to ops that depended on it).
  void remove(std::uint32_t i);
  bool removed(std::uint32_t i) const { return removed_.at(i) != 0; }

  // Adds `op`, depending on the ops `deps`, right before / right after original op `at` (append: after
  // every op). Returns its reference.
  OpRef insert_before(std::uint32_t at, const PlanOp& op, const std::vector<OpRef>& deps = {}) {
    return add(op, deps.data(), deps.size(), at, kBefore);
  }
  OpRef insert_before(std::uint32_t at, const PlanOp& op, std::initializer_list<OpRef> deps) {
    return add(op, deps.begin(), deps.size(), at, kBefore);
  }
  OpRef insert_after(std::uint32_t at, const PlanOp& op, const std::vector<OpRef>& deps = {}) {
    return add(op, deps.data(), deps.size(), at, kAfter);
  }
  OpRef insert_after(std::uint32_t at, const PlanOp& op, std::initializer_list<OpRef> deps) {
    return add(op, deps.begin(), deps.size(), at, kAfter);
  }
  OpRef append(const PlanOp& op, const std::vector<OpRef>& deps = {}) { return add(op, deps.data(), deps.size(), 0, kEnd); }

  // Makes `to` (original or added) also depend on `dep`.
  void add_dep(OpRef to, OpRef dep);
  // Replaces the dependencies of original op i.
  void set_deps(std::uint32_t i, const std::vector<OpRef>& deps);
  // The dependencies of original op i in the original program: what an op inserted in its place waits for.
  std::vector<OpRef> original_deps(std::uint32_t i) const;
  // Original ops that depend directly on original op i in the original program (valid until the next
  // call).
  const std::vector<std::uint32_t>& dependents(std::uint32_t i);

  // Parameter tables of the edited program, copied from the original and edited in place.
  std::vector<ParamTensor>& params() { return params_; }
  std::vector<std::vector<ParamSlice>>& param_sets() { return param_sets_; }
  std::int32_t add_param_tensor(const ParamTensor& t);
  std::int32_t add_param_set(std::vector<ParamSlice> slices);
  // A tensor id unused by the original program and by earlier calls, for added Alloc/Free pairs.
  std::int32_t new_tensor_id() { return next_tensor_++; }

  // The edited program (see the header comment). The editor is spent afterwards.
  Program finish();

 private:
  enum Where : std::uint8_t { kBefore, kAfter, kEnd };
  OpRef add(const PlanOp& op, const OpRef* deps, std::size_t count, std::uint32_t at, Where where);
  struct Insert {
    std::uint32_t at;      // original position (kEnd: unused)
    Where where;
    std::uint32_t added;   // index into added_
  };
  struct Dep {
    std::uint32_t of;      // the op that depends: an original op, or an added one (by added index)
    OpRef dep;
  };

  // Edits are kept as flat lists, sorted once by finish(): a pass touches a few ops of hundreds of
  // thousands, and per-op containers would cost more than the edit.
  const Program& original_;
  std::vector<PlanOp> ops_;                  // original ops, possibly changed
  std::vector<char> removed_;
  std::vector<PlanOp> added_;
  std::vector<Insert> inserts_;
  std::vector<Dep> added_deps_;              // deps of added ops
  std::vector<Dep> extra_deps_;              // deps added to original ops
  std::vector<char> replaced_;               // per original op: its deps are those of replaced_deps_
  std::vector<Dep> replaced_deps_;
  std::vector<std::uint32_t> dependents_begin_, dependents_;  // CSR, built on first use
  std::vector<std::uint32_t> dependents_scratch_;
  std::vector<ParamTensor> params_;
  std::vector<std::vector<ParamSlice>> param_sets_;
  std::int32_t next_tensor_ = 0;
};

// The prefix of a layer's op names, as the builder names them and the passes find them: "l3." for
// layer 3 ("l3.fc1_fwd", "l3.recompute"); "" for layer -1, the ops outside the layers.
std::string layer_prefix(int layer);

class PlanTables {
 public:
  // Indexes the plan's names and costs once; the plan must outlive this object.
  explicit PlanTables(Plan& plan);
  std::uint32_t name(const std::string& s);
  std::int32_t cost(const OpCost& c);
  const OpCost& cost_of(std::int32_t id) const { return plan_.costs.at(static_cast<std::size_t>(id)); }

 private:
  Plan& plan_;
  std::unordered_map<std::string, std::uint32_t> names_;
  std::unordered_map<std::string, std::vector<std::int32_t>> costs_by_name_;
};

// A data-parallel bucket collective: `op` is a Collective on the collective stream with its bytes,
// name and tensor class set; the caller adds it with op.params a param set of `bucket.slices`, a tag
// and its dependencies.
struct BucketCollective {
  PlanOp op;
  GradientBucket bucket;
};
// The reduction of the gradients `ready` (in the order they become ready; GradientReady::op as the
// caller's op ids, which GradientBucket::ready_op then names) on `group` before the optimizer step:
// one collective per bucket of layout.bucket_bytes (gradient_buckets, `grad_bytes` per element), an
// all-reduce under ZeRO 0, else a reduce-scatter; named `base` + "bucket" + its index (base "dp.").
std::vector<BucketCollective> gradient_reduction(const std::vector<GradientReady>& ready, GroupKind group, const Layout& layout,
                                                 Bytes grad_bytes, const std::string& base, PlanTables& tables);
// ZeRO 1–2: the all-gathers of the same parameters, updated by the step: buckets of as many
// elements as the reduction's, `param_bytes` per element; named `base` + "param_allgather" + its index.
std::vector<BucketCollective> parameter_gather(const std::vector<GradientReady>& ready, GroupKind group, const Layout& layout,
                                               Bytes grad_bytes, Bytes param_bytes, const std::string& base, PlanTables& tables);

}  // namespace twinbed
