#include "twinbed/core/plan_edit.hpp"

#include <algorithm>

#include "twinbed/core/error.hpp"

namespace twinbed {

ProgramEditor::ProgramEditor(const Program& original)
    : original_(original),
      ops_(original.ops),
      removed_(original.ops.size(), 0),
      replaced_(original.ops.size(), 0),
      params_(original.params),
      param_sets_(original.param_sets) {
  if (!original.arena.empty()) {
    throw InvalidArgument("a program with a planned arena cannot be edited: the memory-planning pass (zrdf) must come last");
  }
  for (const PlanOp& op : original.ops) {
    if (op.kind == OpKind::Alloc) next_tensor_ = std::max(next_tensor_, op.tensor + 1);
  }
}

PlanOp& ProgramEditor::op(std::uint32_t i) { return ops_.at(i); }

PlanOp& ProgramEditor::added(OpRef r) {
  if (!r.added) throw InvalidArgument("ProgramEditor::added: not an added op");
  return added_.at(r.index);
}

void ProgramEditor::remove(std::uint32_t i) { removed_.at(i) = 1; }

OpRef ProgramEditor::add(const PlanOp& op, const OpRef* deps, std::size_t count, std::uint32_t at, Where where) {
  if (where != kEnd && at >= ops_.size()) throw InvalidArgument("ProgramEditor: no op " + std::to_string(at) + " to insert at");
  const auto id = static_cast<std::uint32_t>(added_.size());
  added_.push_back(op);
  inserts_.push_back({at, where, id});
  for (std::size_t k = 0; k < count; ++k) added_deps_.push_back({id, deps[k]});
  return {id, true};
}

void ProgramEditor::add_dep(OpRef to, OpRef dep) {
  if (to.added) {
    if (to.index >= added_.size()) throw InvalidArgument("ProgramEditor::add_dep: no such added op");
    added_deps_.push_back({to.index, dep});
  } else {
    if (to.index >= ops_.size()) throw InvalidArgument("ProgramEditor::add_dep: no such op");
    extra_deps_.push_back({to.index, dep});
  }
}

void ProgramEditor::set_deps(std::uint32_t i, const std::vector<OpRef>& deps) {
  replaced_.at(i) = 1;
  // Earlier replacements and additions of op i are superseded.
  const auto of_i = [i](const Dep& d) { return d.of == i; };
  replaced_deps_.erase(std::remove_if(replaced_deps_.begin(), replaced_deps_.end(), of_i), replaced_deps_.end());
  extra_deps_.erase(std::remove_if(extra_deps_.begin(), extra_deps_.end(), of_i), extra_deps_.end());
  for (OpRef d : deps) replaced_deps_.push_back({i, d});
}

std::vector<OpRef> ProgramEditor::original_deps(std::uint32_t i) const {
  if (i >= original_.ops.size()) throw InvalidArgument("ProgramEditor::original_deps: no such op");
  std::vector<OpRef> out;
  for (std::size_t k = 0; k < original_.num_deps(i); ++k) out.push_back(OpRef::original(original_.deps_of(i)[k]));
  return out;
}

const std::vector<std::uint32_t>& ProgramEditor::dependents(std::uint32_t i) {
  const std::size_t n = original_.ops.size();
  if (dependents_begin_.empty()) {
    dependents_begin_.assign(n + 1, 0);
    for (std::uint32_t d : original_.deps) ++dependents_begin_[d + 1];
    for (std::size_t k = 0; k < n; ++k) dependents_begin_[k + 1] += dependents_begin_[k];
    dependents_.resize(original_.deps.size());
    std::vector<std::uint32_t> fill(dependents_begin_.begin(), dependents_begin_.end() - 1);
    for (std::uint32_t j = 0; j < n; ++j) {
      for (std::size_t k = 0; k < original_.num_deps(j); ++k) dependents_[fill[original_.deps_of(j)[k]]++] = j;
    }
  }
  if (i >= n) throw InvalidArgument("ProgramEditor::dependents: no such op");
  dependents_scratch_.assign(dependents_.begin() + dependents_begin_[i], dependents_.begin() + dependents_begin_[i + 1]);
  return dependents_scratch_;
}

std::int32_t ProgramEditor::add_param_tensor(const ParamTensor& t) {
  params_.push_back(t);
  return static_cast<std::int32_t>(params_.size() - 1);
}

std::int32_t ProgramEditor::add_param_set(std::vector<ParamSlice> slices) {
  param_sets_.push_back(std::move(slices));
  return static_cast<std::int32_t>(param_sets_.size() - 1);
}

Program ProgramEditor::finish() {
  const auto n = static_cast<std::uint32_t>(original_.ops.size());
  constexpr std::uint32_t kNone = UINT32_MAX;
  const auto by_op = [](const Dep& a, const Dep& b) { return a.of < b.of; };
  std::stable_sort(inserts_.begin(), inserts_.end(), [](const Insert& a, const Insert& b) {
    if (a.where == kEnd || b.where == kEnd) return a.where != kEnd && b.where == kEnd;
    return a.at != b.at ? a.at < b.at : a.where < b.where;
  });
  std::stable_sort(added_deps_.begin(), added_deps_.end(), by_op);
  std::stable_sort(extra_deps_.begin(), extra_deps_.end(), by_op);
  std::stable_sort(replaced_deps_.begin(), replaced_deps_.end(), by_op);
  // CSR over the added ops' dependencies.
  std::vector<std::uint32_t> added_begin(added_.size() + 1, 0);
  for (const Dep& d : added_deps_) ++added_begin[d.of + 1];
  for (std::size_t k = 0; k < added_.size(); ++k) added_begin[k + 1] += added_begin[k];

  // New positions; and for each added op, how many original ops precede its place (the dropped ones
  // among them must be resolved before its dependencies are).
  std::vector<std::uint32_t> pos_original(n, kNone), pos_added(added_.size(), kNone), upto_added(added_.size(), n);
  for (const Insert& x : inserts_) upto_added[x.added] = x.where == kBefore ? x.at : x.where == kAfter ? x.at + 1 : n;
  std::vector<OpRef> order;
  order.reserve(n + added_.size());
  std::size_t next = 0;  // into inserts_
  auto place = [&](std::uint32_t at, Where where) {
    while (next < inserts_.size() && inserts_[next].where == where && inserts_[next].at == at) {
      pos_added[inserts_[next].added] = static_cast<std::uint32_t>(order.size());
      order.push_back({inserts_[next].added, true});
      ++next;
    }
  };
  for (std::uint32_t i = 0; i < n; ++i) {
    place(i, kBefore);
    if (!removed_[i]) {
      pos_original[i] = static_cast<std::uint32_t>(order.size());
      order.push_back({i, false});
    }
    place(i, kAfter);
  }
  for (; next < inserts_.size(); ++next) {
    pos_added[inserts_[next].added] = static_cast<std::uint32_t>(order.size());
    order.push_back({inserts_[next].added, true});
  }

  // A dropped op stands for its own dependencies, resolved the same way (they are earlier: one pass in
  // original order). Flat ranges into `through`.
  std::vector<std::uint32_t> through, through_begin(n + 1, 0);
  std::vector<std::uint32_t> scratch;
  std::size_t extra_at = 0, replaced_at = 0;  // cursors into the sorted lists, by original op
  std::uint32_t resolved_through = 0;         // original ops whose `through` range is known
  auto resolve = [&](OpRef r, std::vector<std::uint32_t>& out) {
    if (r.added) {
      out.push_back(pos_added.at(r.index));
    } else if (removed_.at(r.index)) {
      if (r.index >= resolved_through) {  // a dropped op not before the op that depends on it
        throw InvalidArgument("ProgramEditor: a dependency on dropped op " + std::to_string(r.index) +
                              ", which is not before the op that depends on it");
      }
      out.insert(out.end(), through.begin() + through_begin[r.index], through.begin() + through_begin[r.index + 1]);
    } else {
      out.push_back(pos_original[r.index]);
    }
  };
  // The dependencies of original op i: its own (or the replacement), then those added. Cursors only
  // move forward: call with increasing i. Returns whether `out` is already sorted and unique: true
  // when it is only the op's own dependencies, none dropped (positions keep their order).
  auto deps_of_original = [&](std::uint32_t i, std::vector<std::uint32_t>& out) {
    while (replaced_at < replaced_deps_.size() && replaced_deps_[replaced_at].of < i) ++replaced_at;
    while (extra_at < extra_deps_.size() && extra_deps_[extra_at].of < i) ++extra_at;
    const bool extra = extra_at < extra_deps_.size() && extra_deps_[extra_at].of == i;
    if (!replaced_[i] && !extra) {
      bool plain = true;
      const std::uint32_t* d = original_.deps_of(i);
      for (std::size_t k = 0; k < original_.num_deps(i); ++k) {
        plain = plain && !removed_[d[k]] && (k == 0 || d[k - 1] < d[k]);
        resolve(OpRef::original(d[k]), out);
      }
      return plain;
    }
    if (replaced_[i]) {
      for (std::size_t k = replaced_at; k < replaced_deps_.size() && replaced_deps_[k].of == i; ++k) {
        if (!replaced_deps_[k].dep.added && replaced_deps_[k].dep.index >= i && removed_[i]) {
          throw InvalidArgument("ProgramEditor: op " + std::to_string(i) + " depends on a later op");
        }
        resolve(replaced_deps_[k].dep, out);
      }
    } else {
      for (std::size_t k = 0; k < original_.num_deps(i); ++k) resolve(OpRef::original(original_.deps_of(i)[k]), out);
    }
    for (std::size_t k = extra_at; k < extra_deps_.size() && extra_deps_[k].of == i; ++k) resolve(extra_deps_[k].dep, out);
    return false;
  };

  Program p;
  p.ops.reserve(order.size());
  p.deps.reserve(original_.deps.size() + added_deps_.size());
  p.dep_begin.reserve(order.size() + 1);
  std::vector<std::int64_t> seq(kGroupKinds, 0);
  for (std::uint32_t k = 0; k < order.size(); ++k) {
    const OpRef r = order[k];
    // Dropped ops before this original one: their ranges first (order follows original positions).
    const std::uint32_t upto = r.added ? std::max(resolved_through, upto_added[r.index]) : r.index;
    for (; resolved_through < upto; ++resolved_through) {
      const std::uint32_t i = resolved_through;
      if (removed_[i]) {
        scratch.clear();
        deps_of_original(i, scratch);
        std::sort(scratch.begin(), scratch.end());
        scratch.erase(std::unique(scratch.begin(), scratch.end()), scratch.end());
        through.insert(through.end(), scratch.begin(), scratch.end());
      }
      through_begin[i + 1] = static_cast<std::uint32_t>(through.size());
    }
    scratch.clear();
    bool sorted = false;
    if (r.added) {
      for (std::uint32_t d = added_begin[r.index]; d < added_begin[r.index + 1]; ++d) resolve(added_deps_[d].dep, scratch);
    } else {
      sorted = deps_of_original(r.index, scratch);
      through_begin[r.index + 1] = static_cast<std::uint32_t>(through.size());
      ++resolved_through;
    }
    if (!sorted) {
      std::sort(scratch.begin(), scratch.end());
      scratch.erase(std::unique(scratch.begin(), scratch.end()), scratch.end());
    }
    PlanOp op = r.added ? added_[r.index] : ops_[r.index];
    if (!scratch.empty() && scratch.back() >= k) {
      throw InvalidArgument("ProgramEditor: " + std::string(r.added ? "an added" : "original") + " op (" + to_string(op.kind) +
                            ", new position " + std::to_string(k) + ") would depend on a later op");
    }
    if (op.kind == OpKind::Collective) op.tag = seq[static_cast<std::size_t>(op.group)]++;
    p.add(op, scratch);
  }
  p.params = std::move(params_);
  p.param_sets = std::move(param_sets_);
  return p;
}

PlanTables::PlanTables(Plan& plan) : plan_(plan) {
  for (std::size_t i = 0; i < plan.names.size(); ++i) names_.emplace(plan.names[i], static_cast<std::uint32_t>(i));
  for (std::size_t i = 0; i < plan.costs.size(); ++i) costs_by_name_[plan.costs[i].name].push_back(static_cast<std::int32_t>(i));
}

std::string layer_prefix(int layer) { return layer >= 0 ? "l" + std::to_string(layer) + "." : ""; }

std::uint32_t PlanTables::name(const std::string& s) {
  if (const auto known = names_.find(s); known != names_.end()) return known->second;  // no node built
  auto [it, fresh] = names_.emplace(s, static_cast<std::uint32_t>(plan_.names.size()));
  if (fresh) plan_.names.push_back(s);
  return it->second;
}

std::int32_t PlanTables::cost(const OpCost& c) {
  std::vector<std::int32_t>& same = costs_by_name_[c.name];
  for (std::int32_t i : same) {
    if (plan_.costs[static_cast<std::size_t>(i)] == c) return i;
  }
  plan_.costs.push_back(c);
  same.push_back(static_cast<std::int32_t>(plan_.costs.size() - 1));
  return same.back();
}

namespace {

std::vector<BucketCollective> bucket_collectives(const std::vector<GradientReady>& ready, CollectiveOp what, GroupKind group,
                                                 Bytes bucket_bytes, Bytes element_bytes, TensorClass moves,
                                                 const std::string& name, PlanTables& tables) {
  std::vector<BucketCollective> out;
  for (GradientBucket& b : gradient_buckets(ready, bucket_bytes, element_bytes)) {
    PlanOp op = collective_op(what, group, b.elements * element_bytes, StreamKind::Collective);
    op.tensor_class = moves;
    op.name = tables.name(name + std::to_string(out.size()));
    out.push_back({op, std::move(b)});
  }
  return out;
}

}  // namespace

std::vector<BucketCollective> gradient_reduction(const std::vector<GradientReady>& ready, GroupKind group, const Layout& layout,
                                                 Bytes grad_bytes, const std::string& base, PlanTables& tables) {
  const CollectiveOp what = layout.zero_stage == 0 ? CollectiveOp::AllReduce : CollectiveOp::ReduceScatter;
  return bucket_collectives(ready, what, group, layout.bucket_bytes, grad_bytes, TensorClass::Grads, base + "bucket", tables);
}

std::vector<BucketCollective> parameter_gather(const std::vector<GradientReady>& ready, GroupKind group, const Layout& layout,
                                               Bytes grad_bytes, Bytes param_bytes, const std::string& base, PlanTables& tables) {
  if (layout.zero_stage != 1 && layout.zero_stage != 2) return {};
  return bucket_collectives(ready, CollectiveOp::AllGather, group, layout.bucket_bytes / grad_bytes * param_bytes, param_bytes,
                            TensorClass::Weights, base + "param_allgather", tables);
}

}  // namespace twinbed
