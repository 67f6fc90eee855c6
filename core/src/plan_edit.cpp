#include "twinbed/core/plan_edit.hpp"

#include <algorithm>

#include "twinbed/core/error.hpp"

namespace twinbed {

ProgramEditor::ProgramEditor(const Program& original)
    : original_(original),
      ops_(original.ops),
      removed_(original.ops.size(), 0),
      before_(original.ops.size()),
      after_(original.ops.size()),
      extra_deps_(original.ops.size()),
      deps_replaced_(original.ops.size(), 0),
      replaced_deps_(original.ops.size()),
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
  return added_.at(r.index).op;
}

void ProgramEditor::remove(std::uint32_t i) { removed_.at(i) = 1; }

OpRef ProgramEditor::add(const PlanOp& op, const std::vector<OpRef>& deps, std::vector<std::uint32_t>& where) {
  added_.push_back({op, deps});
  const auto id = static_cast<std::uint32_t>(added_.size() - 1);
  where.push_back(id);
  return {id, true};
}

OpRef ProgramEditor::insert_before(std::uint32_t at, const PlanOp& op, const std::vector<OpRef>& deps) {
  return add(op, deps, before_.at(at));
}

OpRef ProgramEditor::insert_after(std::uint32_t at, const PlanOp& op, const std::vector<OpRef>& deps) {
  return add(op, deps, after_.at(at));
}

OpRef ProgramEditor::append(const PlanOp& op, const std::vector<OpRef>& deps) { return add(op, deps, at_end_); }

void ProgramEditor::add_dep(OpRef to, OpRef dep) {
  if (to.added) {
    added_.at(to.index).deps.push_back(dep);
  } else {
    extra_deps_.at(to.index).push_back(dep);
  }
}

void ProgramEditor::set_deps(std::uint32_t i, const std::vector<OpRef>& deps) {
  deps_replaced_.at(i) = 1;
  replaced_deps_.at(i) = deps;
  extra_deps_.at(i).clear();
}

const std::vector<std::uint32_t>& ProgramEditor::dependents(std::uint32_t i) {
  if (dependents_.empty()) {
    dependents_.resize(original_.ops.size());
    for (std::uint32_t j = 0; j < original_.ops.size(); ++j) {
      for (std::size_t k = 0; k < original_.num_deps(j); ++k) dependents_[original_.deps_of(j)[k]].push_back(j);
    }
  }
  return dependents_.at(i);
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
  // New positions of the original and added ops.
  std::vector<std::uint32_t> pos_original(n, kNone), pos_added(added_.size(), kNone);
  std::vector<OpRef> order;
  order.reserve(n + added_.size());
  auto place_added = [&](const std::vector<std::uint32_t>& ids) {
    for (std::uint32_t a : ids) {
      pos_added[a] = static_cast<std::uint32_t>(order.size());
      order.push_back({a, true});
    }
  };
  for (std::uint32_t i = 0; i < n; ++i) {
    place_added(before_[i]);
    if (!removed_[i]) {
      pos_original[i] = static_cast<std::uint32_t>(order.size());
      order.push_back({i, false});
    }
    place_added(after_[i]);
  }
  place_added(at_end_);

  // A dropped op stands for its own dependencies, resolved the same way (they are earlier: one pass).
  std::vector<std::vector<std::uint32_t>> through(n);
  auto resolve = [&](OpRef r, std::vector<std::uint32_t>& out) {
    if (r.added) {
      out.push_back(pos_added.at(r.index));
    } else if (removed_.at(r.index)) {
      out.insert(out.end(), through[r.index].begin(), through[r.index].end());
    } else {
      out.push_back(pos_original[r.index]);
    }
  };
  auto deps_of_original = [&](std::uint32_t i) {
    std::vector<OpRef> refs;
    if (deps_replaced_[i]) {
      refs = replaced_deps_[i];
    } else {
      for (std::size_t k = 0; k < original_.num_deps(i); ++k) refs.push_back(OpRef::original(original_.deps_of(i)[k]));
    }
    refs.insert(refs.end(), extra_deps_[i].begin(), extra_deps_[i].end());
    return refs;
  };
  for (std::uint32_t i = 0; i < n; ++i) {
    if (!removed_[i]) continue;
    std::vector<std::uint32_t> out;
    for (OpRef r : deps_of_original(i)) {
      if (!r.added && r.index >= i) throw InvalidArgument("ProgramEditor: op " + std::to_string(i) + " depends on a later op");
      resolve(r, out);
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    through[i] = std::move(out);
  }

  Program p;
  p.ops.reserve(order.size());
  p.deps.reserve(original_.deps.size() + added_.size());
  std::vector<std::int64_t> seq(kGroupKinds, 0);
  std::vector<std::uint32_t> deps;
  for (std::uint32_t k = 0; k < order.size(); ++k) {
    const OpRef r = order[k];
    PlanOp op = r.added ? added_[r.index].op : ops_[r.index];
    deps.clear();
    for (OpRef d : r.added ? added_[r.index].deps : deps_of_original(r.index)) resolve(d, deps);
    std::sort(deps.begin(), deps.end());
    deps.erase(std::unique(deps.begin(), deps.end()), deps.end());
    if (!deps.empty() && deps.back() >= k) {
      throw InvalidArgument("ProgramEditor: " + std::string(r.added ? "an added" : "original") + " op (" + to_string(op.kind) +
                            ", new position " + std::to_string(k) + ") would depend on a later op");
    }
    if (op.kind == OpKind::Collective) op.tag = seq[static_cast<std::size_t>(op.group)]++;
    p.add(op, deps);
  }
  p.params = std::move(params_);
  p.param_sets = std::move(param_sets_);
  return p;
}

PlanTables::PlanTables(Plan& plan) : plan_(plan) {
  for (std::size_t i = 0; i < plan.names.size(); ++i) names_.emplace(plan.names[i], static_cast<std::uint32_t>(i));
  for (std::size_t i = 0; i < plan.costs.size(); ++i) costs_by_name_[plan.costs[i].name].push_back(static_cast<std::int32_t>(i));
}

std::uint32_t PlanTables::name(const std::string& s) {
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

}  // namespace twinbed
