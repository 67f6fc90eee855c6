#include "twinbed/train/trainer.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>
#include <tuple>

#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/passes/dsa.hpp"
#include "twinbed/core/passes/lora.hpp"
#include "twinbed/core/passes/precision.hpp"
#include "twinbed/core/passes/tgc.hpp"
#include "twinbed/kernels/dsa.hpp"
#include "twinbed/real/resident_memory.hpp"
#include "twinbed/train/corpus.hpp"
#include "gradient_exchange.hpp"

namespace twinbed::train {
namespace kc = twinbed::kernels::cpu;
using Clock = std::chrono::steady_clock;

namespace {

// ---- technique parameters of a variant ----------------------------------------------------------

template <class Params, class Parse>
std::optional<Params> params_of(const Variant& v, const std::string& pass, const std::string& path, Parse parse) {
  const TechniqueConfig* t = find_technique(v, pass);
  if (!t) return std::nullopt;
  nlohmann::json entry = t->params;
  entry["pass"] = pass;
  return parse(entry, path);
}

std::string technique_path(std::size_t variant, const Variant& v, const std::string& pass) {
  for (std::size_t i = 0; i < v.techniques.size(); ++i)
    if (v.techniques[i].pass == pass)
      return "/variants/" + std::to_string(variant) + "/techniques/" + std::to_string(i);
  return "/variants/" + std::to_string(variant);
}

// ---- DSA: masks and the masked optimizer ---------------------------------------------------------

// The seed names gradient magnitude and momentum as the importance signals without weights: equal.
constexpr float kDsaGradWeight = 0.5f;

class Dsa {
 public:
  Dsa(const DsaParams& p, const std::vector<Weight>& tensors, const std::string& path) : p_(p) {
    static const std::vector<ParamKind> kEveryMatrix = {ParamKind::Qkv, ParamKind::Proj, ParamKind::Fc1, ParamKind::Fc2};
    const std::vector<ParamKind>& targets = p.targets.empty() ? kEveryMatrix : p.targets;
    for (ParamKind k : targets)
      if (k != ParamKind::Qkv && k != ParamKind::Proj && k != ParamKind::Fc1 && k != ParamKind::Fc2)
        json_read::fail(path + "/targets", "this GPT has no " + to_string(k) + " matrices; it has qkv, proj, fc1, fc2");
    for (const Weight& w : tensors)
      if (std::find(targets.begin(), targets.end(), w.kind) != targets.end()) {
        if (p.granularity == DsaParams::Granularity::NM && w.cols % static_cast<std::size_t>(p.m) != 0)
          json_read::fail(path + "/m", "n:m groups need m to divide every target's columns; " + w.name + " has " +
                                           std::to_string(w.cols));
        targets_.push_back(w);
        total_ += w.size();
      }
  }

  bool due(std::int64_t step) const { return step % p_.refresh_every == 0; }

  // New masks from the averaged gradient and Adam's first moment; prune zeroes what is frozen.
  void refresh(std::span<const float> grads, std::span<const float> momentum, std::span<float> params,
               std::span<std::uint8_t> mask) {
    active_ = 0;
    for (const Weight& w : targets_) {
      score_.resize(w.size());
      kc::importance(grads.subspan(w.offset, w.size()), momentum.subspan(w.offset, w.size()), kDsaGradWeight, score_);
      auto m = mask.subspan(w.offset, w.size());
      switch (p_.granularity) {
        case DsaParams::Granularity::Unstructured:
          active_ += kc::mask_unstructured(score_, p_.density, m);
          break;
        case DsaParams::Granularity::Block: {
          const std::size_t b = static_cast<std::size_t>(p_.block_size);
          block_mask_.resize(((w.rows + b - 1) / b) * ((w.cols + b - 1) / b));
          active_ += kc::mask_block(score_, w.rows, w.cols, b, p_.density, block_mask_, m);
          break;
        }
        case DsaParams::Granularity::NM:
          active_ += kc::mask_nm(score_, w.rows, w.cols, static_cast<std::size_t>(p_.n), static_cast<std::size_t>(p_.m), m);
          break;
      }
      if (p_.mode == DsaParams::Mode::Prune)
        for (std::size_t i = 0; i < w.size(); ++i)
          if (!m[i]) params[w.offset + i] = 0.0f;
    }
  }

  double active_fraction() const { return total_ ? static_cast<double>(active_) / static_cast<double>(total_) : 1.0; }

 private:
  DsaParams p_;
  std::vector<Weight> targets_;
  std::size_t total_ = 0, active_ = 0;
  std::vector<float> score_;
  std::vector<std::uint8_t> block_mask_;
};

// ---- precision: per-layer types and dynamic loss scaling ------------------------------------------

// torch.amp.GradScaler's defaults (PyTorch documentation, "Automatic Mixed Precision package"):
// init_scale 2^16, backoff_factor 0.5, growth_factor 2, growth_interval 2000.
constexpr float kInitialLossScale = 65536.0f;
constexpr std::int64_t kLossScaleGrowthInterval = 2000;

class MixedPrecision {
 public:
  MixedPrecision(const PrecisionParams& p, const GptShape& shape, const std::string& path) : p_(p) {
    model_ = gpt_model("train", shape.layers, shape.hidden, shape.heads, shape.seq_len, shape.vocab, DType::FP32);
    const auto check = [&](DType t) {
      if (t == DType::FP8)
        json_read::fail(path, "fp8 storage is not emulated by `twinbed train` (its scaling recipes are per tensor); "
                              "use fp32, tf32, bf16 or fp16");
      return t;
    };
    current_.layer.resize(static_cast<std::size_t>(shape.layers));
    if (p.policy == PrecisionPolicy::Static) {
      for (int l = 0; l < shape.layers; ++l)
        current_.layer[static_cast<std::size_t>(l)] = check(precision_target(p, model_, l, OpCost::Kind::Gemm));
      current_.outer = check(precision_target(p, model_, -1, OpCost::Kind::Gemm));
    } else {
      check(p.low);
      check(p.high);
      // The pass's stated split until the first re-decision: layer l low iff floor((l+1)f) > floor(lf).
      for (int l = 0; l < shape.layers; ++l)
        current_.layer[static_cast<std::size_t>(l)] =
            std::floor((l + 1) * p.low_fraction) > std::floor(l * p.low_fraction) ? p.low : p.high;
      current_.outer = p.high;
    }
    // Loss scaling when fp16 can appear anywhere (adaptive: in either of its types, whichever layers get it).
    const bool adaptive_fp16 = p.policy == PrecisionPolicy::Adaptive && (p.low == DType::FP16 || p.high == DType::FP16);
    const bool fp16 = adaptive_fp16 || current_.outer == DType::FP16 ||
                      std::count(current_.layer.begin(), current_.layer.end(), DType::FP16) > 0;
    scaling_ = fp16 && p.loss_scaling == LossScaling::Dynamic;
    current_.loss_scale = scaling_ ? kInitialLossScale : 1.0f;
  }

  const Precision& current() const { return current_; }

  // After a step: back off on an overflow, grow after a run of good steps.
  void update_scale(bool overflow) {
    if (!scaling_) return;
    if (overflow) {
      current_.loss_scale *= 0.5f;
      good_steps_ = 0;
    } else if (++good_steps_ == kLossScaleGrowthInterval) {
      current_.loss_scale *= 2.0f;
      good_steps_ = 0;
    }
  }

  // Adaptive: every redecide_every steps (not step 0), the low_fraction of layers with the smallest
  // gradient crest factor go to `low`.
  void redecide(std::int64_t step, std::span<const float> grads, const std::vector<Weight>& tensors) {
    if (p_.policy != PrecisionPolicy::Adaptive || step == 0 || step % p_.redecide_every != 0) return;
    const std::size_t layers = current_.layer.size();
    std::vector<double> amax(layers, 0), sumsq(layers, 0), count(layers, 0);
    for (const Weight& w : tensors) {
      if (w.layer < 0) continue;
      const auto l = static_cast<std::size_t>(w.layer);
      for (std::size_t i = 0; i < w.size(); ++i) {
        const double g = grads[w.offset + i];
        amax[l] = std::max(amax[l], std::abs(g));
        sumsq[l] += g * g;
      }
      count[l] += static_cast<double>(w.size());
    }
    std::vector<std::pair<double, std::size_t>> crest;
    for (std::size_t l = 0; l < layers; ++l) {
      const double rms = std::sqrt(sumsq[l] / std::max(1.0, count[l]));
      crest.push_back({rms > 0 ? amax[l] / rms : 0.0, l});
    }
    std::stable_sort(crest.begin(), crest.end());
    const auto low = static_cast<std::size_t>(std::floor(static_cast<double>(layers) * p_.low_fraction));
    for (std::size_t i = 0; i < layers; ++i) current_.layer[crest[i].second] = i < low ? p_.low : p_.high;
  }

  int low_layers() const {
    return static_cast<int>(std::count_if(current_.layer.begin(), current_.layer.end(),
                                          [](DType t) { return t == DType::BF16 || t == DType::FP16; }));
  }

 private:
  PrecisionParams p_;
  TransformerModel model_;
  Precision current_;
  bool scaling_ = false;
  std::int64_t good_steps_ = 0;
};

// ---- the optimizer --------------------------------------------------------------------------------

// Linear warm-up, then cosine decay toward min_lr_fraction·lr, reached one step after the last.
double learning_rate(const TrainingSettings& t, std::int64_t step) {
  if (step < t.warmup_steps) return t.lr * static_cast<double>(step + 1) / static_cast<double>(t.warmup_steps);
  const double span = static_cast<double>(std::max<std::int64_t>(1, t.steps - t.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - t.warmup_steps) / span);
  const double min_lr = t.min_lr_fraction * t.lr;
  return min_lr + 0.5 * (t.lr - min_lr) * (1 + std::cos(M_PI * progress));
}

// AdamW over the trainable tensors, masked (kernels/dsa.hpp's masked_adam: the one optimizer kernel, a
// mask of ones where nothing is frozen). Weight decay on matrices only (nanoGPT's rule: every 2-D
// parameter decays, LayerNorm γ/β do not).
void adamw_step(const TrainingSettings& t, double lr, int update, const std::vector<Weight>& tensors,
                std::span<float> params, std::span<const float> grads, std::span<float> m, std::span<float> v,
                std::span<const std::uint8_t> mask) {
  for (const Weight& w : tensors) {
    kernels::AdamSpec spec;
    spec.lr = static_cast<float>(lr);
    spec.beta1 = static_cast<float>(t.beta1);
    spec.beta2 = static_cast<float>(t.beta2);
    spec.weight_decay = w.rows > 1 ? static_cast<float>(t.weight_decay) : 0.0f;
    kc::masked_adam(params.subspan(w.offset, w.size()), grads.subspan(w.offset, w.size()), m.subspan(w.offset, w.size()),
                    v.subspan(w.offset, w.size()), mask.subspan(w.offset, w.size()), spec, update);
  }
}

// ---- evaluation -----------------------------------------------------------------------------------

// Mean held-out loss and top-1 accuracy over eval_batches·global_batch sequences at evenly spaced
// starts, split over the ranks (sequence i on rank i mod R) and summed.
std::pair<double, double> held_out(const Gpt& model, const Corpus& corpus, const TrainingSettings& t,
                                   const Precision* precision, Ranks& ranks, std::vector<std::uint8_t>& tokens) {
  const std::size_t length = static_cast<std::size_t>(model.shape().seq_len) + 1;
  const std::size_t count = static_cast<std::size_t>(t.eval_batches) * static_cast<std::size_t>(t.global_batch);
  const std::size_t room = corpus.held_out.size() - length;
  std::vector<std::size_t> starts;
  for (std::size_t i = static_cast<std::size_t>(ranks.rank()); i < count; i += static_cast<std::size_t>(ranks.size()))
    starts.push_back(count > 1 ? room * i / (count - 1) : 0);
  const std::size_t per_call = static_cast<std::size_t>(t.global_batch / ranks.size());
  double loss = 0, correct = 0;
  for (std::size_t first = 0; first < starts.size(); first += per_call) {
    const std::size_t n = std::min(per_call, starts.size() - first);
    gather_sequences(corpus.held_out, std::span(starts).subspan(first, n), length, tokens);
    const Evaluation e = model.evaluate(tokens, n, precision);
    loss += e.loss * static_cast<double>(n);
    correct += static_cast<double>(e.correct);
  }
  // The float sum of the correct counts is exact while they stay below 2^24 (eval_batches ·
  // global_batch · seq_len predictions in all); the loss sum is a float sum either way.
  std::array<float, 2> sum{static_cast<float>(loss), static_cast<float>(correct)};
  ranks.all_reduce(sum);
  const double predictions = static_cast<double>(count) * static_cast<double>(model.shape().seq_len);
  return {static_cast<double>(sum[0]) / static_cast<double>(count), static_cast<double>(sum[1]) / predictions};
}

}  // namespace

// ---- one variant ----------------------------------------------------------------------------------

namespace {

// A variant's techniques parsed by the passes' parsers and checked against the model: what
// train_variant runs and check_variants checks, so both refuse the same things with the same words.
struct Setup {
  std::optional<LoraParams> lora;
  std::optional<TgcParams> tgc;
  std::optional<MixedPrecision> mixed;
  std::optional<Dsa> sparse;
  bool adapters() const { return lora && lora->rank > 0; }
};

// Saved activations of one rank's step, in floats (gpt.hpp's count: per layer and token the 16·hidden
// the workspace keeps, and the attention's heads·seq_len) and the most a CPU rank is given: 2^29 floats,
// 2 GiB.
constexpr double kMaxActivationFloats = double{1 << 29};

Setup setup_of(const TrainConfig& config, std::size_t index, int ranks) {
  const Variant& v = config.variants.at(index);
  const std::string at = "/variants/" + std::to_string(index);
  if (v.training.global_batch % ranks != 0)
    json_read::fail(at + "/training/global_batch", "must be a multiple of the ranks (" + std::to_string(ranks) +
                                                        "), got " + std::to_string(v.training.global_batch));
  const GptShape& s = config.model;
  const double per_rank = static_cast<double>(v.training.global_batch / ranks);
  const double activations =
      s.layers * per_rank * s.seq_len * (16.0 * s.hidden + static_cast<double>(s.heads) * s.seq_len);
  if (activations > kMaxActivationFloats)
    json_read::fail(at + "/training/global_batch",
                    "a rank would hold about " + json_read::number_text(activations * 4 / double{1 << 30}) +
                        " GiB of activations (layers x sequences per rank x seq_len  x (16 hidden + heads x seq_len) "
                        "floats), more than the 2 GiB a CPU rank is given: use fewer sequences, more ranks or a "
                        "shorter seq_len");
  Setup out;
  out.lora = params_of<LoraParams>(v, "lora", technique_path(index, v, "lora"), lora_params_from_json);
  out.tgc = params_of<TgcParams>(v, "tgc", technique_path(index, v, "tgc"), tgc_params_from_json);
  if (const auto p = params_of<PrecisionParams>(v, "precision", technique_path(index, v, "precision"), precision_params_from_json))
    out.mixed.emplace(*p, s, technique_path(index, v, "precision"));
  if (const auto p = params_of<DsaParams>(v, "dsa", technique_path(index, v, "dsa"), dsa_params_from_json);
      p && p->density < 1) {
    if (out.adapters())
      json_read::fail(technique_path(index, v, "dsa"),
                      "dsa freezes base matrices, which lora already freezes whole: train them in separate variants");
    out.sparse.emplace(*p, gpt_weights(s), technique_path(index, v, "dsa"));
  }
  return out;
}

// The folder a variant's corpus errors name: its own "data" when it overrides the config's.
std::string data_path(const TrainConfig& config, std::size_t index) {
  return config.variants[index].data == config.data ? "/data" : "/variants/" + std::to_string(index) + "/data";
}

}  // namespace

void check_variants(const TrainConfig& config, int ranks) {
  const std::size_t length = static_cast<std::size_t>(config.model.seq_len) + 1;
  for (std::size_t i = 0; i < config.variants.size(); ++i) {
    const Variant& v = config.variants[i];
    setup_of(config, i, ranks);
    load_corpus(v.data, length + 1, data_path(config, i));
    if (!v.checkpoint.empty()) load_checkpoint(v.checkpoint, config.model);
  }
}

VariantResult train_variant(const TrainConfig& config, std::size_t variant_index, Ranks& ranks, const Gpt* start,
                            const StepCallback& on_step) {
  const Variant& v = config.variants.at(variant_index);
  const TrainingSettings& t = v.training;
  const int R = ranks.size();
  Setup setup = setup_of(config, variant_index, R);
  const bool adapters = setup.adapters();
  if (start && start->has_lora())
    throw InvalidArgument("train_variant: the start model has LoRA adapters (the config refuses \"from\" a lora variant)");
  std::optional<MixedPrecision>& mixed = setup.mixed;
  std::optional<Dsa>& sparse = setup.sparse;

  real::ResidentPeak memory;  // what the variant adds to the process's resident set
  memory.start();
  const std::size_t length = static_cast<std::size_t>(config.model.seq_len) + 1;
  const Corpus corpus = load_corpus(v.data, length + 1, data_path(config, variant_index));

  VariantResult result{v.name, {}, 0, 0, 0, 0, unigram_entropy(corpus.train), static_cast<std::int64_t>(corpus.train.size()),
                       static_cast<std::int64_t>(corpus.held_out.size()),
                       start ? *start : Gpt(config.model, t.seed)};
  Gpt& model = result.model;
  if (adapters) {
    const LoraParams& lora = *setup.lora;
    model.enable_lora(LoraSetup{lora.rank, static_cast<float>(lora.alpha), lora.targets}, t.seed + 1);
  }
  const std::vector<Weight>& tensors = adapters ? model.adapters() : model.weights();
  std::span<float> params = adapters ? model.adapter_params() : model.params();
  const std::size_t n = params.size();
  result.parameters = static_cast<std::int64_t>(model.params().size());
  result.trainable = static_cast<std::int64_t>(n);

  detail::GradientExchange exchange(setup.tgc, n);

  std::vector<float> grads(n), m(n, 0.0f), second(n, 0.0f);
  std::vector<std::uint8_t> mask(n, 1);
  std::vector<std::uint8_t> tokens, eval_tokens;
  std::vector<std::size_t> starts;
  const std::size_t per_rank = static_cast<std::size_t>(t.global_batch / R);
  int updates = 0;
  double elapsed = 0;

  for (std::int64_t step = 0; step < t.steps; ++step) {
    const auto t0 = Clock::now();
    const std::int64_t bytes0 = ranks.bytes_sent();
    StepRecord rec;
    rec.step = step + 1;
    rec.lr = learning_rate(t, step);

    // This rank's share of the step's global batch.
    starts.clear();
    for (std::size_t i = 0; i < per_rank; ++i)
      starts.push_back(sequence_start(t.seed, step, static_cast<std::size_t>(ranks.rank()) * per_rank + i,
                                      corpus.train.size(), length));
    gather_sequences(corpus.train, starts, length, tokens);

    const Precision* prec = mixed ? &mixed->current() : nullptr;
    const StepResult r = adapters ? model.forward_backward(tokens, per_rank, {}, grads, prec)
                                  : model.forward_backward(tokens, per_rank, grads, {}, prec);
    const float scale = prec ? prec->loss_scale : 1.0f;
    rec.loss_scale = scale;

    // An overflow anywhere skips the step everywhere.
    std::array<float, 1> overflow{r.finite ? 0.0f : 1.0f};
    if (mixed) ranks.all_reduce(overflow);
    rec.skipped = overflow[0] > 0;
    if (!rec.skipped) {
      // Unscaled first (in fp32, like GradScaler's unscale_), so the exchange and its error-feedback
      // residual never mix two loss scales.
      if (scale != 1.0f)
        for (float& g : grads) g /= scale;
      rec.tgc_bits = exchange.exchange(grads, ranks);
      if (mixed) mixed->redecide(step, grads, tensors);
      if (sparse && sparse->due(step)) sparse->refresh(grads, m, params, mask);
      ++updates;
      adamw_step(t, rec.lr, updates, tensors, params, grads, m, second, mask);
    } else {
      ++result.overflow_steps;
    }
    if (mixed) mixed->update_scale(rec.skipped);
    rec.bytes_sent = ranks.bytes_sent() - bytes0;
    const double step_s = std::chrono::duration<double>(Clock::now() - t0).count();

    // The step as all ranks agree on it: mean loss, slowest time, busiest sender, largest peak memory.
    constexpr std::size_t kFields = 4;
    const std::array<float, kFields> mine{static_cast<float>(r.loss), static_cast<float>(step_s),
                                          static_cast<float>(rec.bytes_sent),
                                          static_cast<float>(std::max<std::int64_t>(0, memory.peak_above_start()))};
    std::vector<float> all(kFields * static_cast<std::size_t>(R));
    ranks.all_gather(mine, all);
    rec.train_loss = 0;
    for (std::size_t q = 0; q < static_cast<std::size_t>(R); ++q) {
      rec.train_loss += all[kFields * q];
      rec.step_s = std::max(rec.step_s, static_cast<double>(all[kFields * q + 1]));
      rec.bytes_sent = std::max(rec.bytes_sent, static_cast<std::int64_t>(all[kFields * q + 2]));
      rec.peak_memory_bytes = std::max(rec.peak_memory_bytes, static_cast<std::int64_t>(all[kFields * q + 3]));
    }
    rec.train_loss /= R;
    elapsed += rec.step_s;
    rec.elapsed_s = elapsed;
    rec.active_fraction = sparse ? sparse->active_fraction() : 1.0;
    rec.low_precision_layers = mixed ? mixed->low_layers() : 0;
    if ((step + 1) % t.eval_every == 0 || step + 1 == t.steps)
      std::tie(rec.held_out_loss, rec.held_out_accuracy) = held_out(model, corpus, t, prec, ranks, eval_tokens);
    result.steps.push_back(rec);
    if (on_step) on_step(rec);
  }

  for (const StepRecord& rec : result.steps) result.peak_memory_bytes = std::max(result.peak_memory_bytes, rec.peak_memory_bytes);
  result.model = Gpt(result.model);  // a copy keeps the weights, not the activations' scratch buffers
  return result;
}

// ---- checkpoints ----------------------------------------------------------------------------------

namespace {
constexpr char kMagic[8] = {'T', 'W', 'B', 'D', 'C', 'K', 'P', '1'};
static_assert(std::endian::native == std::endian::little, "checkpoints are written little-endian, as this host stores");
}  // namespace

void save_checkpoint(const Gpt& model, const std::string& file) {
  if (model.has_lora()) throw InvalidArgument("save_checkpoint: a model with LoRA adapters is saved by its variant's base");
  const std::string tmp = file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    const GptShape& s = model.shape();
    const std::array<std::int32_t, 5> shape{s.layers, s.hidden, s.heads, s.seq_len, s.vocab};
    const std::uint64_t count = model.params().size();
    out.write(kMagic, sizeof kMagic);
    out.write(reinterpret_cast<const char*>(shape.data()), sizeof shape);
    out.write(reinterpret_cast<const char*>(&count), sizeof count);
    out.write(reinterpret_cast<const char*>(model.params().data()), static_cast<std::streamsize>(count * sizeof(float)));
    if (!out) throw Error("cannot write the checkpoint " + json_read::quoted(tmp, std::string::npos));
  }
  std::filesystem::rename(tmp, file);
}

Gpt load_checkpoint(const std::string& file, const GptShape& expected) {
  if (const std::string why = json_read::unreadable_reason(file, "checkpoint"); !why.empty())
    throw ConfigError(file, why);
  std::ifstream in(file, std::ios::binary);
  char magic[8] = {};
  std::array<std::int32_t, 5> shape{};
  std::uint64_t count = 0;
  in.read(magic, sizeof magic);
  in.read(reinterpret_cast<char*>(shape.data()), sizeof shape);
  in.read(reinterpret_cast<char*>(&count), sizeof count);
  if (!in || !std::equal(magic, magic + 8, kMagic)) throw ConfigError(file, "is not a twinbed train checkpoint");
  const GptShape s{shape[0], shape[1], shape[2], shape[3], shape[4]};
  if (!(s == expected))
    throw ConfigError(file, "is a checkpoint of a model with layers " + std::to_string(s.layers) + ", hidden " +
                                std::to_string(s.hidden) + ", heads " + std::to_string(s.heads) + ", seq_len " +
                                std::to_string(s.seq_len) + ": not the config's model");
  Gpt model(s, 0);
  if (count != model.params().size()) throw ConfigError(file, "holds a parameter count that does not match its shape");
  in.read(reinterpret_cast<char*>(model.params().data()), static_cast<std::streamsize>(count * sizeof(float)));
  if (!in || in.peek() != std::char_traits<char>::eof()) throw ConfigError(file, "is truncated or has trailing bytes");
  return model;
}

// ---- memory -----------------------------------------------------------------------------------------

}  // namespace twinbed::train
