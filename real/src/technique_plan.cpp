#include "technique_plan.hpp"

#include <algorithm>
#include <string>

#include "twinbed/core/error.hpp"
#include "twinbed/core/profile.hpp"

namespace twinbed::real::detail {

const char* to_string(TechniqueRole r) {
  switch (r) {
    case TechniqueRole::None: return "none";
    case TechniqueRole::Compress: return "tgc.compress";
    case TechniqueRole::Requantize: return "tgc.requantize";
    case TechniqueRole::Decompress: return "tgc.decompress";
    case TechniqueRole::Refresh: return "dsa.mask_refresh";
    case TechniqueRole::MaskedStep: return "dsa.masked_step";
    case TechniqueRole::LossScale: return "precision.loss_scale";
    case TechniqueRole::Statistics: return "precision.statistics";
    case TechniqueRole::SparseGemm: return "dsa.sparse_gemm";
  }
  return "?";
}

TechniquePlan plan_techniques(const Plan& plan, int rank) {
  using Kernel = OpCost::Kernel;
  using Role = TechniqueRole;
  const Program& prog = plan.program(rank);
  const std::size_t n_ops = prog.size();
  TechniquePlan tp;
  tp.role.assign(n_ops, Role::None);
  tp.exchange.assign(n_ops, -1);
  auto nonneg = [](std::int64_t v) { return std::max<std::int64_t>(v, 0); };
  // The exchange of a decompress or requantize op: the collective (or requantize) it depends on.
  auto exchange_before = [&](std::uint32_t i, const char* what) {
    for (std::size_t d = 0; d < prog.num_deps(i); ++d) {
      const std::uint32_t dep = prog.deps_of(i)[d];
      const bool exchange_op = prog.ops[dep].kind == OpKind::Collective || tp.role[dep] == Role::Requantize;
      if (exchange_op && tp.exchange[dep] >= 0) return tp.exchange[dep];
    }
    throw InvalidArgument("op '" + plan.names.at(prog.ops[i].name) + "' (" + what + ") follows no compressed collective");
  };
  auto dsa = [&](std::uint32_t i, const OpCost& c) -> DsaPlan& {
    if (tp.dsa.present && tp.dsa.n != nonneg(c.elements))
      throw InvalidArgument("op '" + plan.names.at(prog.ops[i].name) + "': DSA ops of one program over different parameter counts");
    tp.dsa.present = true;
    tp.dsa.n = nonneg(c.elements);
    tp.dsa.density = c.density;
    return tp.dsa;
  };

  for (std::uint32_t i = 0; i < n_ops; ++i) {
    const PlanOp& op = prog.ops[i];
    if (op.kind == OpKind::Collective) {
      // The compress op it depends on makes this the exchange's collective.
      for (std::size_t d = 0; d < prog.num_deps(i); ++d) {
        const std::uint32_t dep = prog.deps_of(i)[d];
        if (tp.role[dep] != Role::Compress) continue;
        ExchangePlan& e = tp.exchanges[static_cast<std::size_t>(tp.exchange[dep])];
        e.collective = static_cast<std::int32_t>(i);
        e.op = op.collective;
        e.members = plan.group_members(rank, op.group);
        e.me = static_cast<int>(std::find(e.members.begin(), e.members.end(), rank) - e.members.begin());
        tp.exchange[i] = tp.exchange[dep];
      }
      continue;
    }
    if (op.kind != OpKind::Compute) continue;
    const OpCost& c = plan.costs.at(static_cast<std::size_t>(op.cost));
    switch (c.kernel) {
      case Kernel::Compress:
        if (c.name == "tgc.requantize") {
          tp.role[i] = Role::Requantize;
          tp.exchange[i] = exchange_before(i, "tgc.requantize");
          tp.exchanges[static_cast<std::size_t>(tp.exchange[i])].requantize_elements = nonneg(c.elements);
        } else {
          ExchangePlan e;
          e.params.bits = c.bits;
          e.params.topk_fraction = c.keep_fraction;
          e.params.error_feedback = c.error_feedback;
          e.params.adaptive = c.adaptive;
          e.params.adaptive_bits = c.bits;
          e.params.block_size = c.block > 0 ? c.block : 256;
          e.bits = c.bits;
          e.n = nonneg(c.elements);
          e.name = op.name;
          tp.role[i] = Role::Compress;
          tp.exchange[i] = static_cast<std::int32_t>(tp.exchanges.size());
          tp.exchanges.push_back(std::move(e));
        }
        break;
      case Kernel::Decompress:
        tp.role[i] = Role::Decompress;
        tp.exchange[i] = exchange_before(i, "tgc.decompress");
        break;
      case Kernel::MaskRefresh: {
        tp.role[i] = Role::Refresh;
        DsaPlan& d = dsa(i, c);
        d.granularity = c.sparsity;
        d.block = nonneg(c.block);
        d.every = std::max(1, c.every);
        break;
      }
      case Kernel::MaskedStep:
        tp.role[i] = Role::MaskedStep;
        dsa(i, c).rest_bytes = masked_step_rest_bytes(c);
        break;
      case Kernel::LossScale:
        tp.role[i] = Role::LossScale;
        tp.loss_scale_elements = std::max(tp.loss_scale_elements, nonneg(c.elements));
        break;
      case Kernel::Precision:
        tp.role[i] = Role::Statistics;
        tp.statistics_elements = std::max(tp.statistics_elements, nonneg(c.elements));
        break;
      case Kernel::Lora:
      case Kernel::None:
        if (c.is_matmul() && (c.sparsity == OpCost::Sparsity::Block || c.sparsity == OpCost::Sparsity::TwoFour))
          tp.role[i] = Role::SparseGemm;
        break;
    }
  }
  return tp;
}

}  // namespace twinbed::real::detail
