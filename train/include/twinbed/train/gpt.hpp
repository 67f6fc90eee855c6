// A small decoder-only GPT (GPT-2 style, pre-LayerNorm) trained for real on a CPU rank: forward,
// backward and mean cross-entropy over a byte-level vocabulary, with emulated 16-bit storage and LoRA
// adapters. The trainer (AdamW, data-parallel all-reduce, techniques) works on the flat parameter and
// gradient vectors this class exposes.
//
// Model (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"; Karpathy's
// nanoGPT/llm.c layout), per token row of the batch:
//   x  = wte[token] + wpe[position]
//   each layer l:  h = LN1(x);  qkv = h·W_qkvᵀ;  a = causal softmax(q·kᵀ/sqrt(head_dim))·v per head;
//                  x += a·W_projᵀ;  h2 = LN2(x);  u = GELU_tanh(h2·W_fc1ᵀ);  x += u·W_fc2ᵀ
//   logits = LNf(x)·wteᵀ (tied embedding);  loss = mean over batch·seq_len positions of −log softmax[target]
// The linear layers have no biases (as in PaLM and nanoGPT's bias=False option; the GEMM kernels of
// kernels/ have none either); LayerNorm has γ and β, eps 1e-5.
//
// Numerics: fp32, single-threaded, deterministic — the same parameters and tokens give bit-identical
// loss and gradients on every call. The initialisation draws from a generator of its own
// (splitmix64 + Box–Muller), not std::normal_distribution, so a seed gives the same weights with every
// standard library.
//
// Thread-safety: none. loss() is const but uses the model's scratch buffers; one Gpt per thread.
// Cost (forward + backward): about 6·params·batch·seq_len FLOPs plus 12·layers·batch·seq_len²·hidden for
// attention (full T×T products, masked afterwards); the saved activations take about
// layers·batch·seq_len·(16·hidden + heads·seq_len) floats. The 4-layer, 128-wide model at batch 8 ×
// 64 tokens is about 2.7 GFLOP a step, almost all in Eigen's GEMM.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "twinbed/core/model.hpp"
#include "twinbed/core/plan.hpp"

namespace twinbed::train {

// Validated by Gpt's constructor: every field >= 1 and hidden % heads == 0, else InvalidArgument
// naming the field. Tokens are bytes, so vocab above 256 is allowed but its extra rows are never inputs.
struct GptShape {
  int layers = 4;
  int hidden = 128;
  int heads = 4;
  int seq_len = 64;
  int vocab = 256;
  bool operator==(const GptShape&) const = default;
};

// One parameter tensor in a flat parameter vector. Matrices are row-major rows × cols; a linear layer's
// weight W is out × in and computes y = x·Wᵀ (the convention of kernels/lora.hpp).
struct Weight {
  // "wte", "wpe", "l<i>.ln1.g", "l<i>.ln1.b", "l<i>.qkv", "l<i>.proj", "l<i>.ln2.g", "l<i>.ln2.b",
  // "l<i>.fc1", "l<i>.fc2", "lnf.g", "lnf.b"; adapters "l<i>.<qkv|proj|fc1|fc2>.lora_<a|b>".
  std::string name;
  // Embedding (wte, wpe), Norms (layer LN γ/β), Qkv, Proj, Fc1, Fc2, FinalNorm (lnf), LoraA, LoraB.
  ParamKind kind = ParamKind::Flat;
  int layer = -1;  // -1 outside the transformer layers
  std::size_t rows = 0, cols = 0;  // vectors: rows = 1
  std::size_t offset = 0;          // into params() or adapter_params()
  std::size_t size() const { return rows * cols; }
  bool operator==(const Weight&) const = default;
};

// LoRA (Hu et al. 2021) on every layer's target matrices, targets among Qkv, Proj, Fc1, Fc2 (each at
// most once); scale alpha / rank.
struct LoraSetup {
  int rank = 8;
  float alpha = 16;
  std::vector<ParamKind> targets{ParamKind::Qkv};
  bool operator==(const LoraSetup&) const = default;
};

// Per-layer storage precision, emulated: fp32 arithmetic on values rounded to the type (numerics.hpp).
// FP8 is refused (InvalidArgument). nullptr and an all-FP32 Precision with loss_scale 1 give
// bit-identical results.
//   Forward: layer l reads its weights (and adapters) rounded to layer[l] (a working copy; the fp32
//   masters are untouched) and rounds what it stores between ops — the LN outputs, qkv, the attention
//   output, the fc1 output before and after GELU, and the proj and fc2 outputs before they join the
//   residual. The residual stream stays fp32 (Megatron-LM's fp32-residual-connection option); softmax,
//   LayerNorm statistics and the loss are computed in fp32. The embedding, final norm, logits and head
//   use `outer`.
//   Backward: d(logits) is multiplied by loss_scale; each activation gradient at the same points is
//   rounded to the layer's type (where fp16 underflows and overflows), and each weight gradient is
//   rounded to its layer's type at the end.
struct Precision {
  std::vector<DType> layer;   // one per transformer layer (size == layers)
  DType outer = DType::FP32;  // embedding, final norm and head
  float loss_scale = 1;       // > 0 and finite; the backward starts from loss·loss_scale
  bool operator==(const Precision&) const = default;
};

// A forward pass's mean loss and its top-1 next-token accuracy: predictions whose largest logit (the
// lowest index on ties) is the target.
struct Evaluation {
  double loss = 0;
  std::size_t correct = 0;
  std::size_t predictions = 0;  // batch · seq_len
  bool operator==(const Evaluation&) const = default;
};

struct StepResult {
  double loss = 0;     // mean cross-entropy in nats, unscaled
  bool finite = true;  // false when the loss or any value of the backward is inf/NaN: grads meaningless
  bool operator==(const StepResult&) const = default;
};

// The base tensors of a model of this shape, in parameter order (what Gpt::weights() holds), without
// allocating them. InvalidArgument for a bad shape.
std::vector<Weight> gpt_weights(const GptShape& shape);

class Gpt {
 public:
  // Deterministic initialisation (GPT-2; nanoGPT's _init_weights): every matrix N(0, 0.02²), W_proj
  // and W_fc2 N(0, (0.02/sqrt(2·layers))²), LN γ = 1, β = 0. Throws InvalidArgument for a bad shape.
  Gpt(GptShape shape, std::uint64_t seed);
  ~Gpt();
  // Copies take the parameters and adapters, not the scratch buffers.
  Gpt(const Gpt& other);
  Gpt& operator=(const Gpt& other);
  Gpt(Gpt&&) noexcept;
  Gpt& operator=(Gpt&&) noexcept;

  const GptShape& shape() const { return shape_; }
  // Base tensors, in params() order (wte, wpe, per layer ln1.g, ln1.b, qkv, proj, ln2.g, ln2.b, fc1,
  // fc2, then lnf.g, lnf.b).
  const std::vector<Weight>& weights() const { return weights_; }
  std::span<float> params() { return params_; }
  std::span<const float> params() const { return params_; }
  // The tensor called `name`, base or adapter; InvalidArgument when there is none.
  const Weight& find(const std::string& name) const;

  // Adds fresh adapters to every layer's target matrices (replacing any earlier ones): A (rank × in)
  // ~ N(0, 0.02²) from `seed`, B (out × rank) = 0, so the model's function is unchanged (Hu et al. §4.1).
  // Per layer, in the order Qkv, Proj, Fc1, Fc2 whatever the order of setup.targets: A then B.
  // InvalidArgument for rank < 1, alpha not finite or <= 0, no target, a repeated target or one outside
  // Qkv/Proj/Fc1/Fc2.
  void enable_lora(const LoraSetup& setup, std::uint64_t seed);
  bool has_lora() const { return lora_.has_value; }
  const LoraSetup& lora_setup() const { return lora_.setup; }  // meaningful when has_lora()
  const std::vector<Weight>& adapters() const { return adapters_; }  // in adapter_params() order
  std::span<float> adapter_params() { return adapter_params_; }
  std::span<const float> adapter_params() const { return adapter_params_; }

  // tokens: `batch` sequences of seq_len + 1 tokens each, back to back; the inputs are positions
  // [0, seq_len), the targets [1, seq_len + 1). Mean cross-entropy over batch·seq_len predictions, in
  // nats. InvalidArgument for batch 0, a size mismatch, a token >= vocab or a bad Precision.
  double loss(std::span<const std::uint8_t> tokens, std::size_t batch, const Precision* precision = nullptr) const;
  // The same forward, with the top-1 accuracy of its predictions too.
  Evaluation evaluate(std::span<const std::uint8_t> tokens, std::size_t batch, const Precision* precision = nullptr) const;

  // Forward and backward. grads (params().size(), overwritten) = d(loss·loss_scale)/d params.
  // With LoRA on the base is frozen: grads must be empty and adapter_grads (adapter_params().size(),
  // overwritten) gets the adapters' gradients; without LoRA adapter_grads must be empty. Size
  // mismatches throw InvalidArgument naming the function and both sizes.
  StepResult forward_backward(std::span<const std::uint8_t> tokens, std::size_t batch, std::span<float> grads,
                              std::span<float> adapter_grads, const Precision* precision = nullptr);

  struct Workspace;  // implementation detail: scratch buffers (gpt.cpp), reused across calls

 private:
  struct LoraState {
    bool has_value = false;
    LoraSetup setup;
    std::vector<int> slot;  // layers·4 (Qkv, Proj, Fc1, Fc2): index in adapters_ of the A tensor, or -1
  };
  Workspace& workspace() const;
  // Checks the tokens, resolves the precision, sizes the workspace, reads the weights in their storage
  // types, and runs `body` on the pass (a generic lambda; defined and used in gpt.cpp only).
  template <class Body>
  auto with_pass(std::span<const std::uint8_t> tokens, std::size_t batch, const Precision* precision, const char* who,
                 Body&& body) const;

  GptShape shape_;
  std::vector<Weight> weights_;
  std::vector<float> params_;
  LoraState lora_;
  std::vector<Weight> adapters_;
  std::vector<float> adapter_params_;
  mutable std::unique_ptr<Workspace> ws_;  // scratch only (loss() const uses it); made on first use
};

}  // namespace twinbed::train
