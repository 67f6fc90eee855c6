// The GPT's forward and backward passes over row-major fp32 buffers, every matrix product through
// Eigen (or the LoRA kernel for adapted matrices). Rows are the batch·seq_len token positions, so each
// linear layer is one GEMM over the whole batch; attention is one T×T product per (sequence, head).
//
// Choices and their sources:
// - Pre-LN blocks, final LayerNorm, tied input/output embedding, GELU with the tanh approximation
//   (Radford et al. 2019, GPT-2; Hendrycks & Gimpel 2016 for GELU; nanoGPT model.py).
// - No biases in the linear layers (nanoGPT's bias=False; PaLM, Chowdhery et al. 2022 §2): fewer tensors,
//   and the LoRA kernel computes y = x·Wᵀ without one.
// - LayerNorm eps 1e-5 (PyTorch's default, used by GPT-2/nanoGPT).
// - Init N(0, 0.02²), residual projections scaled by 1/sqrt(2·layers) (GPT-2 §2.3; nanoGPT _init_weights).
// - Mixed precision emulated as in gpt.hpp; fp32 residual stream as Megatron-LM's
//   --fp32-residual-connection; softmax in fp32 as Megatron's fused softmax (which upcasts).
#include "twinbed/train/gpt.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <numbers>
#include <string>
#include <utility>

#include "twinbed/core/error.hpp"
#include "twinbed/kernels/lora.hpp"
#include "twinbed/train/numerics.hpp"

namespace twinbed::train {
namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MMap = Eigen::Map<RowMat>;
using CMap = Eigen::Map<const RowMat>;
using SMap = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;         // a column block of a wider matrix
using CSMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using AMap = Eigen::Map<Eigen::ArrayXf>;
using CAMap = Eigen::Map<const Eigen::ArrayXf>;

Eigen::Index ix(std::size_t v) { return static_cast<Eigen::Index>(v); }
std::string str(std::size_t v) { return std::to_string(v); }

constexpr float kLnEps = 1e-5f;
constexpr float kInitStd = 0.02f;
// GELU, tanh form (Hendrycks & Gimpel 2016, as GPT-2): 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))).
constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2/π)
constexpr float kGeluA = 0.044715f;

// ---- deterministic normal draws ---------------------------------------------------------------------

// splitmix64 (Steele, Lea & Flood, OOPSLA 2014; constants of Vigna's reference implementation) feeding
// Box–Muller in double, rounded to float. Only integer arithmetic, sqrt (correctly rounded by IEEE 754)
// and libm's log/cos/sin are involved; those are within an ulp of double everywhere, and the float
// result changes only if that ulp straddles a float rounding boundary (about 2^-29 per draw).
class NormalStream {
 public:
  explicit NormalStream(std::uint64_t seed) : state_(seed) {}

  float next(float stddev) {
    if (has_spare_) {
      has_spare_ = false;
      return static_cast<float>(spare_ * stddev);
    }
    const double u1 = static_cast<double>((next_u64() >> 11) + 1) * 0x1p-53;  // (0, 1]: log is finite
    const double u2 = static_cast<double>(next_u64() >> 11) * 0x1p-53;        // [0, 1)
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double theta = 2.0 * std::numbers::pi * u2;
    spare_ = r * std::sin(theta);
    has_spare_ = true;
    return static_cast<float>(r * std::cos(theta) * stddev);
  }

 private:
  std::uint64_t next_u64() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  std::uint64_t state_;
  bool has_spare_ = false;
  double spare_ = 0;
};

// ---- tensor layout ------------------------------------------------------------------------------------

// Index of each tensor in weights(): wte, wpe, then 8 per layer, then lnf.g, lnf.b.
constexpr std::size_t kWte = 0, kWpe = 1, kPerLayer = 8;
enum LayerTensor : std::size_t { kLn1G, kLn1B, kQkv, kProj, kLn2G, kLn2B, kFc1, kFc2 };
std::size_t layer_tensor(int l, LayerTensor t) { return 2 + kPerLayer * static_cast<std::size_t>(l) + t; }
std::size_t lnf_g(int layers) { return 2 + kPerLayer * static_cast<std::size_t>(layers); }

// The four linear layers LoRA may adapt, in adapter order.
constexpr std::array<ParamKind, 4> kTargets{ParamKind::Qkv, ParamKind::Proj, ParamKind::Fc1, ParamKind::Fc2};
constexpr std::array<LayerTensor, 4> kTargetTensor{kQkv, kProj, kFc1, kFc2};
int target_index(ParamKind k) {
  for (std::size_t i = 0; i < kTargets.size(); ++i)
    if (kTargets[i] == k) return static_cast<int>(i);
  return -1;
}

void check_positive(const char* field, int v) {
  if (v < 1) throw InvalidArgument(std::string("GptShape: ") + field + " must be >= 1 (got " + std::to_string(v) + ")");
}

void validate(const GptShape& s) {
  check_positive("layers", s.layers);
  check_positive("hidden", s.hidden);
  check_positive("heads", s.heads);
  check_positive("seq_len", s.seq_len);
  check_positive("vocab", s.vocab);
  if (s.hidden % s.heads != 0)
    throw InvalidArgument("GptShape: hidden (" + std::to_string(s.hidden) + ") must be a multiple of heads (" +
                          std::to_string(s.heads) + ")");
}

// A Precision checked against the shape; nullptr becomes all-FP32 with loss scale 1.
struct Resolved {
  std::vector<DType> layer;
  DType outer = DType::FP32;
  float loss_scale = 1;
};

Resolved resolve(const GptShape& s, const Precision* p, const char* who) {
  Resolved r{std::vector<DType>(static_cast<std::size_t>(s.layers), DType::FP32), DType::FP32, 1.0f};
  if (p == nullptr) return r;
  if (p->layer.size() != r.layer.size())
    throw InvalidArgument(std::string(who) + ": precision.layer has " + str(p->layer.size()) +
                          " entries but the model has " + str(r.layer.size()) + " layers");
  for (const DType t : p->layer)
    if (t == DType::FP8) throw InvalidArgument(std::string(who) + ": fp8 storage is not emulated (precision.layer)");
  if (p->outer == DType::FP8) throw InvalidArgument(std::string(who) + ": fp8 storage is not emulated (precision.outer)");
  if (!(std::isfinite(p->loss_scale) && p->loss_scale > 0))
    throw InvalidArgument(std::string(who) + ": precision.loss_scale must be finite and > 0 (got " +
                          std::to_string(p->loss_scale) + ")");
  r.layer = p->layer;
  r.outer = p->outer;
  r.loss_scale = p->loss_scale;
  return r;
}

void round_buf(DType t, std::vector<float>& v) { round_in_place(t, v); }

}  // namespace

// ---- scratch -------------------------------------------------------------------------------------------

struct Gpt::Workspace {
  // What one layer's forward saves for its backward (rows = batch·seq_len).
  struct LayerActs {
    std::vector<float> xhat1, rstd1, h1;  // LN1: normalised input, 1/σ per row, output (rows × hidden)
    std::vector<float> qkv;               // rows × 3·hidden
    std::vector<float> p;                 // softmax probabilities, batch·heads × T × T (zero above the diagonal)
    std::vector<float> att;               // attention output, heads concatenated: rows × hidden
    std::vector<float> xhat2, rstd2, h2;  // LN2
    std::vector<float> f, u;              // fc1 output before / after GELU: rows × 4·hidden
    std::array<std::vector<float>, 4> lora_h;  // per target: x·Aᵀ, rows × rank (LoRA only)
  };
  std::vector<LayerActs> acts;
  std::vector<float> x;                    // residual stream, rows × hidden
  std::vector<float> xhatf, rstdf, hf;     // final LN
  std::vector<float> logits;               // rows × vocab: logits, then probabilities, then d logits
  // Backward scratch.
  std::vector<float> dx;                   // residual gradient, rows × hidden (fp32)
  std::vector<float> dy, dh, datt;         // rows × hidden
  std::vector<float> dqkv;                 // rows × 3·hidden
  std::vector<float> dwide, twide;         // rows × 4·hidden
  std::vector<float> dp;                   // T × T
  // Weights as this call reads them: the fp32 masters or a rounded working copy.
  std::vector<float> wround, around;
  std::vector<const float*> w, a;

  void ensure(const GptShape& s, std::size_t batch, int lora_rank, const std::vector<int>& slot) {
    const auto H = static_cast<std::size_t>(s.hidden), T = static_cast<std::size_t>(s.seq_len);
    const std::size_t N = batch * T;
    acts.resize(static_cast<std::size_t>(s.layers));
    for (std::size_t l = 0; l < acts.size(); ++l) {
      auto& a_ = acts[l];
      for (auto* v : {&a_.xhat1, &a_.h1, &a_.att, &a_.xhat2, &a_.h2}) v->resize(N * H);
      a_.rstd1.resize(N);
      a_.rstd2.resize(N);
      a_.qkv.resize(N * 3 * H);
      a_.p.resize(batch * static_cast<std::size_t>(s.heads) * T * T);
      a_.f.resize(N * 4 * H);
      a_.u.resize(N * 4 * H);
      for (std::size_t t = 0; t < 4; ++t)
        a_.lora_h[t].resize(slot.empty() || slot[l * 4 + t] < 0 ? 0 : N * static_cast<std::size_t>(lora_rank));
    }
    for (auto* v : {&x, &xhatf, &hf, &dx, &dy, &dh, &datt}) v->resize(N * H);
    rstdf.resize(N);
    logits.resize(N * static_cast<std::size_t>(s.vocab));
    dqkv.resize(N * 3 * H);
    dwide.resize(N * 4 * H);
    twide.resize(N * 4 * H);
    dp.resize(T * T);
  }
};

namespace {

// One forward (and optionally backward) pass over a batch. Borrows everything; lives for one call.
class Pass {
 public:
  Pass(const GptShape& s, std::size_t batch, const std::vector<Weight>& weights, const std::vector<Weight>& adapters,
       const std::vector<int>& slot, const LoraSetup* lora, const Resolved& prec, Gpt::Workspace& ws)
      : s_(s), weights_(weights), adapters_(adapters), slot_(slot), lora_(lora), prec_(prec), ws_(ws),
        B_(batch), T_(static_cast<std::size_t>(s.seq_len)), H_(static_cast<std::size_t>(s.hidden)),
        NH_(static_cast<std::size_t>(s.heads)), HD_(H_ / NH_), V_(static_cast<std::size_t>(s.vocab)), N_(B_ * T_) {}

  // Points ws.w / ws.a at the weights as this pass reads them: the fp32 masters, or a copy rounded to
  // the tensor's storage type.
  void prepare_weights(std::span<const float> params, std::span<const float> adapter_params) {
    ws_.w.resize(weights_.size());
    ws_.wround.resize(params.size());
    for (std::size_t i = 0; i < weights_.size(); ++i) ws_.w[i] = view(weights_[i], params, ws_.wround);
    ws_.a.resize(adapters_.size());
    ws_.around.resize(adapter_params.size());
    for (std::size_t i = 0; i < adapters_.size(); ++i) ws_.a[i] = view(adapters_[i], adapter_params, ws_.around);
  }

  // Forward to the mean cross-entropy; leaves the softmax probabilities in ws.logits.
  double forward(std::span<const std::uint8_t> tokens) {
    // x = wte[token] + wpe[position]
    const float* wte = ws_.w[kWte];
    const float* wpe = ws_.w[kWpe];
    for (std::size_t b = 0; b < B_; ++b)
      for (std::size_t t = 0; t < T_; ++t) {
        const std::size_t tok = tokens[b * (T_ + 1) + t];
        AMap(ws_.x.data() + (b * T_ + t) * H_, ix(H_)) = CAMap(wte + tok * H_, ix(H_)) + CAMap(wpe + t * H_, ix(H_));
      }
    for (int l = 0; l < s_.layers; ++l) layer_forward(l);
    // Final LN, tied head, cross-entropy.
    const auto L = s_.layers;
    layer_norm(ws_.x.data(), ws_.w[lnf_g(L)], ws_.w[lnf_g(L) + 1], ws_.xhatf.data(), ws_.rstdf.data(), ws_.hf.data());
    round_buf(prec_.outer, ws_.hf);
    MMap(ws_.logits.data(), ix(N_), ix(V_)).noalias() = CMap(ws_.hf.data(), ix(N_), ix(H_)) * CMap(wte, ix(V_), ix(H_)).transpose();
    round_buf(prec_.outer, ws_.logits);
    double sum = 0;
    for (std::size_t n = 0; n < N_; ++n) {
      float* row = ws_.logits.data() + n * V_;
      const float target_logit = row[target(tokens, n)];
      AMap r(row, ix(V_));
      Eigen::Index top = 0;  // the first largest logit: the prediction
      const float m = r.maxCoeff(&top);
      correct_ += static_cast<std::size_t>(top) == target(tokens, n);
      r = (r - m).exp();
      const float z = r.sum();
      r /= z;
      sum += static_cast<double>(std::log(z) + m - target_logit);  // −log softmax[target], stable form
    }
    return sum / static_cast<double>(N_);
  }

  // Backward after forward(). grads / agrads are empty when not computed. Returns false when a
  // non-finite value appeared.
  bool backward(std::span<const std::uint8_t> tokens, std::span<float> grads, std::span<float> agrads) {
    const int L = s_.layers;
    const bool base = !grads.empty();
    grads_ = grads;
    agrads_ = agrads;
    // d logits = (softmax − onehot)·loss_scale/N, in place over the probabilities.
    const float factor = prec_.loss_scale / static_cast<float>(N_);
    for (std::size_t n = 0; n < N_; ++n) {
      float* row = ws_.logits.data() + n * V_;
      AMap(row, ix(V_)) *= factor;
      row[target(tokens, n)] -= factor;
    }
    round_buf(prec_.outer, ws_.logits);
    const CMap dlogits(ws_.logits.data(), ix(N_), ix(V_));
    const float* wte = ws_.w[kWte];
    // Head: dhf = dlogits·wte, dwte = dlogitsᵀ·hf (the embedding rows are added below).
    MMap(ws_.dh.data(), ix(N_), ix(H_)).noalias() = dlogits * CMap(wte, ix(V_), ix(H_));
    round_buf(prec_.outer, ws_.dh);
    if (base) MMap(grad(kWte), ix(V_), ix(H_)).noalias() = dlogits.transpose() * CMap(ws_.hf.data(), ix(N_), ix(H_));
    std::fill(ws_.dx.begin(), ws_.dx.end(), 0.0f);
    layer_norm_backward(ws_.dh.data(), ws_.xhatf.data(), ws_.rstdf.data(), ws_.w[lnf_g(L)], ws_.dx.data(),
                        grad(lnf_g(L)), grad(lnf_g(L) + 1));
    for (int l = L - 1; l >= 0; --l) layer_backward(l);
    // Embedding: both tables get the residual gradient of the rows that read them.
    if (base) {
      float* dwte = grad(kWte);
      float* dwpe = grad(kWpe);
      std::fill(dwpe, dwpe + T_ * H_, 0.0f);
      for (std::size_t b = 0; b < B_; ++b)
        for (std::size_t t = 0; t < T_; ++t) {
          const CAMap d(ws_.dx.data() + (b * T_ + t) * H_, ix(H_));
          AMap(dwte + std::size_t{tokens[b * (T_ + 1) + t]} * H_, ix(H_)) += d;
          AMap(dwpe + t * H_, ix(H_)) += d;
        }
    }
    // Weight gradients are stored in their tensor's type.
    if (base)
      for (const Weight& w : weights_) round_in_place(dtype(w.layer), grads.subspan(w.offset, w.size()));
    for (const Weight& w : adapters_) round_in_place(dtype(w.layer), agrads.subspan(w.offset, w.size()));
    return all_finite(ws_.dx) && all_finite(grads) && all_finite(agrads);
  }

  // Positions of the last forward() whose largest logit (the first, on ties) was the target.
  std::size_t correct() const { return correct_; }

 private:
  DType dtype(int layer) const { return layer < 0 ? prec_.outer : prec_.layer[static_cast<std::size_t>(layer)]; }

  const float* view(const Weight& w, std::span<const float> masters, std::vector<float>& copy) const {
    const DType t = dtype(w.layer);
    if (t == DType::FP32) return masters.data() + w.offset;
    std::copy_n(masters.data() + w.offset, w.size(), copy.data() + w.offset);
    round_in_place(t, std::span<float>(copy.data() + w.offset, w.size()));
    return copy.data() + w.offset;
  }

  std::size_t target(std::span<const std::uint8_t> tokens, std::size_t n) const {
    return tokens[(n / T_) * (T_ + 1) + n % T_ + 1];
  }

  float* grad(std::size_t weight) const { return grads_.empty() ? nullptr : grads_.data() + weights_[weight].offset; }

  // ---- building blocks ----

  // y = LN(x)·γ + β per row; saves x̂ and 1/σ (biased variance, as PyTorch).
  void layer_norm(const float* x, const float* g, const float* beta, float* xhat, float* rstd, float* y) const {
    const CAMap G(g, ix(H_)), Bt(beta, ix(H_));
    for (std::size_t r = 0; r < N_; ++r) {
      const CAMap xr(x + r * H_, ix(H_));
      AMap xh(xhat + r * H_, ix(H_));
      const float mean = xr.mean();
      xh = xr - mean;
      const float rs = 1.0f / std::sqrt(xh.square().mean() + kLnEps);
      xh *= rs;
      rstd[r] = rs;
      AMap(y + r * H_, ix(H_)) = xh * G + Bt;
    }
  }

  // dx += (1/σ)·(ĝ − mean(ĝ) − x̂·mean(ĝ⊙x̂)) with ĝ = dy⊙γ; dγ = Σ dy⊙x̂, dβ = Σ dy (null: not computed).
  void layer_norm_backward(const float* dy, const float* xhat, const float* rstd, const float* g, float* dx, float* dg,
                           float* dbeta) const {
    const CAMap G(g, ix(H_));
    if (dg != nullptr) {
      AMap(dg, ix(H_)).setZero();
      AMap(dbeta, ix(H_)).setZero();
    }
    for (std::size_t r = 0; r < N_; ++r) {
      const CAMap dyr(dy + r * H_, ix(H_)), xh(xhat + r * H_, ix(H_));
      const float m1 = (dyr * G).mean();
      const float m2 = (dyr * G * xh).mean();
      AMap(dx + r * H_, ix(H_)) += rstd[r] * (dyr * G - m1 - xh * m2);
      if (dg != nullptr) {
        AMap(dg, ix(H_)) += dyr * xh;
        AMap(dbeta, ix(H_)) += dyr;
      }
    }
  }

  // Adapter A of (layer, target t), or -1.
  int slot(int l, std::size_t t) const { return slot_.empty() ? -1 : slot_[static_cast<std::size_t>(l) * 4 + t]; }

  kernels::LoraShape lora_shape(std::size_t in, std::size_t out) const {
    return {N_, in, out, static_cast<std::size_t>(lora_->rank), lora_->alpha};
  }

  // y = x·Wᵀ (+ s·(x·Aᵀ)·Bᵀ when adapted) for linear layer t of layer l.
  void linear(int l, std::size_t t, const float* x, std::size_t in, std::size_t out, float* y) {
    const float* W = ws_.w[layer_tensor(l, kTargetTensor[t])];
    if (const int a = slot(l, t); a >= 0) {
      const auto sa = static_cast<std::size_t>(a);
      const auto sh = lora_shape(in, out);
      auto& h = ws_.acts[static_cast<std::size_t>(l)].lora_h[t];
      kernels::cpu::lora_forward(sh, {x, N_ * in}, {W, out * in}, {ws_.a[sa], adapters_[sa].size()},
                                 {ws_.a[sa + 1], adapters_[sa + 1].size()}, h, {y, N_ * out});
      return;
    }
    MMap(y, ix(N_), ix(out)).noalias() = CMap(x, ix(N_), ix(in)) * CMap(W, ix(out), ix(in)).transpose();
  }

  // dx = dy·W (+ adapter term); dW = dyᵀ·x when the base trains, else dA, dB through the LoRA kernel.
  void linear_backward(int l, std::size_t t, const float* x, std::size_t in, std::size_t out, const float* dy, float* dx) {
    const std::size_t wi = layer_tensor(l, kTargetTensor[t]);
    const float* W = ws_.w[wi];
    if (const int a = slot(l, t); a >= 0) {
      const auto sa = static_cast<std::size_t>(a);
      const auto sh = lora_shape(in, out);
      const auto& h = ws_.acts[static_cast<std::size_t>(l)].lora_h[t];
      kernels::cpu::lora_backward(sh, {x, N_ * in}, {W, out * in}, {ws_.a[sa], adapters_[sa].size()},
                                  {ws_.a[sa + 1], adapters_[sa + 1].size()}, h, {dy, N_ * out},
                                  agrads_.subspan(adapters_[sa].offset, adapters_[sa].size()),
                                  agrads_.subspan(adapters_[sa + 1].offset, adapters_[sa + 1].size()), {dx, N_ * in});
      return;
    }
    const CMap dY(dy, ix(N_), ix(out));
    MMap(dx, ix(N_), ix(in)).noalias() = dY * CMap(W, ix(out), ix(in));
    if (float* dW = grad(wi); dW != nullptr)
      MMap(dW, ix(out), ix(in)).noalias() = dY.transpose() * CMap(x, ix(N_), ix(in));
  }

  // Causal self-attention per (sequence, head): P = softmax(mask(Q·Kᵀ/sqrt(d))), Y = P·V.
  void attention(const float* qkv, float* p, float* att) const {
    const float scale = 1.0f / std::sqrt(static_cast<float>(HD_));
    const auto s3 = Eigen::OuterStride<>(ix(3 * H_)), s1 = Eigen::OuterStride<>(ix(H_));
    for (std::size_t b = 0; b < B_; ++b)
      for (std::size_t h = 0; h < NH_; ++h) {
        const float* base = qkv + b * T_ * 3 * H_ + h * HD_;
        const CSMap Q(base, ix(T_), ix(HD_), s3), K(base + H_, ix(T_), ix(HD_), s3), V(base + 2 * H_, ix(T_), ix(HD_), s3);
        float* pb = p + (b * NH_ + h) * T_ * T_;
        MMap P(pb, ix(T_), ix(T_));
        P.noalias() = scale * (Q * K.transpose());
        // Row i attends to positions 0..i; the rest is set to probability 0.
        for (std::size_t i = 0; i < T_; ++i) {
          AMap row(pb + i * T_, ix(i + 1));
          const float m = row.maxCoeff();
          row = (row - m).exp();
          row /= row.sum();
          std::fill(pb + i * T_ + i + 1, pb + (i + 1) * T_, 0.0f);
        }
        SMap(att + b * T_ * H_ + h * HD_, ix(T_), ix(HD_), s1).noalias() = P * V;
      }
  }

  // dV = Pᵀ·dY; dS = P⊙(dP − rowsum(P⊙dP))·scale with dP = dY·Vᵀ; dQ = dS·K; dK = dSᵀ·Q.
  void attention_backward(const float* qkv, const float* p, const float* datt, float* dqkv) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(HD_));
    const auto s3 = Eigen::OuterStride<>(ix(3 * H_)), s1 = Eigen::OuterStride<>(ix(H_));
    for (std::size_t b = 0; b < B_; ++b)
      for (std::size_t h = 0; h < NH_; ++h) {
        const std::size_t off = b * T_ * 3 * H_ + h * HD_;
        const CSMap Q(qkv + off, ix(T_), ix(HD_), s3), K(qkv + off + H_, ix(T_), ix(HD_), s3),
            V(qkv + off + 2 * H_, ix(T_), ix(HD_), s3);
        SMap dQ(dqkv + off, ix(T_), ix(HD_), s3), dK(dqkv + off + H_, ix(T_), ix(HD_), s3),
            dV(dqkv + off + 2 * H_, ix(T_), ix(HD_), s3);
        const float* pb = p + (b * NH_ + h) * T_ * T_;
        const CMap P(pb, ix(T_), ix(T_));
        const CSMap dY(datt + b * T_ * H_ + h * HD_, ix(T_), ix(HD_), s1);
        MMap dS(ws_.dp.data(), ix(T_), ix(T_));
        dS.noalias() = dY * V.transpose();
        dV.noalias() = P.transpose() * dY;
        for (std::size_t i = 0; i < T_; ++i) {
          const CAMap pr(pb + i * T_, ix(i + 1));
          AMap dr(ws_.dp.data() + i * T_, ix(i + 1));
          const float dot = (pr * dr).sum();
          dr = pr * (dr - dot) * scale;
          std::fill(ws_.dp.data() + i * T_ + i + 1, ws_.dp.data() + (i + 1) * T_, 0.0f);
        }
        dQ.noalias() = dS * K;
        dK.noalias() = dS.transpose() * Q;
      }
  }

  // ---- one layer ----

  void layer_forward(int l) {
    auto& A = ws_.acts[static_cast<std::size_t>(l)];
    const DType dt = dtype(l);
    const std::size_t H = H_, H3 = 3 * H_, H4 = 4 * H_;
    // h = LN1(x); qkv = h·W_qkvᵀ; attention; x += a·W_projᵀ
    layer_norm(ws_.x.data(), ws_.w[layer_tensor(l, kLn1G)], ws_.w[layer_tensor(l, kLn1B)], A.xhat1.data(),
               A.rstd1.data(), A.h1.data());
    round_buf(dt, A.h1);
    linear(l, 0, A.h1.data(), H, H3, A.qkv.data());
    round_buf(dt, A.qkv);
    attention(A.qkv.data(), A.p.data(), A.att.data());
    round_buf(dt, A.att);
    linear(l, 1, A.att.data(), H, H, ws_.dy.data());
    round_buf(dt, ws_.dy);
    AMap(ws_.x.data(), ix(N_ * H)) += CAMap(ws_.dy.data(), ix(N_ * H));
    // h2 = LN2(x); u = GELU(h2·W_fc1ᵀ); x += u·W_fc2ᵀ
    layer_norm(ws_.x.data(), ws_.w[layer_tensor(l, kLn2G)], ws_.w[layer_tensor(l, kLn2B)], A.xhat2.data(),
               A.rstd2.data(), A.h2.data());
    round_buf(dt, A.h2);
    linear(l, 2, A.h2.data(), H, H4, A.f.data());
    round_buf(dt, A.f);
    const CAMap F(A.f.data(), ix(N_ * H4));
    AMap(A.u.data(), ix(N_ * H4)) = 0.5f * F * (1.0f + (kGeluC * (F + kGeluA * F.cube())).tanh());
    round_buf(dt, A.u);
    linear(l, 3, A.u.data(), H4, H, ws_.dy.data());
    round_buf(dt, ws_.dy);
    AMap(ws_.x.data(), ix(N_ * H)) += CAMap(ws_.dy.data(), ix(N_ * H));
  }

  void layer_backward(int l) {
    auto& A = ws_.acts[static_cast<std::size_t>(l)];
    const DType dt = dtype(l);
    const std::size_t H = H_, H3 = 3 * H_, H4 = 4 * H_;
    // MLP: d(fc2 out) = dx; du = dy·W_fc2; df = du⊙GELU'(f); dh2 = df·W_fc1; dx += LN2ᵀ(dh2)
    ws_.dy = ws_.dx;
    round_buf(dt, ws_.dy);
    linear_backward(l, 3, A.u.data(), H4, H, ws_.dy.data(), ws_.dwide.data());
    round_buf(dt, ws_.dwide);
    const CAMap F(A.f.data(), ix(N_ * H4));
    AMap Tn(ws_.twide.data(), ix(N_ * H4));
    Tn = (kGeluC * (F + kGeluA * F.cube())).tanh();
    AMap(ws_.dwide.data(), ix(N_ * H4)) *=
        0.5f * (1.0f + Tn) + 0.5f * F * (1.0f - Tn.square()) * kGeluC * (1.0f + 3.0f * kGeluA * F.square());
    round_buf(dt, ws_.dwide);
    linear_backward(l, 2, A.h2.data(), H, H4, ws_.dwide.data(), ws_.dh.data());
    round_buf(dt, ws_.dh);
    layer_norm_backward(ws_.dh.data(), A.xhat2.data(), A.rstd2.data(), ws_.w[layer_tensor(l, kLn2G)], ws_.dx.data(),
                        grad(layer_tensor(l, kLn2G)), grad(layer_tensor(l, kLn2B)));
    // Attention: d(proj out) = dx; datt = dy·W_proj; dqkv; dh1 = dqkv·W_qkv; dx += LN1ᵀ(dh1)
    ws_.dy = ws_.dx;
    round_buf(dt, ws_.dy);
    linear_backward(l, 1, A.att.data(), H, H, ws_.dy.data(), ws_.datt.data());
    round_buf(dt, ws_.datt);
    attention_backward(A.qkv.data(), A.p.data(), ws_.datt.data(), ws_.dqkv.data());
    round_buf(dt, ws_.dqkv);
    linear_backward(l, 0, A.h1.data(), H, H3, ws_.dqkv.data(), ws_.dh.data());
    round_buf(dt, ws_.dh);
    layer_norm_backward(ws_.dh.data(), A.xhat1.data(), A.rstd1.data(), ws_.w[layer_tensor(l, kLn1G)], ws_.dx.data(),
                        grad(layer_tensor(l, kLn1G)), grad(layer_tensor(l, kLn1B)));
  }

  const GptShape& s_;
  const std::vector<Weight>& weights_;
  const std::vector<Weight>& adapters_;
  const std::vector<int>& slot_;
  const LoraSetup* lora_;
  const Resolved& prec_;
  Gpt::Workspace& ws_;
  std::span<float> grads_, agrads_;
  std::size_t correct_ = 0;
  std::size_t B_, T_, H_, NH_, HD_, V_, N_;
};

void check_tokens(const GptShape& s, std::span<const std::uint8_t> tokens, std::size_t batch, const char* who) {
  if (batch == 0) throw InvalidArgument(std::string(who) + ": batch must be >= 1");
  const std::size_t want = batch * (static_cast<std::size_t>(s.seq_len) + 1);
  if (tokens.size() != want)
    throw InvalidArgument(std::string(who) + ": tokens has " + str(tokens.size()) + " elements, expected " + str(want) +
                          " (batch " + str(batch) + " × (seq_len " + std::to_string(s.seq_len) + " + 1))");
  for (std::size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] >= s.vocab)
      throw InvalidArgument(std::string(who) + ": token " + std::to_string(tokens[i]) + " at index " + str(i) +
                            " is outside the vocabulary of " + std::to_string(s.vocab));
}

}  // namespace

// ---- Gpt -----------------------------------------------------------------------------------------------

std::vector<Weight> gpt_weights(const GptShape& shape) {
  validate(shape);
  const auto H = static_cast<std::size_t>(shape.hidden);
  std::vector<Weight> weights;
  std::size_t offset = 0;
  auto add = [&](std::string name, ParamKind kind, int layer, std::size_t rows, std::size_t cols) {
    weights.push_back({std::move(name), kind, layer, rows, cols, offset});
    offset += rows * cols;
  };
  add("wte", ParamKind::Embedding, -1, static_cast<std::size_t>(shape.vocab), H);
  add("wpe", ParamKind::Embedding, -1, static_cast<std::size_t>(shape.seq_len), H);
  for (int l = 0; l < shape.layers; ++l) {
    const std::string p = "l" + std::to_string(l) + ".";
    add(p + "ln1.g", ParamKind::Norms, l, 1, H);
    add(p + "ln1.b", ParamKind::Norms, l, 1, H);
    add(p + "qkv", ParamKind::Qkv, l, 3 * H, H);
    add(p + "proj", ParamKind::Proj, l, H, H);
    add(p + "ln2.g", ParamKind::Norms, l, 1, H);
    add(p + "ln2.b", ParamKind::Norms, l, 1, H);
    add(p + "fc1", ParamKind::Fc1, l, 4 * H, H);
    add(p + "fc2", ParamKind::Fc2, l, H, 4 * H);
  }
  add("lnf.g", ParamKind::FinalNorm, -1, 1, H);
  add("lnf.b", ParamKind::FinalNorm, -1, 1, H);
  return weights;
}

Gpt::Gpt(GptShape shape, std::uint64_t seed) : shape_(shape), weights_(gpt_weights(shape)) {
  const std::size_t offset = weights_.back().offset + weights_.back().size();
  params_.assign(offset, 0.0f);

  // One stream over the tensors in order. LN γ = 1, β = 0 (they draw nothing).
  NormalStream rng(seed);
  const float residual_std = kInitStd / std::sqrt(2.0f * static_cast<float>(shape_.layers));
  for (const Weight& w : weights_) {
    float* p = params_.data() + w.offset;
    const bool is_gain = w.name.ends_with(".g");
    if (w.kind == ParamKind::Norms || w.kind == ParamKind::FinalNorm) {
      std::fill(p, p + w.size(), is_gain ? 1.0f : 0.0f);
      continue;
    }
    const float stddev = (w.kind == ParamKind::Proj || w.kind == ParamKind::Fc2) ? residual_std : kInitStd;
    for (std::size_t i = 0; i < w.size(); ++i) p[i] = rng.next(stddev);
  }
}

Gpt::~Gpt() = default;
Gpt::Gpt(Gpt&&) noexcept = default;
Gpt& Gpt::operator=(Gpt&&) noexcept = default;
Gpt::Gpt(const Gpt& other)
    : shape_(other.shape_), weights_(other.weights_), params_(other.params_), lora_(other.lora_),
      adapters_(other.adapters_), adapter_params_(other.adapter_params_) {}
Gpt& Gpt::operator=(const Gpt& other) {
  if (this != &other) *this = Gpt(other);
  return *this;
}

Gpt::Workspace& Gpt::workspace() const {
  if (!ws_) ws_ = std::make_unique<Workspace>();
  return *ws_;
}

const Weight& Gpt::find(const std::string& name) const {
  for (const auto* list : {&weights_, &adapters_})
    for (const Weight& w : *list)
      if (w.name == name) return w;
  throw InvalidArgument("Gpt::find: no tensor named '" + name + "'");
}

void Gpt::enable_lora(const LoraSetup& setup, std::uint64_t seed) {
  if (setup.rank < 1) throw InvalidArgument("Gpt::enable_lora: rank must be >= 1 (got " + std::to_string(setup.rank) + ")");
  if (!(std::isfinite(setup.alpha) && setup.alpha > 0))
    throw InvalidArgument("Gpt::enable_lora: alpha must be finite and > 0 (got " + std::to_string(setup.alpha) + ")");
  if (setup.targets.empty()) throw InvalidArgument("Gpt::enable_lora: no target (choose among qkv, proj, fc1, fc2)");
  std::array<bool, 4> on{};
  for (const ParamKind k : setup.targets) {
    const int t = target_index(k);
    if (t < 0)
      throw InvalidArgument("Gpt::enable_lora: target '" + to_string(k) +
                            "' is not an adaptable linear layer (choose among qkv, proj, fc1, fc2)");
    if (on[static_cast<std::size_t>(t)]) throw InvalidArgument("Gpt::enable_lora: target '" + to_string(k) + "' listed twice");
    on[static_cast<std::size_t>(t)] = true;
  }
  const auto rank = static_cast<std::size_t>(setup.rank);
  std::vector<Weight> adapters;
  std::vector<int> slot(static_cast<std::size_t>(shape_.layers) * 4, -1);
  std::size_t offset = 0;
  for (int l = 0; l < shape_.layers; ++l)
    for (std::size_t t = 0; t < 4; ++t) {
      if (!on[t]) continue;
      const Weight& w = weights_[layer_tensor(l, kTargetTensor[t])];  // out × in
      slot[static_cast<std::size_t>(l) * 4 + t] = static_cast<int>(adapters.size());
      adapters.push_back({w.name + ".lora_a", ParamKind::LoraA, l, rank, w.cols, offset});
      offset += rank * w.cols;
      adapters.push_back({w.name + ".lora_b", ParamKind::LoraB, l, w.rows, rank, offset});
      offset += w.rows * rank;
    }
  std::vector<float> values(offset, 0.0f);
  NormalStream rng(seed);
  for (const Weight& a : adapters)
    if (a.kind == ParamKind::LoraA)
      for (std::size_t i = 0; i < a.size(); ++i) values[a.offset + i] = rng.next(kInitStd);
  adapters_ = std::move(adapters);
  adapter_params_ = std::move(values);
  lora_ = {true, setup, std::move(slot)};
}

double Gpt::loss(std::span<const std::uint8_t> tokens, std::size_t batch, const Precision* precision) const {
  return evaluate(tokens, batch, precision).loss;
}

template <class Body>
auto Gpt::with_pass(std::span<const std::uint8_t> tokens, std::size_t batch, const Precision* precision, const char* who,
                    Body&& body) const {
  check_tokens(shape_, tokens, batch, who);
  const Resolved prec = resolve(shape_, precision, who);
  Workspace& ws = workspace();
  ws.ensure(shape_, batch, lora_.setup.rank, lora_.slot);
  Pass pass(shape_, batch, weights_, adapters_, lora_.slot, lora_.has_value ? &lora_.setup : nullptr, prec, ws);
  pass.prepare_weights(params_, adapter_params_);
  return body(pass);
}

Evaluation Gpt::evaluate(std::span<const std::uint8_t> tokens, std::size_t batch, const Precision* precision) const {
  return with_pass(tokens, batch, precision, "Gpt::evaluate", [&](auto& pass) {
    Evaluation e;
    e.loss = pass.forward(tokens);
    e.correct = pass.correct();
    e.predictions = batch * static_cast<std::size_t>(shape_.seq_len);
    return e;
  });
}

StepResult Gpt::forward_backward(std::span<const std::uint8_t> tokens, std::size_t batch, std::span<float> grads,
                                 std::span<float> adapter_grads, const Precision* precision) {
  static constexpr const char* who = "Gpt::forward_backward";
  const std::size_t want_grads = lora_.has_value ? 0 : params_.size();
  const std::size_t want_adapter = lora_.has_value ? adapter_params_.size() : 0;
  const char* why = lora_.has_value ? " (LoRA on: the base is frozen)" : " (LoRA off)";
  if (grads.size() != want_grads)
    throw InvalidArgument(std::string(who) + ": grads has " + str(grads.size()) + " elements, expected " + str(want_grads) + why);
  if (adapter_grads.size() != want_adapter)
    throw InvalidArgument(std::string(who) + ": adapter_grads has " + str(adapter_grads.size()) + " elements, expected " +
                          str(want_adapter) + why);
  return with_pass(tokens, batch, precision, who, [&](auto& pass) {
    StepResult r;
    r.loss = pass.forward(tokens);
    const bool grads_finite = pass.backward(tokens, grads, adapter_grads);
    r.finite = std::isfinite(r.loss) && grads_finite;
    return r;
  });
}

}  // namespace twinbed::train
