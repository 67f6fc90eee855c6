#include "technique_ops.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "twinbed/core/error.hpp"
#include "twinbed/core/hash.hpp"
#include "twinbed/core/profile.hpp"
#include "twinbed/kernels/dsa.hpp"
#include "twinbed/kernels/rng.hpp"
#include "twinbed/kernels/sparse_gemm.hpp"
#include "twinbed/kernels/tgc.hpp"
#include "twinbed/real/tgc_codec.hpp"
#include "../technique_plan.hpp"

namespace twinbed::real::detail {
namespace {

namespace kc = twinbed::kernels::cpu;

// Gradient-like values: a centred sum of four uniforms (bell-shaped, crest factor about 3.5, as DSA's
// and TGC's kernels expect of gradients), scaled to 1e-2. The same (seed, i) gives the same value on
// every rank, which is what lets a rank re-encode another rank's payload.
void fill_gradient(std::span<float> x, std::uint64_t seed) {
  for (std::size_t i = 0; i < x.size(); ++i) {
    float s = -2.0f;
    for (std::uint64_t j = 0; j < 4; ++j) {
      const std::uint64_t at = 4 * static_cast<std::uint64_t>(i) + j;
      s += kernels::rng::uniform(kernels::rng::key(seed, at), at);
    }
    x[i] = 0.01f * s;
  }
}

std::uint64_t seed_of(int world_rank, std::uint32_t name, std::int64_t salt) {
  return hash_combine(hash_combine(hash_combine(0x7467635f65786368ULL, static_cast<std::uint64_t>(world_rank)), name),
                      static_cast<std::uint64_t>(salt));
}

std::size_t as_size(std::int64_t n) { return static_cast<std::size_t>(std::max<std::int64_t>(n, 0)); }

// A TGC exchange: compress → collective → (requantize) → decompress of one gradient reduction.
struct Exchange {
  TgcParams params;
  int bits = 0;
  std::size_t n = 0;
  std::uint32_t name = 0;           // the compress op's name: with the rank, the gradient's identity
  CollectiveOp op = CollectiveOp::AllGather;
  std::vector<int> members;         // world ranks of the group, in schedule order
  int me = 0;                       // this rank's position among them
  std::unique_ptr<TgcCodec> codec;
  std::size_t payload_floats = 0;
  std::vector<float> gradient, payload, output, sum;
  std::vector<float> contribution;  // quantised reduction: this rank's payload decoded, its input
  std::vector<float> first_output;  // the first output that arrived, kept for verify_pending()
  bool arrived = false, verified = false;

  // A dense quantised payload is reduced hop by hop over its decoded values; top-k ones are all-gathered.
  bool quantised_reduction() const { return bits > 0 && !codec->sparse(); }
  kernels::QuantSpec spec() const { return {bits == 0 ? 8 : bits, static_cast<std::size_t>(params.block_size)}; }
  std::size_t output_floats() const {
    if (quantised_reduction()) return op == CollectiveOp::ReduceScatter ? (n + members.size() - 1) / members.size() : n;
    return op == CollectiveOp::AllGather ? payload_floats * members.size() : payload_floats;
  }
  std::int64_t bytes() const {
    const std::size_t floats = 2 * n + (params.error_feedback ? n : 0) + payload_floats + 2 * output_floats() + n +
                               (quantised_reduction() ? n : 0);
    return static_cast<std::int64_t>(4 * floats);
  }
};

// DSA's state of one program: the masks of the target parameters, refreshed a slice at a time.
struct Dsa {
  std::size_t n = 0;
  double density = 1;
  OpCost::Sparsity granularity = OpCost::Sparsity::Unstructured;
  std::size_t block = 0;
  int every = 1;
  std::vector<float> grad, momentum, score, params, v;
  std::vector<std::uint8_t> mask, block_mask;
  std::int64_t bytes() const { return static_cast<std::int64_t>(4 * 5 * n + n + n); }
};

struct SparseGemm {
  std::size_t m = 0, n = 0, k = 0, batch = 1;
  bool two_four = false;
  std::size_t block = 0;
  double density = 1;
  double flops = 0;
  std::vector<float> x, y;
  kernels::BsrMatrix bsr;
  kernels::Sparse24Matrix s24;
  std::int64_t bytes() const { return static_cast<std::int64_t>(4 * (m * k + 2 * n * k + m * n)); }
};

using Role = TechniqueRole;

}  // namespace

void requantize(std::span<const std::uint8_t> codes, std::span<const float> scales, std::span<const float> add,
                const kernels::QuantSpec& spec, std::span<float> sum, std::span<std::uint8_t> out_codes,
                std::span<float> out_scales) {
  kc::dequantize(codes, scales, spec, sum);
  for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += add[i];
  kc::quantize(sum, spec, out_codes, out_scales);
}

void refresh_masks(OpCost::Sparsity granularity, std::size_t block, double density, std::span<const float> grad,
                   std::span<const float> momentum, std::span<float> score, std::span<std::uint8_t> mask,
                   std::vector<std::uint8_t>& block_mask) {
  std::size_t len = grad.size();
  const bool blocks = granularity == OpCost::Sparsity::Block && block > 0 && len >= block * block;
  if (blocks) len = len / (block * block) * (block * block);  // whole b×b blocks of a (len/b)×b slice
  if (granularity == OpCost::Sparsity::TwoFour) len = len / 4 * 4;
  score = score.first(len);
  mask = mask.first(len);
  kc::importance(grad.first(len), momentum.first(len), 0.5f, score);
  if (blocks) {
    const std::size_t rows = len / block;
    block_mask.resize(rows / block);
    kc::mask_block(score, rows, block, block, density, block_mask, mask);
  } else if (granularity == OpCost::Sparsity::TwoFour) {
    if (len > 0) kc::mask_nm(score, len / 4, 4, 2, 4, mask);
  } else {
    kc::mask_unstructured(score, density, mask);
  }
}

void unscale_checked(std::span<const float> in, std::span<float> out) {
  // One pass; an exponent of all ones is inf or NaN (an integer OR, so the loop vectorises as PyTorch's
  // fused kernel is vectorised).
  const float inv = 1.0f / 65536.0f;  // GradScaler's initial scale, 2^16 (PyTorch's default init_scale)
  std::uint32_t overflow = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    std::uint32_t bits = 0;
    std::memcpy(&bits, &in[i], sizeof bits);
    overflow |= static_cast<std::uint32_t>((bits & 0x7f800000U) == 0x7f800000U);
    out[i] = in[i] * inv;
  }
  if (overflow != 0) throw Error("loss scale: a gradient overflowed");
}

float crest_factor(std::span<const float> g) {
  // max|g| and Σg² in 8 lanes (a vectorisable order of additions).
  float amax[8] = {}, sq[8] = {};
  std::size_t i = 0;
  for (; i + 8 <= g.size(); i += 8)
    for (std::size_t l = 0; l < 8; ++l) {
      amax[l] = std::max(amax[l], std::abs(g[i + l]));
      sq[l] += g[i + l] * g[i + l];
    }
  for (; i < g.size(); ++i) {
    amax[0] = std::max(amax[0], std::abs(g[i]));
    sq[0] += g[i] * g[i];
  }
  float m = 0, s = 0;
  for (std::size_t l = 0; l < 8; ++l) {
    m = std::max(m, amax[l]);
    s += sq[l];
  }
  return s > 0 ? m / std::sqrt(s / static_cast<float>(g.size())) : 0;
}

void fill_gradient_like(std::span<float> x, std::uint64_t seed) { fill_gradient(x, seed); }

struct TechniqueOps::Impl {
  const Plan* plan = nullptr;
  const Program* prog = nullptr;
  int rank = 0;
  std::vector<Role> role;                  // per op (technique_plan.hpp)
  std::vector<std::int32_t> index;         // per op: into exchanges (TGC ops) or gemms, -1 otherwise
  std::vector<std::int32_t> collective_of; // per op (collectives): exchange index or -1
  std::vector<Exchange> exchanges;
  std::vector<SparseGemm> gemms;
  Dsa dsa;
  bool has_dsa = false;
  std::int64_t masked_rest_bytes = 0;      // the masked step's dense remainder
  std::vector<float> loss_scale_in, loss_scale_out, stats;
  float crest = 0;                         // the statistics' last crest factor (max|g| / rms)
  std::int64_t iteration = 0;
  PayloadCheck check;
  bool allocated = false;

  const OpCost& cost(std::uint32_t i) const { return plan->costs.at(static_cast<std::size_t>(prog->ops[i].cost)); }

  void prepare(double compute_scale);
  void verify(Exchange& e);
};

void TechniqueOps::Impl::prepare(double compute_scale) {
  const TechniquePlan tp = plan_techniques(*plan, rank);
  const std::size_t n_ops = prog->size();
  role = tp.role;
  index.assign(n_ops, -1);
  collective_of.assign(n_ops, -1);
  for (const ExchangePlan& x : tp.exchanges) {
    Exchange e;
    e.params = x.params;
    e.bits = x.bits;
    e.n = as_size(x.n);
    e.name = x.name;
    e.op = x.op;
    e.members = x.members;
    e.me = x.me;
    e.codec = std::make_unique<TgcCodec>(e.params, e.n);
    e.payload_floats = e.codec->payload_floats(e.bits);
    exchanges.push_back(std::move(e));
  }
  has_dsa = tp.dsa.present;
  dsa.n = as_size(tp.dsa.n);
  dsa.density = tp.dsa.density;
  dsa.granularity = tp.dsa.granularity;
  dsa.block = as_size(tp.dsa.block);
  dsa.every = tp.dsa.every;
  masked_rest_bytes = tp.dsa.rest_bytes;  // masked_adam runs the targets; the rest streams on the pool
  std::map<std::int32_t, std::int32_t> gemm_of_cost;
  for (std::uint32_t i = 0; i < n_ops; ++i) {
    if (prog->ops[i].kind == OpKind::Collective) {
      collective_of[i] = tp.exchange[i];
      continue;
    }
    if (role[i] != Role::SparseGemm) {
      index[i] = tp.exchange[i];
      continue;
    }
    auto [it, fresh] = gemm_of_cost.try_emplace(prog->ops[i].cost, static_cast<std::int32_t>(gemms.size()));
    index[i] = it->second;
    if (!fresh) continue;
    const OpCost& c = cost(i);
    SparseGemm g;
    const ScaledCompute s = scale_compute(c, compute_scale);
    g.two_four = c.sparsity == OpCost::Sparsity::TwoFour;
    g.block = as_size(c.block);
    g.density = c.density;
    g.m = as_size(s.m);
    g.batch = as_size(s.batch);
    g.flops = s.flops;
    // Y = X·Wᵀ with W n×k; the largest part whole blocks (or groups of 4) tile.
    const std::size_t unit = g.two_four ? 4 : std::max<std::size_t>(g.block, 1);
    g.k = as_size(s.k) / unit * unit;
    g.n = g.two_four ? as_size(s.n) : as_size(s.n) / unit * unit;
    gemms.push_back(std::move(g));
  }
}

void TechniqueOps::Impl::verify(Exchange& e) {
  // Every member's first payload, re-encoded here from its gradient with a fresh residual.
  std::vector<float> g(e.n), expected(e.payload_floats), exact, bound, mine;
  const bool reduced = e.quantised_reduction();
  const kernels::QuantSpec spec = e.spec();
  if (reduced) {
    exact.assign(e.n, 0.0f);
    bound.assign(e.n, 0.0f);
  }
  for (std::size_t r = 0; r < e.members.size(); ++r) {
    TgcCodec fresh(e.params, e.n);
    fill_gradient(g, seed_of(e.members[r], e.name, static_cast<std::int64_t>(e.n)));
    fresh.encode(g, e.bits, expected);
    if (!reduced) {
      const float* got = e.first_output.data() + r * e.payload_floats;
      for (std::size_t i = 0; i < e.payload_floats; ++i)
        if (std::memcmp(&expected[i], got + i, sizeof(float)) != 0) ++check.wrong;
      check.floats += static_cast<std::int64_t>(e.payload_floats);
      continue;
    }
    // The exact sum of the members' contributions, and the sum of their block amax: a partial sum's
    // block amax is at most that.
    mine.assign(e.n, 0.0f);
    fresh.decode_add(expected, e.bits, mine);
    for (std::size_t b0 = 0, j = 0; b0 < e.n; b0 += spec.block, ++j) {
      float amax = 0;
      for (std::size_t i = b0; i < std::min(e.n, b0 + spec.block); ++i) {
        amax = std::max(amax, std::abs(mine[i]));
        exact[i] += mine[i];
      }
      bound[j] += amax;
    }
  }
  if (reduced) {
    // Each encoding along a chunk's way (R−1 reductions, and for an all-reduce R−1 forwards) errs by at
    // most half a step, amax / (2·qmax), of a transfer block; a transfer block starts at its chunk, so it
    // overlaps two payload blocks at most, and its amax is at most the larger of theirs (bound[j]: the
    // members' summed block amax, which bounds every partial sum's). A reduce-scatter's output is this
    // rank's block of the sum: elements from me·⌈n/R⌉ (the collective's block, collective_data.hpp).
    const bool scatter = e.op == CollectiveOp::ReduceScatter;
    const double qmax = std::ldexp(1.0, spec.bits - 1) - 1;
    const double encodings = (scatter ? 1.0 : 2.0) * static_cast<double>(e.members.size() - 1);
    const std::size_t blocks = (e.n + spec.block - 1) / spec.block;
    const std::size_t first = scatter ? static_cast<std::size_t>(e.me) * e.output_floats() : 0;
    const std::size_t count = std::min(e.first_output.size(), e.n - std::min(e.n, first));
    for (std::size_t o = 0; o < count; ++o) {
      const std::size_t i = first + o;
      const std::size_t j = i / spec.block;
      const float wide = std::max({bound[j], j > 0 ? bound[j - 1] : 0.0f, j + 1 < blocks ? bound[j + 1] : 0.0f});
      const double limit = encodings * static_cast<double>(wide) / (2 * qmax) * (1 + 1e-5);
      if (!(std::abs(static_cast<double>(e.first_output[o]) - static_cast<double>(exact[i])) <= limit)) ++check.wrong;
    }
    check.floats += static_cast<std::int64_t>(count);
  }
  e.verified = true;
  if (check.wrong > 0)
    throw Error("CPU backend: the exchange of the payloads '" + plan->names.at(e.name) + "' encoded delivered " +
                std::to_string(check.wrong) + " wrong floats");
}

TechniqueOps::TechniqueOps(const Plan& plan, int rank, double compute_scale) : impl_(std::make_unique<Impl>()) {
  impl_->plan = &plan;
  impl_->prog = &plan.program(rank);
  impl_->rank = rank;
  impl_->prepare(compute_scale);
}

TechniqueOps::~TechniqueOps() = default;
TechniqueOps::TechniqueOps(TechniqueOps&&) noexcept = default;
TechniqueOps& TechniqueOps::operator=(TechniqueOps&&) noexcept = default;

std::int64_t TechniqueOps::bytes() const {
  const Impl& im = *impl_;
  std::int64_t total = im.has_dsa ? im.dsa.bytes() : 0;
  for (const Exchange& e : im.exchanges) total += e.bytes();
  for (const SparseGemm& g : im.gemms) total += g.bytes();
  for (std::uint32_t i = 0; i < im.prog->size(); ++i) {
    if (im.role[i] == Role::LossScale) total += 8 * im.cost(i).elements;
    if (im.role[i] == Role::Statistics) total += 4 * im.cost(i).elements;
  }
  return total;
}

void TechniqueOps::allocate() {
  Impl& im = *impl_;
  if (im.allocated) return;
  im.allocated = true;
  for (Exchange& e : im.exchanges) {
    e.gradient.resize(e.n);
    fill_gradient(e.gradient, seed_of(im.rank, e.name, static_cast<std::int64_t>(e.n)));
    e.payload.assign(e.payload_floats, 0.0f);
    e.output.assign(e.output_floats(), 0.0f);
    e.first_output.assign(e.output_floats(), 0.0f);
    e.sum.assign(e.n, 0.0f);
    if (e.quantised_reduction()) e.contribution.assign(e.n, 0.0f);
  }
  if (im.has_dsa) {
    Dsa& d = im.dsa;
    std::uint32_t which = 0;
    for (std::vector<float>* v : {&d.grad, &d.momentum, &d.params}) {
      v->resize(d.n);
      fill_gradient(*v, seed_of(im.rank, which++, 17));
    }
    d.v.assign(d.n, 1e-4f);
    d.score.resize(d.n);
    d.mask.assign(d.n, 0);
    // The masks before the first refresh: the top `density` of the initial importance.
    kc::importance(d.grad, d.momentum, 0.5f, d.score);
    kc::mask_unstructured(d.score, d.density, d.mask);
  }
  for (std::uint32_t i = 0; i < im.prog->size(); ++i) {
    if (im.role[i] != Role::LossScale && im.role[i] != Role::Statistics) continue;
    const auto n = as_size(im.cost(i).elements);
    if (im.role[i] == Role::LossScale && im.loss_scale_in.size() < n) {
      im.loss_scale_in.resize(n);
      fill_gradient(im.loss_scale_in, seed_of(im.rank, 0, 65536));
      im.loss_scale_out.resize(n);
    }
    if (im.role[i] == Role::Statistics && im.stats.size() < n) {
      im.stats.resize(n);
      fill_gradient(im.stats, seed_of(im.rank, 0, 3));
    }
  }
  for (SparseGemm& g : im.gemms) {
    g.x.resize(g.m * g.k);
    fill_gradient(g.x, seed_of(im.rank, 1, static_cast<std::int64_t>(g.m)));
    g.y.assign(g.m * g.n, 0.0f);
    std::vector<float> w(g.n * g.k);
    fill_gradient(w, seed_of(im.rank, 2, static_cast<std::int64_t>(g.n)));
    if (g.n == 0 || g.k == 0) continue;  // no whole block: nothing to multiply
    if (g.two_four) {
      g.s24 = kernels::prune_24(w, g.n, g.k);
    } else {
      std::vector<float> score(w.size());
      for (std::size_t j = 0; j < w.size(); ++j) score[j] = std::abs(w[j]);
      std::vector<std::uint8_t> block_mask((g.n / g.block) * (g.k / g.block)), mask(w.size());
      kc::mask_block(score, g.n, g.k, g.block, g.density, block_mask, mask);
      g.bsr = kernels::bsr_from_dense(w, g.n, g.k, g.block, block_mask);
    }
  }
}

bool TechniqueOps::runs(std::uint32_t op) const { return impl_->role.at(op) != Role::None; }

double TechniqueOps::flops(std::uint32_t op) const {
  const Impl& im = *impl_;
  if (im.role.at(op) == Role::SparseGemm) return im.gemms[static_cast<std::size_t>(im.index[op])].flops;
  return im.cost(op).flops;
}

std::optional<ScaledCompute> TechniqueOps::run(std::uint32_t op) {
  Impl& im = *impl_;
  if (!im.allocated) throw Error("TechniqueOps::run before allocate()");
  const OpCost& c = im.cost(op);
  switch (im.role.at(op)) {
    case Role::None:
      throw InvalidArgument("TechniqueOps::run: op " + std::to_string(op) + " is not a technique op");
    case Role::Compress: {
      Exchange& e = im.exchanges[static_cast<std::size_t>(im.index[op])];
      // The adaptive rule runs (its work is the op's); the payload keeps the width the plan assumed,
      // which sized every buffer and collective after it.
      if (e.params.adaptive) static_cast<void>(e.codec->choose_bits(e.gradient));
      e.codec->encode(e.gradient, e.bits, e.payload);
      if (e.quantised_reduction()) {  // what this rank contributes to the hop-by-hop reduction
        std::fill(e.contribution.begin(), e.contribution.end(), 0.0f);
        e.codec->decode_add(e.payload, e.bits, e.contribution);
      }
      return std::nullopt;
    }
    case Role::Requantize:
      return std::nullopt;  // the hops ran inside the collective (see the header)
    case Role::Decompress: {
      Exchange& e = im.exchanges[static_cast<std::size_t>(im.index[op])];
      if (!e.arrived) {
        std::copy(e.output.begin(), e.output.end(), e.first_output.begin());
        e.arrived = true;
      }
      if (e.quantised_reduction()) {
        std::copy(e.output.begin(), e.output.end(), e.sum.begin());  // decoded at the last hop
        return std::nullopt;
      }
      std::fill(e.sum.begin(), e.sum.end(), 0.0f);
      for (std::size_t r = 0; r < e.members.size(); ++r)
        e.codec->decode_add(std::span<const float>(e.output).subspan(r * e.payload_floats, e.payload_floats), e.bits, e.sum);
      return std::nullopt;
    }
    case Role::Refresh: {
      Dsa& d = im.dsa;
      const std::size_t slice = (d.n + static_cast<std::size_t>(d.every) - 1) / static_cast<std::size_t>(d.every);
      const std::size_t at = std::min(d.n, static_cast<std::size_t>(im.iteration % d.every) * slice);
      const std::size_t len = std::min(slice, d.n - at);
      refresh_masks(d.granularity, d.block, d.density, std::span<const float>(d.grad).subspan(at, len),
                    std::span<const float>(d.momentum).subspan(at, len), std::span<float>(d.score).subspan(at, len),
                    std::span<std::uint8_t>(d.mask).subspan(at, len), d.block_mask);
      return std::nullopt;
    }
    case Role::MaskedStep: {
      Dsa& d = im.dsa;
      kc::masked_adam(d.params, d.grad, d.momentum, d.v, d.mask, kernels::AdamSpec{}, static_cast<int>(im.iteration + 1));
      if (im.masked_rest_bytes <= 0) return std::nullopt;
      ScaledCompute rest;
      rest.stream_floats = im.masked_rest_bytes / 8;  // half read, half written, as scale_compute streams
      return rest;
    }
    case Role::LossScale: {
      const std::size_t n = as_size(c.elements);
      unscale_checked(std::span<const float>(im.loss_scale_in).first(n), std::span<float>(im.loss_scale_out).first(n));
      return std::nullopt;
    }
    case Role::Statistics: {
      const std::size_t n = as_size(c.elements);
      const std::size_t every = static_cast<std::size_t>(std::max(1, c.every));
      const std::size_t slice = (n + every - 1) / every;
      const std::size_t at = std::min(n, static_cast<std::size_t>(im.iteration % c.every) * slice);
      im.crest = crest_factor(std::span<const float>(im.stats).subspan(at, std::min(slice, n - at)));
      return std::nullopt;
    }
    case Role::SparseGemm: {
      SparseGemm& g = im.gemms[static_cast<std::size_t>(im.index[op])];
      if (g.n == 0 || g.k == 0) return std::nullopt;
      for (std::size_t b = 0; b < g.batch; ++b) {
        if (g.two_four) kc::sparse24_gemm_nt(g.x, g.m, g.s24.view(), g.y);
        else kc::bsr_gemm_nt(g.x, g.m, g.bsr.view(), g.y);
      }
      return std::nullopt;
    }
  }
  return std::nullopt;
}

std::span<const float> TechniqueOps::collective_input(std::uint32_t op) const {
  const std::int32_t e = impl_->collective_of.at(op);
  if (e < 0) return {};
  const Exchange& x = impl_->exchanges[static_cast<std::size_t>(e)];
  return x.quantised_reduction() ? std::span<const float>(x.contribution) : std::span<const float>(x.payload);
}

std::optional<TechniqueOps::QuantisedReduction> TechniqueOps::quantised_reduction(std::uint32_t op) const {
  const std::int32_t e = impl_->collective_of.at(op);
  if (e < 0) return std::nullopt;
  const Exchange& x = impl_->exchanges[static_cast<std::size_t>(e)];
  if (!x.quantised_reduction()) return std::nullopt;
  return QuantisedReduction{static_cast<std::int64_t>(x.n), x.spec()};
}

std::span<float> TechniqueOps::collective_output(std::uint32_t op) {
  const std::int32_t e = impl_->collective_of.at(op);
  if (e < 0) return {};
  return impl_->exchanges[static_cast<std::size_t>(e)].output;
}

void TechniqueOps::next_iteration() { ++impl_->iteration; }

void TechniqueOps::verify_pending() {
  for (Exchange& e : impl_->exchanges)
    if (e.arrived && !e.verified) impl_->verify(e);
}

const PayloadCheck& TechniqueOps::checks() const { return impl_->check; }

}  // namespace twinbed::real::detail
