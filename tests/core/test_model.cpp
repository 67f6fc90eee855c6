// The model's counts against ../shared/REFERENCE.md's formulas (Narayanan et al. SC'21, Korthikanti et
// al. MLSys'23, Rajbhandari et al. SC'20), for several shapes.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "twinbed/core/error.hpp"
#include "twinbed/core/model.hpp"

namespace twinbed {
namespace {

using json = nlohmann::json;

double d(std::int64_t v) { return static_cast<double>(v); }

void expect_rel(double actual, double expected, double tol = 1e-9) {
  EXPECT_NEAR(actual, expected, std::abs(expected) * tol) << "relative error " << (actual - expected) / expected;
}

const OpCost& find_op(const std::vector<OpCost>& ops, const std::string& name) {
  for (const OpCost& op : ops) {
    if (op.name == name) return op;
  }
  throw std::runtime_error("no op " + name);
}

// Shapes the tests sweep: the three presets and a small odd one.
std::vector<TransformerModel> shapes() {
  return {model_preset("gpt3-175b"), model_preset("gpt3-6.7b"), model_preset("gpt3-1.3b"),
          gpt_model("small", 6, 384, 6, 512, 1000)};
}

// ---- dtype and names -----------------------------------------------------------------------------

TEST(DType, BytesAndNames) {
  EXPECT_EQ(bytes_per_element(DType::FP32), 4);
  EXPECT_EQ(bytes_per_element(DType::TF32), 4);
  EXPECT_EQ(bytes_per_element(DType::BF16), 2);
  EXPECT_EQ(bytes_per_element(DType::FP16), 2);
  EXPECT_EQ(bytes_per_element(DType::FP8), 1);
  for (const std::string& n : dtype_names()) EXPECT_EQ(dtype_name(parse_dtype(n)), n);
  EXPECT_EQ(parse_dtype("bf16"), DType::BF16);
}

TEST(DType, UnknownNameListsTheKnownOnes) {
  try {
    parse_dtype("bf17");
    FAIL() << "no throw";
  } catch (const UnknownName& e) {
    EXPECT_NE(std::string(e.what()).find("'bf17'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("fp32, tf32, bf16, fp16, fp8"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_dtype("BF16"), UnknownName);  // names are exact
}

TEST(Recompute, Names) {
  EXPECT_EQ(parse_recompute("none"), Recompute::None);
  EXPECT_EQ(parse_recompute("selective"), Recompute::Selective);
  EXPECT_EQ(parse_recompute("full"), Recompute::Full);
  try {
    parse_recompute("partial");
    FAIL() << "no throw";
  } catch (const UnknownName& e) {
    EXPECT_NE(std::string(e.what()).find("none, selective, full"), std::string::npos) << e.what();
  }
}

// ---- parameters ----------------------------------------------------------------------------------

TEST(Parameters, EqualNarayananFormulaForDenseShapes) {
  for (const TransformerModel& m : shapes()) {
    SCOPED_TRACE(m.name);
    const ParameterCount p = parameter_count(m);
    const double l = d(m.layers), h = d(m.hidden), s = d(m.seq_len), V = d(m.vocab);
    const double formula = 12 * l * h * h * (1 + 13 / (12 * h) + (V + s) / (12 * l * h));
    // The formula counts the layers and the embeddings; the final LayerNorm (2h) is extra.
    const std::int64_t counted = p.layers * p.per_layer() + p.embedding;
    expect_rel(d(counted), formula);
    // And exactly, in integers: 12lh² + 13lh + (V+s)h.
    EXPECT_EQ(counted, 12 * m.layers * m.hidden * m.hidden + 13 * m.layers * m.hidden + (m.vocab + m.seq_len) * m.hidden);
    EXPECT_EQ(p.total(), counted + 2 * m.hidden);
    EXPECT_EQ(p.expert_total(), 0);
    EXPECT_EQ(p.active(1), p.total());
  }
}

TEST(Parameters, Gpt3Is175Billion) {
  const ParameterCount p = parameter_count(model_preset("gpt3-175b"));
  EXPECT_GT(p.total(), 174'000'000'000);
  EXPECT_LT(p.total(), 176'000'000'000);
  EXPECT_EQ(p.total(), 174'615'846'912);  // 12·96·12288² + 13·96·12288 + (51200+2048)·12288 + 2·12288
}

TEST(Parameters, PresetsHaveTheirNominalSize) {
  expect_rel(d(parameter_count(model_preset("gpt3-6.7b")).total()), 6.7e9, 0.02);
  expect_rel(d(parameter_count(model_preset("gpt3-1.3b")).total()), 1.3e9, 0.05);
  EXPECT_THROW(model_preset("gpt3-13b"), UnknownName);
}

TEST(Parameters, MixtureOfExperts) {
  TransformerModel m = model_preset("gpt3-1.3b");
  const ParameterCount dense = parameter_count(m);
  m.experts = 8;
  m.top_k = 2;
  const ParameterCount moe = parameter_count(m);
  const std::int64_t h = m.hidden, f = 4 * h;
  EXPECT_EQ(moe.ffn, 2 * h * f + f + h);
  EXPECT_EQ(moe.router, h * 8);
  EXPECT_EQ(moe.expert_total(), m.layers * 8 * moe.ffn);
  EXPECT_EQ(moe.total(), dense.total() + m.layers * (7 * moe.ffn + h * 8));
  EXPECT_EQ(moe.active(2), dense.total() + m.layers * (moe.ffn + h * 8));
}

TEST(Parameters, RankShardsAddUpToTheModel) {
  const TransformerModel m = model_preset("gpt3-175b");
  const ParameterCount p = parameter_count(m);
  EXPECT_EQ(rank_parameters(m, 1, 1, 1, 0).total(), p.total());
  // Pipeline stages: the layers split evenly, stage 0 has the embeddings, the last stage the final
  // LayerNorm and a second copy of the word embedding for the tied LM head.
  std::int64_t sum = 0;
  for (int stage = 0; stage < 8; ++stage) sum += rank_parameters(m, 1, 8, 1, stage).dense;
  EXPECT_EQ(sum, p.total() + m.vocab * m.hidden);
  // Tensor parallelism: everything split by t except the replicated biases and LayerNorms.
  const std::int64_t h = m.hidden, l = m.layers;
  const RankParameters r = rank_parameters(m, 8, 1, 1, 0);
  const std::int64_t replicated_per_layer = 2 * h + 4 * h;  // proj and FC2 biases, two LayerNorms
  EXPECT_EQ(8 * r.dense, p.total() - m.seq_len * h - 2 * h - l * replicated_per_layer +
                             8 * (m.seq_len * h + 2 * h + l * replicated_per_layer));
  EXPECT_THROW(rank_parameters(m, 7, 1, 1, 0), InvalidArgument);
  EXPECT_THROW(rank_parameters(m, 8, 5, 1, 0), InvalidArgument);
  EXPECT_THROW(rank_parameters(m, 8, 8, 1, 8), InvalidArgument);
}

// Without biases (Llama's projections): 4h per layer fewer in attention, f + h in the FFN; every rank's
// share and the per-tensor split drop them too, and the ranks still add up to the model.
TEST(Parameters, WithoutBiases) {
  TransformerModel m = model_preset("gpt3-1.3b");
  const ParameterCount with = parameter_count(m);
  m.bias = false;
  const ParameterCount without = parameter_count(m);
  const std::int64_t h = m.hidden, f = 4 * h;
  EXPECT_EQ(without.attention, 4 * h * h);
  EXPECT_EQ(without.ffn, 2 * h * f);
  EXPECT_EQ(without.norms, with.norms);
  EXPECT_EQ(without.total(), with.total() - m.layers * (4 * h + f + h));
  EXPECT_EQ(rank_parameters(m, 1, 1, 1, 0).total(), without.total());
  // The per-tensor split sums to a rank's layer share, with and without biases.
  for (bool bias : {true, false}) {
    m.bias = bias;
    const LayerTensorElements e = layer_tensor_elements(m, 4);
    EXPECT_EQ(e.qkv, (3 * h * h + (bias ? 3 * h : 0)) / 4);
    EXPECT_EQ(e.proj, h * h / 4 + (bias ? h : 0));
    EXPECT_EQ(e.fc2, f * h / 4 + (bias ? h : 0));
    const RankParameters one_layer = rank_parameters(m, 4, 1, 1, 0, 1);
    const RankParameters no_layer = rank_parameters(m, 4, 1, 1, 0, 0);
    EXPECT_EQ(one_layer.total() - no_layer.total(), e.qkv + e.proj + e.norms + e.fc1 + e.fc2);
  }
}

// Untied embeddings (Llama's): the LM head has an output matrix of its own, V·h parameters more, held
// by the last pipeline stage whatever the pipeline (with one stage, beside the word embedding). Llama 3
// 8B (32 layers, h 4096, 32 heads, 8 key/value heads, SwiGLU FFN 14336, vocabulary 128256, no biases):
// by hand, 32 × (2·4096² + 2·4096·1024 + 3·4096·14336 + 2·4096) + 4096 + 2·128256·4096 = 8,030,261,248
// with RMSNorm's γ alone, which twinbed counts as LayerNorm, β beside γ: 2·4096 per layer and 4096 for
// the final norm more.
TEST(Parameters, UntiedEmbeddingsAddTheOutputMatrix) {
  TransformerModel m = gpt_model("llama3-8b", 32, 4096, 32, 8192, 128256);
  m.kv_heads = 8;
  m.ffn_hidden = 14336;
  m.activation = FfnActivation::Swiglu;
  m.positions = Positions::Rope;
  m.bias = false;
  const ParameterCount tied = parameter_count(m);
  m.tie_embeddings = false;
  const ParameterCount untied = parameter_count(m);
  const std::int64_t word = 128256LL * 4096;
  EXPECT_EQ(untied.total(), tied.total() + word);
  EXPECT_EQ(untied.total(), 8'030'261'248LL + 32 * 2 * 4096 + 4096);
  EXPECT_EQ(rank_parameters(m, 1, 1, 1, 0).total(), untied.total());
  // On a pipeline the last stage holds the output matrix, as it holds the tied copy: the stages' sum is
  // the model's, untied, and one word matrix over it, tied.
  for (int pp : {2, 4}) {
    std::int64_t sum = 0;
    for (int stage = 0; stage < pp; ++stage) sum += rank_parameters(m, 1, pp, 1, stage).total();
    EXPECT_EQ(sum, untied.total()) << "pp " << pp;
  }
  // Vocabulary-parallel like the embedding: ⌈V/t⌉ rows on each tensor-parallel rank.
  const std::int64_t layers_only = rank_parameters(m, 4, 1, 1, 0, 0).total() - 2 * 4096;  // less the final norm
  EXPECT_EQ(layers_only, 2 * (128256 / 4) * 4096);
}

TEST(Parameters, ExpertParallelSplitsExperts) {
  TransformerModel m = model_preset("gpt3-1.3b");
  m.experts = 16;
  m.top_k = 2;
  const ParameterCount p = parameter_count(m);
  const RankParameters one = rank_parameters(m, 1, 1, 1, 0);
  EXPECT_EQ(one.expert, p.expert_total());
  EXPECT_EQ(one.total(), p.total());
  const RankParameters four = rank_parameters(m, 1, 1, 4, 0);
  EXPECT_EQ(4 * four.expert, p.expert_total());
  EXPECT_EQ(four.dense, one.dense);
}

// ---- model state (ZeRO) --------------------------------------------------------------------------

TEST(ModelState, ZeroPaperExample) {
  // Rajbhandari et al., figure 1: Ψ = 7.5B, N_d = 64: 120 GB, 31.4 GB, 16.6 GB, 1.9 GB.
  const std::int64_t psi = 7'500'000'000;
  EXPECT_EQ(model_state_bytes(psi, DType::FP16, 0, 64).total(), 16 * psi);
  EXPECT_EQ(model_state_bytes(psi, DType::FP16, 1, 64).total(), 4 * psi + 12 * psi / 64);
  EXPECT_EQ(model_state_bytes(psi, DType::FP16, 2, 64).total(), 2 * psi + 14 * psi / 64);
  EXPECT_EQ(model_state_bytes(psi, DType::FP16, 3, 64).total(), 16 * psi / 64);
  EXPECT_NEAR(d(model_state_bytes(psi, DType::FP16, 1, 64).total()) / 1e9, 31.4, 0.05);
  EXPECT_NEAR(d(model_state_bytes(psi, DType::FP16, 2, 64).total()) / 1e9, 16.6, 0.05);
  EXPECT_NEAR(d(model_state_bytes(psi, DType::FP16, 3, 64).total()) / 1e9, 1.9, 0.05);
}

TEST(ModelState, ComponentsPerStage) {
  const std::int64_t psi = 1000;
  EXPECT_EQ(model_state_bytes(psi, DType::BF16, 0, 4), (ModelStateBytes{2000, 2000, 12000}));
  EXPECT_EQ(model_state_bytes(psi, DType::BF16, 1, 4), (ModelStateBytes{2000, 2000, 3000}));
  EXPECT_EQ(model_state_bytes(psi, DType::BF16, 2, 4), (ModelStateBytes{2000, 500, 3000}));
  EXPECT_EQ(model_state_bytes(psi, DType::BF16, 3, 4), (ModelStateBytes{500, 500, 3000}));
  // Shards are padded: ⌈1001/4⌉ = 251.
  EXPECT_EQ(model_state_bytes(1001, DType::BF16, 3, 4), (ModelStateBytes{502, 502, 3012}));
  // FP32 training: 4 + 4 + 8 (no master copy).
  EXPECT_EQ(model_state_bytes(psi, DType::FP32, 0, 4), (ModelStateBytes{4000, 4000, 8000}));
  EXPECT_THROW(model_state_bytes(psi, DType::BF16, 4, 4), InvalidArgument);
  EXPECT_THROW(model_state_bytes(psi, DType::BF16, 1, 0), InvalidArgument);
}

TEST(ModelState, BytesPerElementAgreeWithTheTotals) {
  for (DType d : {DType::FP32, DType::TF32, DType::BF16, DType::FP16, DType::FP8}) {
    EXPECT_EQ(gradient_bytes_per_element(d), model_state_bytes(1, d, 0, 1).grads) << dtype_name(d);
    EXPECT_EQ(parameter_bytes_per_element(d), model_state_bytes(1, d, 0, 1).params) << dtype_name(d);
  }
  EXPECT_EQ(gradient_bytes_per_element(DType::FP8), 2);  // FP8 weights are kept in 16 bits
  EXPECT_EQ(gradient_bytes_per_element(DType::TF32), 4);
}

// ---- activations ---------------------------------------------------------------------------------

TEST(Activations, KorthikantiFormulasForEveryMode) {
  for (const TransformerModel& m : shapes()) {
    for (std::int64_t b : {1, 4}) {
      for (int t : {1, 2, 4}) {
        if (m.heads % t != 0) continue;
        SCOPED_TRACE(m.name + " b=" + std::to_string(b) + " t=" + std::to_string(t));
        const double s = d(m.seq_len), h = d(m.hidden), a = d(m.heads), bb = d(b), tt = t;
        const double sbh = s * bb * h;
        const auto act = [&](bool sp, Recompute r) { return d(activation_bytes_per_layer(m, b, t, sp, r)); };
        if (t == 1) expect_rel(act(false, Recompute::None), sbh * (34 + 5 * a * s / h), 1e-12);
        expect_rel(act(false, Recompute::None), sbh * (10 + 24 / tt + 5 * a * s / (h * tt)), 1e-12);
        expect_rel(act(true, Recompute::None), sbh / tt * (34 + 5 * a * s / h), 1e-12);
        expect_rel(act(true, Recompute::Selective), 34 * sbh / tt, 1e-12);
        expect_rel(act(false, Recompute::Selective), sbh * (10 + 24 / tt), 1e-12);
        expect_rel(act(false, Recompute::Full), 2 * sbh, 1e-12);
        expect_rel(act(true, Recompute::Full), 2 * sbh / tt, 1e-12);
      }
    }
  }
}

TEST(Activations, Gpt3PerLayerMagnitude) {
  // GPT-3, b = 1, t = 8 with SP: (s·h/8)·(34 + 5·96·2048/12288) = 3145728·114 bytes ≈ 359 MB.
  const TransformerModel m = model_preset("gpt3-175b");
  EXPECT_EQ(activation_bytes_per_layer(m, 1, 8, true, Recompute::None), 2048LL * 12288 / 8 * 114);
}

TEST(Activations, Fp32DoublesElementsNotMasks) {
  TransformerModel m = gpt_model("x", 2, 256, 4, 128, 1000, DType::FP32);
  const double sbh = 128.0 * 256, att = 4.0 * 128 * 128;
  // Elements 16·sbh + 2·att at 4 bytes, masks 2·sbh + att at 1 byte.
  EXPECT_EQ(activation_bytes_per_layer(m, 1, 1, false, Recompute::None), std::llround(66 * sbh + 9 * att));
  EXPECT_THROW(activation_bytes_per_layer(m, 0, 1, false, Recompute::None), InvalidArgument);
}

TEST(Activations, Fp8KeepsTheLinearInputsInOneByte) {
  TransformerModel m = gpt_model("x", 2, 256, 4, 128, 1000, DType::FP8);
  const TransformerModel bf16 = gpt_model("x", 2, 256, 4, 128, 1000, DType::BF16);
  const double sbh = 128.0 * 256, sbf = 4 * sbh;
  // Transformer Engine saves the QKV and FC1 inputs (the LayerNorms' FP8 outputs) and the projection's
  // and FC2's inputs in FP8: one byte each instead of two; the rest as BF16's.
  for (bool sp : {false, true}) {
    const double t = 2;
    const double saved = (sp ? 2 * sbh / t : 2 * sbh) + (sbh + sbf) / t;
    EXPECT_EQ(activation_bytes_per_layer(bf16, 1, 2, sp, Recompute::None) - activation_bytes_per_layer(m, 1, 2, sp, Recompute::None),
              std::llround(saved))
        << sp;
  }
  // Full recomputation keeps the BF16 layer input.
  EXPECT_EQ(activation_bytes_per_layer(m, 1, 1, false, Recompute::Full), activation_bytes_per_layer(bf16, 1, 1, false, Recompute::Full));
  EXPECT_EQ(activation_dtype(DType::FP8), DType::BF16);
  EXPECT_EQ(activation_dtype(DType::FP16), DType::FP16);
  EXPECT_EQ(activation_dtype(DType::FP32), DType::FP32);
}

// ---- ops and FLOPs -------------------------------------------------------------------------------

TEST(Flops, TrainingFlopsEqualNarayananFormulas) {
  for (const TransformerModel& m : shapes()) {
    for (std::int64_t B : {1, 512, 1536}) {
      SCOPED_TRACE(m.name + " B=" + std::to_string(B));
      const double l = d(m.layers), h = d(m.hidden), s = d(m.seq_len), V = d(m.vocab), b = d(B);
      expect_rel(training_flops(m, B, Recompute::None), 72 * b * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h)));
      expect_rel(training_flops(m, B, Recompute::Full), 96 * b * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h)));
      // Selective recomputation re-runs QKᵀ and ·V once more: 4·s²·h per layer per sequence.
      expect_rel(training_flops(m, B, Recompute::Selective),
                 72 * b * s * l * h * h + 16 * b * s * s * l * h + 6 * b * s * V * h);
    }
  }
}

TEST(Flops, Gpt3IterationMagnitude) {
  // GPT-3 175B at B = 1536 (3.1M tokens): about 6·175e9·3.1e6 ≈ 3.4·10^18 model FLOPs per iteration.
  const double f = training_flops(model_preset("gpt3-175b"), 1536, Recompute::None);
  EXPECT_GT(f, 3.2e18);
  EXPECT_LT(f, 3.6e18);
}

TEST(Ops, ForwardLayerShapesAndFlops) {
  const TransformerModel m = model_preset("gpt3-175b");
  const std::int64_t b = 2, s = m.seq_len, h = m.hidden, t = 8;
  const std::vector<OpCost> fwd = layer_forward_ops(m, {b, 8, false, 1});
  const OpCost& qkv = find_op(fwd, "qkv_fwd");
  EXPECT_EQ(qkv.kind, OpCost::Kind::Gemm);
  EXPECT_EQ((std::vector<std::int64_t>{qkv.m, qkv.n, qkv.k}), (std::vector<std::int64_t>{b * s, 3 * h / t, h}));
  EXPECT_DOUBLE_EQ(qkv.flops, 2.0 * d(b * s) * d(3 * h / t) * d(h));
  EXPECT_EQ(qkv.bytes, (b * s * h + h * 3 * h / t + b * s * 3 * h / t) * 2);
  const OpCost& proj = find_op(fwd, "proj_fwd");
  EXPECT_EQ((std::vector<std::int64_t>{proj.m, proj.n, proj.k}), (std::vector<std::int64_t>{b * s, h, h / t}));
  const OpCost& fc1 = find_op(fwd, "fc1_fwd");
  EXPECT_EQ((std::vector<std::int64_t>{fc1.m, fc1.n, fc1.k}), (std::vector<std::int64_t>{b * s, 4 * h / t, h}));
  const OpCost& fc2 = find_op(fwd, "fc2_fwd");
  EXPECT_EQ((std::vector<std::int64_t>{fc2.m, fc2.n, fc2.k}), (std::vector<std::int64_t>{b * s, h, 4 * h / t}));
  const OpCost& scores = find_op(fwd, "attn_scores_fwd");
  EXPECT_EQ(scores.kind, OpCost::Kind::Attention);
  EXPECT_EQ(scores.batch, b * m.heads / t);
  EXPECT_EQ((std::vector<std::int64_t>{scores.m, scores.n, scores.k}), (std::vector<std::int64_t>{s, s, h / m.heads}));
  // Per rank: (24·s·h² + 4·s²·h)·b / t.
  expect_rel(matmul_flops(fwd), (24.0 * d(s) * d(h) * d(h) + 4.0 * d(s) * d(s) * d(h)) * d(b) / d(t), 1e-12);
  for (const OpCost& op : fwd) {
    EXPECT_EQ(op.phase, OpCost::Phase::Forward) << op.name;
    EXPECT_EQ(op.name.substr(op.name.size() - 4), "_fwd");
    EXPECT_GT(op.bytes, 0) << op.name;
  }
}

TEST(Ops, BackwardIsTwiceForwardWithSeparateGradients) {
  for (const TransformerModel& m : shapes()) {
    SCOPED_TRACE(m.name);
    const OpContext c{1, 2, true, 1};
    const std::vector<OpCost> fwd = layer_forward_ops(m, c);
    const std::vector<OpCost> bwd = layer_backward_ops(m, c);
    expect_rel(matmul_flops(bwd), 2 * matmul_flops(fwd), 1e-12);
    for (const char* g : {"qkv", "proj", "fc1", "fc2"}) {
      const std::string name = g;
      const OpCost& f = find_op(fwd, name + "_fwd");
      const OpCost& dg = find_op(bwd, name + "_dgrad");
      const OpCost& wg = find_op(bwd, name + "_wgrad");
      EXPECT_DOUBLE_EQ(dg.flops, f.flops) << name;
      EXPECT_DOUBLE_EQ(wg.flops, f.flops) << name;
      EXPECT_EQ(dg.phase, OpCost::Phase::BackwardData);
      EXPECT_EQ(wg.phase, OpCost::Phase::BackwardWeight);
      // dX = dY·Wᵀ is m×k with inner n; dW = Xᵀ·dY is k×n with inner m.
      EXPECT_EQ((std::vector<std::int64_t>{dg.m, dg.n, dg.k}), (std::vector<std::int64_t>{f.m, f.k, f.n}));
      EXPECT_EQ((std::vector<std::int64_t>{wg.m, wg.n, wg.k}), (std::vector<std::int64_t>{f.k, f.n, f.m}));
    }
    const auto head_fwd = head_forward_ops(m, c);
    const auto head_bwd = head_backward_ops(m, c);
    expect_rel(matmul_flops(head_bwd), 2 * matmul_flops(head_fwd), 1e-12);
    EXPECT_EQ(matmul_flops(embedding_forward_ops(m, c)), 0.0);
  }
}

// Backward's element-wise passes as PyTorch's autograd runs a Megatron-LM layer: each LayerNorm's two
// kernels (γ/β partial sums reading dy and x; dx reading them again and writing dx), autograd's sum of a
// LayerNorm input's two gradients, and one column-sum pass per bias gradient; none without biases.
TEST(Ops, BackwardLayerNormAndBiasGradientPasses) {
  TransformerModel m = model_preset("gpt3-6.7b");
  const OpContext c{2, 4, true, 1};
  const double tokens = 2.0 * 2048, h = d(m.hidden), n_sp = tokens / 4 * h, e = 2;
  const auto bwd = layer_backward_ops(m, c);
  for (const std::string ln : {"ln1", "ln2"}) {
    EXPECT_EQ(find_op(bwd, ln + "_gamma_beta_bwd").bytes, std::llround(2 * n_sp * e)) << ln;
    EXPECT_EQ(find_op(bwd, ln + "_gamma_beta_bwd").phase, OpCost::Phase::BackwardWeight);
    EXPECT_EQ(find_op(bwd, ln + "_bwd").bytes, std::llround(3 * n_sp * e + h * e)) << ln;
    EXPECT_EQ(find_op(bwd, ln + "_grad_sum_bwd").bytes, std::llround(3 * n_sp * e)) << ln;
  }
  // The final LayerNorm's input feeds nothing else: two passes, no sum.
  const auto head_bwd = head_backward_ops(m, c);
  EXPECT_EQ(find_op(head_bwd, "final_ln_gamma_beta_bwd").bytes, std::llround(2 * n_sp * e));
  EXPECT_FALSE(std::any_of(head_bwd.begin(), head_bwd.end(), [](const OpCost& op) { return op.name.ends_with("grad_sum_bwd"); }));
  // Bias gradients read their GEMM's output gradient: QKV's and FC1's whole sequence on a t-th of the
  // columns, the projection's and FC2's (after the reduce-scatter) a t-th of the sequence on all h.
  EXPECT_EQ(find_op(bwd, "qkv_bias_bwd").bytes, std::llround((tokens * 3 * h / 4 + 3 * h / 4) * e));
  EXPECT_EQ(find_op(bwd, "fc1_bias_bwd").bytes, std::llround((tokens * 4 * h / 4 + 4 * h / 4) * e));
  for (const char* name : {"proj_bias_bwd", "fc2_bias_bwd"}) {
    EXPECT_EQ(find_op(bwd, name).bytes, std::llround((n_sp + h) * e)) << name;
    EXPECT_EQ(find_op(bwd, name).phase, OpCost::Phase::BackwardWeight);
  }
  // Forward: the QKV bias added after its GEMM, the context copied to the projection's layout; backward:
  // the Q, K, V gradients concatenated. Flash attention has neither copy.
  const auto fwd = layer_forward_ops(m, c);
  EXPECT_EQ(find_op(fwd, "qkv_bias_fwd").bytes, std::llround((2 * tokens * 3 * h / 4 + 3 * h / 4) * e));
  EXPECT_EQ(find_op(fwd, "attn_context_permute_fwd").bytes, std::llround(2 * tokens * h / 4 * e));
  EXPECT_EQ(find_op(bwd, "qkv_grad_cat_bwd").bytes, std::llround(2 * tokens * 3 * h / 4 * e));
  TransformerModel flash = m;
  flash.attention = AttentionImpl::Flash;
  for (const auto& ops : {layer_forward_ops(flash, c), layer_backward_ops(flash, c)}) {
    for (const OpCost& op : ops) {
      EXPECT_TRUE(op.name.find("permute") == std::string::npos && op.name.find("_cat_") == std::string::npos) << op.name;
    }
  }
  m.bias = false;
  for (const OpCost& op : layer_backward_ops(m, c)) EXPECT_FALSE(op.name.ends_with("_bias_bwd")) << op.name;
  for (const OpCost& op : layer_forward_ops(m, c)) EXPECT_FALSE(op.name.ends_with("_bias_fwd")) << op.name;
  m.fused_elementwise = false;
  for (const OpCost& op : layer_forward_ops(m, c)) EXPECT_FALSE(op.name.ends_with("_bias_fwd")) << op.name;
}

TEST(Ops, TensorParallelRanksShareTheWork) {
  const TransformerModel m = model_preset("gpt3-175b");
  const double one = matmul_flops(layer_forward_ops(m, {1, 1, false, 1}));
  for (int t : {2, 4, 8}) {
    expect_rel(t * matmul_flops(layer_forward_ops(m, {1, t, false, 1})), one, 1e-12);
    expect_rel(t * matmul_flops(head_forward_ops(m, {1, t, false, 1})), matmul_flops(head_forward_ops(m, {1, 1, false, 1})),
               1e-12);
  }
  EXPECT_THROW(layer_forward_ops(m, {1, 7, false, 1}), InvalidArgument);
}

TEST(Ops, SequenceParallelSplitsTheMemoryBoundOps) {
  const TransformerModel m = model_preset("gpt3-6.7b");
  const auto plain = layer_forward_ops(m, {1, 4, false, 1});
  const auto sp = layer_forward_ops(m, {1, 4, true, 1});
  // Split by t = 4, except the parameter reads: LayerNorm γ and β (2h elements), the bias (h).
  const std::int64_t h = m.hidden;
  for (const char* name : {"ln1_fwd", "ln2_fwd"}) {
    EXPECT_EQ(find_op(sp, name).bytes * 4 - 3 * 2 * h * 2, find_op(plain, name).bytes) << name;
  }
  for (const char* name : {"attn_residual_fwd", "mlp_residual_fwd"}) {
    EXPECT_EQ(find_op(sp, name).bytes * 4 - 3 * h * 2, find_op(plain, name).bytes) << name;
  }
  // Ops already split by heads or FFN columns do not change, nor does any GEMM.
  for (const char* name : {"softmax_fwd", "gelu_fwd", "qkv_fwd", "fc2_fwd"}) {
    EXPECT_EQ(find_op(sp, name), find_op(plain, name)) << name;
  }
  EXPECT_EQ(matmul_flops(sp), matmul_flops(plain));
}

// Context parallelism (OpContext::cp): each rank's ops see s/cp tokens; attention runs its s/cp queries
// against all s keys, so every FLOP divides by cp; flash reads the whole sequence's K and V.
TEST(Ops, ContextParallelRanksShareEveryOpsWork) {
  TransformerModel m = model_preset("gpt3-1.3b");  // h 2048, 16 heads, s 2048
  const OpContext one{2, 2, true, 1, 1}, four{2, 2, true, 1, 4};
  for (const auto& [a, b] : {std::pair{layer_forward_ops(m, one), layer_forward_ops(m, four)},
                             std::pair{layer_backward_ops(m, one), layer_backward_ops(m, four)}}) {
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) expect_rel(4 * b[i].flops, a[i].flops, 1e-12);
  }
  const auto fwd = layer_forward_ops(m, four);
  EXPECT_EQ(find_op(fwd, "qkv_fwd").m, 2 * 2048 / 4);
  const OpCost& scores = find_op(fwd, "attn_scores_fwd");
  EXPECT_EQ((std::vector<std::int64_t>{scores.m, scores.n, scores.k}), (std::vector<std::int64_t>{512, 2048, 128}));
  const auto bwd = layer_backward_ops(m, four);
  const OpCost& dk = find_op(bwd, "attn_scores_dgrad_k");  // every key's gradient
  EXPECT_EQ((std::vector<std::int64_t>{dk.m, dk.n, dk.k}), (std::vector<std::int64_t>{2048, 128, 512}));
  m.attention = AttentionImpl::Flash;
  const auto flash_fwd = layer_forward_ops(m, four);
  const OpCost& flash = find_op(flash_fwd, "flash_attn_fwd");
  EXPECT_EQ((std::vector<std::int64_t>{flash.m, flash.n, flash.k}), (std::vector<std::int64_t>{512, 2048, 128}));
  EXPECT_DOUBLE_EQ(flash.flops, 2.0 * (2 * 16 / 2) * 512 * 2048 * 128);
  const double local = 2.0 * 512 * 2048 / 2 * 2;  // Q or O: b·(s/cp)·h/t elements of 2 bytes
  EXPECT_EQ(flash.bytes, std::llround(2 * local + 2 * 4 * local + 4.0 * 16 * 512));
  EXPECT_THROW(layer_forward_ops(m, {1, 1, false, 1, 3}), InvalidArgument);  // 3 does not divide 2048
  EXPECT_THROW(layer_forward_ops(m, {1, 8, true, 1, 512}), InvalidArgument);  // s/cp = 4 tokens over 8 ranks
}

// Every term divides by cp: a rank keeps its own keys and values only (the backward gathers the
// others' again).
TEST(Activations, ContextParallelDividesThem) {
  TransformerModel m = gpt_model("gqa", 4, 1024, 16, 4096, 1000);
  m.kv_heads = 4;
  for (Recompute r : {Recompute::None, Recompute::Selective, Recompute::Full}) {
    const double one = static_cast<double>(activation_bytes_per_layer(m, 2, 2, true, r));
    EXPECT_NEAR(static_cast<double>(activation_bytes_per_layer(m, 2, 2, true, r, 4)), one / 4, 1.0) << recompute_name(r);
  }
  EXPECT_EQ(activation_bytes_per_layer(m, 2, 2, true, Recompute::None, 1), activation_bytes_per_layer(m, 2, 2, true, Recompute::None));
  EXPECT_THROW(activation_bytes_per_layer(m, 2, 2, true, Recompute::None, 0), InvalidArgument);
}

TEST(Ops, RecomputeOps) {
  const TransformerModel m = model_preset("gpt3-1.3b");
  const OpContext c{1, 1, false, 1};
  EXPECT_TRUE(layer_recompute_ops(m, c, Recompute::None).empty());
  const auto full = layer_recompute_ops(m, c, Recompute::Full);
  EXPECT_EQ(full.size(), layer_forward_ops(m, c).size());
  EXPECT_EQ(matmul_flops(full), matmul_flops(layer_forward_ops(m, c)));
  const auto sel = layer_recompute_ops(m, c, Recompute::Selective);
  std::vector<std::string> names;
  for (const OpCost& op : sel) {
    names.push_back(op.name);
    EXPECT_EQ(op.phase, OpCost::Phase::Recompute);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"attn_scores_recompute", "softmax_recompute", "attn_dropout_recompute",
                                             "attn_context_recompute", "attn_context_permute_recompute"}));
  const double s = d(m.seq_len), h = d(m.hidden);
  EXPECT_DOUBLE_EQ(matmul_flops(sel), 4 * s * s * h);
}

TEST(Ops, MixtureOfExpertsScalesFfnByTopK) {
  TransformerModel dense = model_preset("gpt3-1.3b");
  TransformerModel moe = dense;
  moe.experts = 8;
  moe.top_k = 2;
  const OpContext c{2, 1, false, 4};
  const auto d_ops = layer_forward_ops(dense, {2, 1, false, 1});
  const auto m_ops = layer_forward_ops(moe, c);
  const double ffn = find_op(d_ops, "fc1_fwd").flops + find_op(d_ops, "fc2_fwd").flops;
  const double experts = find_op(m_ops, "expert_fc1_fwd").flops + find_op(m_ops, "expert_fc2_fwd").flops;
  EXPECT_DOUBLE_EQ(experts, 2 * ffn);
  const OpCost& fc1 = find_op(m_ops, "expert_fc1_fwd");
  EXPECT_EQ(fc1.batch, 2);  // 8 experts over ep = 4
  // Each local expert sees b·s·k·ep/E = 2·2048·2·4/8 tokens.
  EXPECT_EQ(fc1.m, 2 * 2048 * 2 * 4 / 8);
  const OpCost& router = find_op(m_ops, "router_fwd");
  EXPECT_EQ((std::vector<std::int64_t>{router.m, router.n, router.k}), (std::vector<std::int64_t>{2 * 2048, 8, 2048}));
  expect_rel(matmul_flops(layer_backward_ops(moe, c)), 2 * matmul_flops(m_ops), 1e-12);
}

// ---- attention and element-wise implementations ---------------------------------------------------

std::vector<std::string> names_of(const std::vector<OpCost>& ops) {
  std::vector<std::string> out;
  for (const OpCost& op : ops) out.push_back(op.name);
  return out;
}

bool has_op(const std::vector<OpCost>& ops, const std::string& name) {
  for (const OpCost& op : ops) {
    if (op.name == name) return true;
  }
  return false;
}

TEST(AttentionImpl, Names) {
  for (const auto& n : attention_names()) EXPECT_EQ(attention_name(parse_attention(n)), n);
  EXPECT_EQ(attention_names(),
            (std::vector<std::string>{"unfused", "fused", "flash", "flash1", "flash2", "flash3", "cudnn"}));
  EXPECT_THROW(parse_attention("sdpa"), UnknownName);
  for (AttentionImpl a : {AttentionImpl::Unfused, AttentionImpl::Fused}) EXPECT_FALSE(is_flash(a));
  const std::pair<AttentionImpl, FlashKernel> kernels[] = {{AttentionImpl::Flash, FlashKernel::Newest},
                                                           {AttentionImpl::Flash1, FlashKernel::Flash1},
                                                           {AttentionImpl::Flash2, FlashKernel::Flash2},
                                                           {AttentionImpl::Flash3, FlashKernel::Flash3},
                                                           {AttentionImpl::Cudnn, FlashKernel::Cudnn}};
  for (const auto& [a, kernel] : kernels) {
    EXPECT_TRUE(is_flash(a));
    EXPECT_EQ(flash_kernel(a), kernel);
  }
  EXPECT_EQ(flash_kernel_title(FlashKernel::Cudnn), "cuDNN attention");
  const TransformerModel m;
  EXPECT_EQ(m.attention, AttentionImpl::Fused);  // the defaults: Megatron with its fused kernels
  EXPECT_TRUE(m.fused_elementwise);
}

TEST(AttentionImpl, UnfusedAddsScaleAndMaskPassesOverTheScores) {
  TransformerModel m = model_preset("gpt3-1.3b");
  const OpContext c{2, 2, false, 1};
  const auto fused = layer_forward_ops(m, c);
  m.attention = AttentionImpl::Unfused;
  const auto unfused = layer_forward_ops(m, c);
  EXPECT_EQ(unfused.size(), fused.size() + 2);
  const double att = 2.0 * (16 / 2) * 2048.0 * 2048.0;  // b·(a/t)·s² scores
  EXPECT_EQ(find_op(unfused, "attn_scale_fwd").bytes, std::llround(2 * att * 2));
  EXPECT_EQ(find_op(unfused, "attn_mask_fwd").bytes, std::llround(2 * att * 2));
  EXPECT_EQ(matmul_flops(unfused), matmul_flops(fused));
  const auto bwd = layer_backward_ops(m, c);
  EXPECT_TRUE(has_op(bwd, "attn_mask_bwd"));
  EXPECT_TRUE(has_op(bwd, "attn_scale_bwd"));
  EXPECT_EQ(names_of(layer_recompute_ops(m, c, Recompute::Selective)),
            (std::vector<std::string>{"attn_scores_recompute", "attn_scale_recompute", "attn_mask_recompute",
                                      "softmax_recompute", "attn_dropout_recompute", "attn_context_recompute",
                                      "attn_context_permute_recompute"}));
  // What is stored does not change: the softmax output, dropout mask and output.
  EXPECT_EQ(activation_bytes_per_layer(m, 2, 2, false, Recompute::None),
            activation_bytes_per_layer(model_preset("gpt3-1.3b"), 2, 2, false, Recompute::None));
}

TEST(AttentionImpl, FlashIsOneKernelWithNoScoresInMemory) {
  TransformerModel m = model_preset("gpt3-1.3b");
  const OpContext c{2, 2, false, 1};
  const TransformerModel fused_model = m;
  m.attention = AttentionImpl::Flash;
  const auto fwd = layer_forward_ops(m, c);
  for (const char* gone : {"attn_scores_fwd", "softmax_fwd", "attn_dropout_fwd", "attn_context_fwd"}) {
    EXPECT_FALSE(has_op(fwd, gone)) << gone;
  }
  const OpCost& flash = find_op(fwd, "flash_attn_fwd");
  EXPECT_TRUE(flash.flash);
  EXPECT_EQ(flash.kind, OpCost::Kind::Attention);
  EXPECT_EQ((std::vector<std::int64_t>{flash.m, flash.n, flash.k, flash.batch}),
            (std::vector<std::int64_t>{2048, 2048, 128, 2 * 16 / 2}));
  // The causal half of QKᵀ and ·V: 2·b·(a/t)·s²·(h/a).
  const double causal = 2.0 * (2 * 16 / 2) * 2048.0 * 2048.0 * 128;
  EXPECT_DOUBLE_EQ(flash.flops, causal);
  // Reads Q, K, V, writes O (b·s·h/t each) and the FP32 log-sum-exp; nothing s²-sized.
  const double qkvo = 2.0 * 2048 * 2048 / 2 * 2;
  EXPECT_EQ(flash.bytes, std::llround(4 * qkvo + 4.0 * 16 * 2048));
  const auto bwd = layer_backward_ops(m, c);
  const OpCost& flash_bwd = find_op(bwd, "flash_attn_bwd");
  EXPECT_DOUBLE_EQ(flash_bwd.flops, 2.5 * causal);  // the scores recomputed: 5 matmuls against 2
  EXPECT_EQ(flash_bwd.phase, OpCost::Phase::BackwardData);
  EXPECT_FALSE(has_op(bwd, "softmax_bwd"));
  EXPECT_EQ(names_of(layer_recompute_ops(m, c, Recompute::Selective)), (std::vector<std::string>{"flash_attn_recompute"}));
  // No s²-sized activations: only the log-sum-exp (4 bytes a row) instead of 5·a·s²·b.
  const Bytes none = activation_bytes_per_layer(m, 2, 2, false, Recompute::None);
  EXPECT_EQ(none, activation_bytes_per_layer(m, 2, 2, false, Recompute::Selective) + std::llround(4.0 * 16 * 2048 * 2 / 2));
  EXPECT_LT(none, activation_bytes_per_layer(fused_model, 2, 2, false, Recompute::None));
  // Model FLOPs are the algorithm's, whatever runs it.
  for (Recompute r : {Recompute::None, Recompute::Selective, Recompute::Full}) {
    EXPECT_EQ(training_flops(m, 8, r), training_flops(fused_model, 8, r));
  }
  // A named kernel changes the kernel's rate only (sim/compute_model.hpp): the same ops, tagged.
  for (AttentionImpl named : {AttentionImpl::Flash1, AttentionImpl::Cudnn}) {
    TransformerModel first = m;
    first.attention = named;
    EXPECT_EQ(activation_bytes_per_layer(first, 2, 2, false, Recompute::None), none);
    const auto first_fwd = layer_forward_ops(first, c);
    ASSERT_EQ(first_fwd.size(), fwd.size());
    for (std::size_t i = 0; i < fwd.size(); ++i) {
      OpCost tagged = fwd[i];
      if (tagged.flash) tagged.flash_kernel = flash_kernel(named);
      EXPECT_EQ(first_fwd[i], tagged) << fwd[i].name;
    }
  }
}

TEST(AttentionImpl, UnfusedElementwiseOpsAreSeparatePasses) {
  TransformerModel m = model_preset("gpt3-1.3b");
  const OpContext c{1, 2, true, 1};
  const auto fused_fwd = layer_forward_ops(m, c);
  m.fused_elementwise = false;
  const auto fwd = layer_forward_ops(m, c);
  const auto index = [&](const std::string& name) {
    const auto names = names_of(fwd);
    return std::find(names.begin(), names.end(), name) - names.begin();
  };
  for (const char* op : {"fc1_bias_fwd", "attn_bias_fwd", "attn_out_dropout_fwd", "mlp_bias_fwd", "mlp_out_dropout_fwd"}) {
    EXPECT_TRUE(has_op(fwd, op)) << op;
  }
  EXPECT_LT(index("fc1_bias_fwd"), index("gelu_fwd"));
  EXPECT_LT(index("attn_out_dropout_fwd"), index("attn_residual_fwd"));
  EXPECT_EQ(fwd.size(), fused_fwd.size() + 5);
  Bytes fused_bytes = 0, bytes = 0;
  for (const OpCost& op : fused_fwd) fused_bytes += op.is_matmul() ? 0 : op.bytes;
  for (const OpCost& op : fwd) bytes += op.is_matmul() ? 0 : op.bytes;
  EXPECT_GT(bytes, fused_bytes);  // more passes over the same tensors
  EXPECT_EQ(matmul_flops(fwd), matmul_flops(fused_fwd));
  const auto bwd = layer_backward_ops(m, c);
  for (const char* op : {"fc1_bias_bwd", "proj_bias_bwd", "fc2_bias_bwd", "attn_residual_bwd", "mlp_residual_bwd"}) {
    EXPECT_TRUE(has_op(bwd, op)) << op;
  }
  // MoE: the bias belongs to the expert GEMM.
  m.experts = 4;
  EXPECT_TRUE(has_op(layer_forward_ops(m, c), "expert_fc1_bias_fwd"));
}

// Without dropout (TransformerModel::dropout = false, Llama's and MPT's configurations): no 1-byte
// masks in the activations, the unfused attention core keeps its softmax output alone (2·a·s²·b for
// 5·a·s²·b), no dropout passes, the residual adds write no mask and have no backward pass, and the
// embedding's pass is the learned positions' add alone. The GEMMs and their FLOPs do not change.
TEST(Dropout, WithoutItTheMasksAndItsPassesDropOut) {
  TransformerModel on = model_preset("gpt3-1.3b");
  TransformerModel off = on;
  off.dropout = false;
  const int t = 2;
  const OpContext c{1, t, true, 1};
  const double s = d(on.seq_len), h = d(on.hidden), a = d(on.heads);
  const double sbh = s * h, att = a * s * s;
  // Two hidden-size masks (sequence-sharded with SP); the s²-sized core: its mask and dropout output.
  const auto saved = [&](const TransformerModel& m, Recompute r) { return d(activation_bytes_per_layer(m, 1, t, true, r)); };
  expect_rel(saved(on, Recompute::None) - saved(off, Recompute::None), 2 * sbh / t + 3 * att / t, 1e-12);
  expect_rel(saved(off, Recompute::None), sbh / t * (32 + 2 * a * s / h), 1e-12);
  expect_rel(saved(on, Recompute::Selective) - saved(off, Recompute::Selective), 2 * sbh / t, 1e-12);
  EXPECT_EQ(saved(on, Recompute::Full), saved(off, Recompute::Full));
  TransformerModel flash = off;
  flash.attention = AttentionImpl::Flash;
  TransformerModel flash_on = on;
  flash_on.attention = AttentionImpl::Flash;
  expect_rel(saved(flash_on, Recompute::None) - saved(flash, Recompute::None), 2 * sbh / t, 1e-12);

  const double n = s * h / t;  // what a residual add sees under SP
  for (bool fused : {true, false}) {
    on.fused_elementwise = off.fused_elementwise = fused;
    SCOPED_TRACE(fused ? "fused" : "unfused");
    const auto fwd_on = layer_forward_ops(on, c), fwd_off = layer_forward_ops(off, c);
    const auto bwd_on = layer_backward_ops(on, c), bwd_off = layer_backward_ops(off, c);
    std::vector<std::string> gone_fwd = {"attn_dropout_fwd"}, gone_bwd = {"attn_dropout_bwd", "attn_residual_bwd", "mlp_residual_bwd"};
    if (!fused) gone_fwd.insert(gone_fwd.end(), {"attn_out_dropout_fwd", "mlp_out_dropout_fwd"});
    for (const std::string& op : gone_fwd) {
      EXPECT_TRUE(has_op(fwd_on, op)) << op;
      EXPECT_FALSE(has_op(fwd_off, op)) << op;
    }
    for (const std::string& op : gone_bwd) {
      EXPECT_TRUE(has_op(bwd_on, op)) << op;
      EXPECT_FALSE(has_op(bwd_off, op)) << op;
    }
    EXPECT_EQ(fwd_off.size(), fwd_on.size() - gone_fwd.size());
    EXPECT_EQ(bwd_off.size(), bwd_on.size() - gone_bwd.size());
    // The residual add itself stays; fused, it no longer writes the mask.
    for (const char* add : {"attn_residual_fwd", "mlp_residual_fwd"}) {
      EXPECT_EQ(find_op(fwd_on, add).bytes - find_op(fwd_off, add).bytes, fused ? std::llround(n) : 0) << add;
    }
    // The bias gradients the residual backward was followed by are still there.
    for (const char* bias : {"proj_bias_bwd", "fc2_bias_bwd"}) EXPECT_TRUE(has_op(bwd_off, bias)) << bias;
    EXPECT_EQ(matmul_flops(fwd_off), matmul_flops(fwd_on));
    EXPECT_EQ(matmul_flops(bwd_off), matmul_flops(bwd_on));
  }
  EXPECT_FALSE(has_op(layer_recompute_ops(off, c, Recompute::Selective), "attn_dropout_recompute"));

  // The embedding: learned positions keep their add (two reads, a write) and its gradient's
  // accumulation (a read, a write); RoPE has no pass besides the lookup.
  const double n_sp = s * h / t;
  EXPECT_EQ(find_op(embedding_forward_ops(off, c), "embedding_positions_fwd").bytes, std::llround(3 * n_sp * 2));
  EXPECT_EQ(find_op(embedding_backward_ops(off, c), "embedding_positions_bwd").bytes, std::llround(2 * n_sp * 2));
  EXPECT_FALSE(has_op(embedding_forward_ops(off, c), "embedding_dropout_fwd"));
  TransformerModel rope = off;
  rope.positions = Positions::Rope;
  EXPECT_EQ(names_of(embedding_forward_ops(rope, c)), std::vector<std::string>{"embedding_lookup_fwd"});
  EXPECT_EQ(names_of(embedding_backward_ops(rope, c)), std::vector<std::string>{"embedding_wgrad"});
}

// The loss over the logits as each framework runs it: bytes per logit, forward and backward (LossImpl).
// Megatron-LM: FP32 cast (2 + 4), max (4), subtract (8), exp (8), sum (4), divide (8); backward multiply
// (8) and cast back (4 + 2). PyTorch under autocast: cast (6), log_softmax (8); backward zero-filled
// gradient (4), log_softmax backward (12), cast back (6). Fused: a read forward, a read and a write backward.
// FP32: no casts.
TEST(Loss, EachImplementationMovesItsPassesOverTheLogits) {
  for (const auto& n : loss_names()) EXPECT_EQ(loss_name(parse_loss(n)), n);
  EXPECT_EQ(loss_names(), (std::vector<std::string>{"megatron", "pytorch", "fused"}));
  EXPECT_THROW(parse_loss("apex"), UnknownName);
  EXPECT_EQ(TransformerModel{}.loss, LossImpl::Megatron);
  TransformerModel m = model_preset("gpt3-1.3b");
  const OpContext c{2, 4, false, 1};
  const double tokens = 2.0 * 2048, logits = tokens * 51200 / 4;
  const auto bytes = [&](LossImpl l, DType dt, bool forward) {
    m.loss = l;
    m.dtype = dt;
    return forward ? find_op(head_forward_ops(m, c), "cross_entropy_fwd").bytes
                   : find_op(head_backward_ops(m, c), "cross_entropy_bwd").bytes;
  };
  const double loss_out = 4 * tokens;  // one FP32 loss per token
  EXPECT_EQ(bytes(LossImpl::Megatron, DType::BF16, true), std::llround(logits * 38 + loss_out));
  EXPECT_EQ(bytes(LossImpl::Megatron, DType::BF16, false), std::llround(logits * 14));
  EXPECT_EQ(bytes(LossImpl::Pytorch, DType::BF16, true), std::llround(logits * 14 + loss_out));
  EXPECT_EQ(bytes(LossImpl::Pytorch, DType::BF16, false), std::llround(logits * 22));
  EXPECT_EQ(bytes(LossImpl::Fused, DType::BF16, true), std::llround(logits * 2 + loss_out));
  EXPECT_EQ(bytes(LossImpl::Fused, DType::BF16, false), std::llround(logits * 4));
  EXPECT_EQ(bytes(LossImpl::Megatron, DType::FP32, true), std::llround(logits * 32 + loss_out));
  EXPECT_EQ(bytes(LossImpl::Pytorch, DType::FP32, false), std::llround(logits * 16));
}

// ---- JSON ----------------------------------------------------------------------------------------

// The ConfigError `j` raises; one with path "(no error)" when it is accepted.
ConfigError model_config_error(const json& j) {
  try {
    model_from_json(j);
  } catch (const ConfigError& e) {
    return e;
  }
  return ConfigError("(no error)", "(no error)");
}

std::string config_error_path(const json& j) { return model_config_error(j).path(); }
std::string config_error_message(const json& j) { return model_config_error(j).what(); }

// FP8 is Transformer Engine's recipe (model.hpp): the four linear GEMMs in FP8 with BF16 outputs,
// everything else the BF16 model's, and TE's quantisation passes around those GEMMs.
TEST(Fp8, LinearGemmsOnlyWithTransformerEnginesCasts) {
  TransformerModel m = gpt_model("x", 2, 256, 4, 128, 1000, DType::FP8);
  m.bias = false;
  TransformerModel bf16 = m;
  bf16.dtype = DType::BF16;
  const double T = 128, h = 256, f = 1024, t = 2;
  for (bool sp : {false, true}) {
    SCOPED_TRACE(sp);
    const OpContext c{1, 2, sp, 1, 1};
    const auto fwd = layer_forward_ops(m, c), bwd = layer_backward_ops(m, c);
    const auto ref_fwd = layer_forward_ops(bf16, c), ref_bwd = layer_backward_ops(bf16, c);
    for (const char* g : {"qkv_fwd", "proj_fwd", "fc1_fwd", "fc2_fwd", "qkv_dgrad", "fc2_wgrad"}) {
      const auto& ops = std::string(g).ends_with("_fwd") ? fwd : bwd;
      const auto& ref = std::string(g).ends_with("_fwd") ? ref_fwd : ref_bwd;
      const OpCost& op = find_op(ops, g);
      EXPECT_EQ(op.dtype, DType::FP8) << g;
      EXPECT_EQ(op.flops, find_op(ref, g).flops) << g;
      // FP8 inputs, a BF16 output.
      EXPECT_EQ(op.bytes, std::llround(d(op.m) * d(op.k) + d(op.k) * d(op.n) + 2 * d(op.m) * d(op.n))) << g;
    }
    // Attention, element-wise ops and their bytes are BF16's; LayerNorm writes its output in FP8.
    EXPECT_EQ(find_op(fwd, "softmax_fwd"), find_op(ref_fwd, "softmax_fwd"));
    EXPECT_EQ(find_op(fwd, "gelu_fwd"), find_op(ref_fwd, "gelu_fwd"));
    const double n = T / (sp ? t : 1) * h;
    EXPECT_EQ(find_op(ref_fwd, "ln1_fwd").bytes - find_op(fwd, "ln1_fwd").bytes, std::llround(n));
    // The projection's and FC2's inputs are cast (and, without SP, transposed too): read 2, write 1 (+1).
    const double proj_in = T * h / t, fc2_in = T * f / t;
    EXPECT_EQ(find_op(fwd, "proj_cast_fwd").bytes, std::llround(proj_in * (sp ? 3 : 4)));
    EXPECT_EQ(find_op(fwd, "fc2_cast_fwd").bytes, std::llround(fc2_in * (sp ? 3 : 4)));
    // Backward: every output gradient cast and transposed (read 2, write 1 + 1), the row-parallel ones
    // under SP cast on this rank's shard (read 2, write 1, over T·h/t) and transposed after the gather.
    const double row_out = T * h;
    const double row_bytes = sp ? row_out / t * 3 + 2 * row_out : row_out * 4;
    EXPECT_EQ(find_op(bwd, "proj_grad_cast_bwd").bytes, std::llround(row_bytes));
    EXPECT_EQ(find_op(bwd, "fc2_grad_cast_bwd").bytes, std::llround(row_bytes));
    EXPECT_EQ(find_op(bwd, "qkv_grad_cast_bwd").bytes, std::llround(T * 3 * h / t * 4));
    EXPECT_EQ(find_op(bwd, "fc1_grad_cast_bwd").bytes, std::llround(T * f / t * 4));
    // The LayerNorms' FP8 outputs are transposed in backward (T·h, gathered); the projection's and FC2's
    // inputs only under SP (the forward transposed them otherwise).
    EXPECT_EQ(find_op(bwd, "qkv_input_transpose_bwd").bytes, std::llround(2 * T * h));
    EXPECT_EQ(find_op(bwd, "fc1_input_transpose_bwd").bytes, std::llround(2 * T * h));
    const auto has = [&](const char* name) {
      return std::any_of(bwd.begin(), bwd.end(), [&](const OpCost& op) { return op.name == name; });
    };
    EXPECT_EQ(has("proj_input_transpose_bwd"), sp);
    EXPECT_EQ(has("fc2_input_transpose_bwd"), sp);
    if (sp) {
      EXPECT_EQ(find_op(bwd, "fc2_input_transpose_bwd").bytes, std::llround(2 * fc2_in));
    }
  }
  // Sequence parallelism at t = 1 is none, for these passes as for everything else.
  EXPECT_EQ(layer_forward_ops(m, {1, 1, true, 1, 1}), layer_forward_ops(m, {1, 1, false, 1, 1}));
  EXPECT_EQ(layer_backward_ops(m, {1, 1, true, 1, 1}), layer_backward_ops(m, {1, 1, false, 1, 1}));
  // Outside the layers: the output layer and the loss are BF16's, whatever the model's dtype.
  const OpContext c{1, 2, false, 1, 1};
  EXPECT_EQ(head_forward_ops(m, c), head_forward_ops(bf16, c));
  EXPECT_EQ(head_backward_ops(m, c), head_backward_ops(bf16, c));
  EXPECT_EQ(embedding_forward_ops(m, c), embedding_forward_ops(bf16, c));
  // A 16-bit model has none of these passes.
  for (const auto& list : model_op_lists(bf16, c, Recompute::Full)) {
    for (const OpCost& op : list) EXPECT_EQ(op.name.find("cast"), std::string::npos) << op.name;
  }
  // Full recomputation re-runs the casts with the forward.
  const auto re = layer_recompute_ops(m, c, Recompute::Full);
  EXPECT_EQ(find_op(re, "proj_cast_recompute").bytes, find_op(layer_forward_ops(m, c), "proj_cast_fwd").bytes);
}

// Current scaling (Fp8Recipe::Current): each cast also reads its input for the amax (the local shard
// for the gathered gradients), and a norm writing FP8 writes BF16 that a quantise pass reads and casts;
// nothing else changes. Set only for an FP8 model, and it round-trips through JSON.
TEST(Fp8, CurrentScalingReadsEachCastInputForItsAmax) {
  TransformerModel delayed = gpt_model("x", 2, 256, 4, 128, 1000, DType::FP8);
  delayed.bias = false;
  TransformerModel current = delayed;
  current.fp8_recipe = Fp8Recipe::Current;
  EXPECT_EQ(delayed.fp8_scaling(), Fp8Recipe::Delayed);
  const double T = 128, h = 256, f = 1024, t = 2, e = 2;
  for (bool sp : {false, true}) {
    SCOPED_TRACE(sp);
    const OpContext c{1, 2, sp, 1, 1};
    const auto fwd = layer_forward_ops(current, c), bwd = layer_backward_ops(current, c);
    const auto ref_fwd = layer_forward_ops(delayed, c), ref_bwd = layer_backward_ops(delayed, c);
    ASSERT_EQ(fwd.size(), ref_fwd.size());
    ASSERT_EQ(bwd.size(), ref_bwd.size());
    const auto extra = [](const std::vector<OpCost>& ops, const std::vector<OpCost>& ref, const char* name) {
      return find_op(ops, name).bytes - find_op(ref, name).bytes;
    };
    const double n = T / (sp ? t : 1) * h;
    EXPECT_EQ(extra(fwd, ref_fwd, "ln1_fwd"), std::llround(n * 2 * e));  // BF16 out, read back, then FP8
    EXPECT_EQ(extra(fwd, ref_fwd, "ln2_fwd"), std::llround(n * 2 * e));
    EXPECT_EQ(extra(fwd, ref_fwd, "proj_cast_fwd"), std::llround(T * h / t * e));
    EXPECT_EQ(extra(fwd, ref_fwd, "fc2_cast_fwd"), std::llround(T * f / t * e));
    const double row_cast = sp ? T * h / t : T * h;  // the row-parallel gradients: the shard under SP
    EXPECT_EQ(extra(bwd, ref_bwd, "proj_grad_cast_bwd"), std::llround(row_cast * e));
    EXPECT_EQ(extra(bwd, ref_bwd, "fc2_grad_cast_bwd"), std::llround(row_cast * e));
    EXPECT_EQ(extra(bwd, ref_bwd, "qkv_grad_cast_bwd"), std::llround(T * 3 * h / t * e));
    EXPECT_EQ(extra(bwd, ref_bwd, "fc1_grad_cast_bwd"), std::llround(T * f / t * e));
    for (std::size_t i = 0; i < fwd.size(); ++i) {
      const std::string& name = fwd[i].name;
      if (name.find("cast") == std::string::npos && name != "ln1_fwd" && name != "ln2_fwd") {
        EXPECT_EQ(fwd[i], ref_fwd[i]) << name;
      }
    }
    for (std::size_t i = 0; i < bwd.size(); ++i) {
      if (bwd[i].name.find("cast") == std::string::npos) {
        EXPECT_EQ(bwd[i], ref_bwd[i]) << bwd[i].name;
      }
    }
  }
  const std::string base = R"("layers": 2, "hidden": 64, "heads": 4, "seq_len": 16, "vocab": 100)";
  const std::string fp8 = "{" + base + R"(, "dtype": "fp8")";
  const TransformerModel read = model_from_json(json::parse(fp8 + R"(, "fp8_recipe": "current"})"));
  EXPECT_EQ(read.fp8_scaling(), Fp8Recipe::Current);
  EXPECT_EQ(model_to_json(read)["fp8_recipe"], "current");
  EXPECT_EQ(model_from_json(model_to_json(read)), read);
  EXPECT_FALSE(model_to_json(model_from_json(json::parse(fp8 + "}"))).contains("fp8_recipe"));
  EXPECT_EQ(fp8_recipe_names(), (std::vector<std::string>{"delayed", "current"}));
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "fp8_recipe": "current"})")), "/model/fp8_recipe");
  EXPECT_EQ(config_error_path(json::parse(fp8 + R"(, "fp8_recipe": "mx"})")), "/model/fp8_recipe");
  const std::string bf16 = config_error_message(json::parse("{" + base + R"(, "fp8_recipe": "delayed"})"));
  EXPECT_NE(bf16.find("\"bf16\""), std::string::npos) << bf16;
}

TEST(Fp8, ExpertGemmsCastTheirInputsAndGradients) {
  TransformerModel m = gpt_model("moe", 2, 256, 4, 128, 1000, DType::FP8);
  m.experts = 4;
  m.top_k = 2;
  const OpContext c{1, 1, false, 2, 1};
  const auto fwd = layer_forward_ops(m, c), bwd = layer_backward_ops(m, c);
  const double routed = 128.0 * 2, h = 256, f = 1024;
  EXPECT_EQ(find_op(fwd, "expert_fc1_fwd").dtype, DType::FP8);
  EXPECT_EQ(find_op(fwd, "router_fwd").dtype, DType::BF16);
  EXPECT_EQ(find_op(fwd, "expert_fc1_cast_fwd").bytes, std::llround(routed * h * 4));
  EXPECT_EQ(find_op(fwd, "expert_fc2_cast_fwd").bytes, std::llround(routed * f * 4));
  EXPECT_EQ(find_op(bwd, "expert_fc2_grad_cast_bwd").bytes, std::llround(routed * h * 4));
  EXPECT_EQ(find_op(bwd, "expert_fc1_grad_cast_bwd").bytes, std::llround(routed * f * 4));
  // ln2 feeds the router, which reads BF16: it writes BF16, and its output is stored as BF16.
  TransformerModel bf16 = m;
  bf16.dtype = DType::BF16;
  EXPECT_EQ(find_op(fwd, "ln2_fwd"), find_op(layer_forward_ops(bf16, c), "ln2_fwd"));
  EXPECT_LT(find_op(fwd, "ln1_fwd").bytes, find_op(layer_forward_ops(bf16, c), "ln1_fwd").bytes);
  const double sbh = 128.0 * 256, sbf = 4 * sbh;
  EXPECT_EQ(activation_bytes_per_layer(bf16, 1, 1, false, Recompute::None) - activation_bytes_per_layer(m, 1, 1, false, Recompute::None),
            std::llround(sbh + sbh + 2 * sbf));  // QKV's and the projection's inputs, FC2's (top_k of them)
}

TEST(ModelJson, ParsesAndRoundTrips) {
  const json j = json::parse(R"({"name": "gpt3", "layers": 96, "hidden": 12288, "heads": 96, "seq_len": 2048,
                                 "vocab": 51200, "dtype": "bf16"})");
  const TransformerModel m = model_from_json(j);
  EXPECT_EQ(m.ffn_hidden, 4 * 12288);
  TransformerModel expect = model_preset("gpt3-175b");
  expect.name = "gpt3";
  EXPECT_EQ(m, expect);
  EXPECT_EQ(model_from_json(model_to_json(m)), m);
  TransformerModel untied = m;
  untied.tie_embeddings = false;
  EXPECT_EQ(model_from_json(model_to_json(untied)), untied);
  EXPECT_FALSE(model_from_json(json::parse(R"({"preset": "gpt3-1.3b", "tie_embeddings": false})")).tie_embeddings);
  try {
    model_from_json(json::parse(R"({"preset": "gpt3-1.3b", "tie_embeddings": "no"})"));
    ADD_FAILURE() << "a string tie_embeddings was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "/model/tie_embeddings");
  }
}

TEST(ModelJson, PresetWithOverrides) {
  const TransformerModel m = model_from_json(json::parse(R"({"preset": "gpt3-6.7b", "seq_len": 4096, "experts": 8,
                                                             "top_k": 2, "dtype": "fp8"})"));
  EXPECT_EQ(m.hidden, 4096);
  EXPECT_EQ(m.ffn_hidden, 4 * 4096);
  EXPECT_EQ(m.seq_len, 4096);
  EXPECT_EQ(m.experts, 8);
  EXPECT_EQ(m.dtype, DType::FP8);
  EXPECT_EQ(model_from_json(json::parse(R"({"preset": "gpt3-6.7b", "hidden": 2048})")).ffn_hidden, 4 * 2048);
}

TEST(ModelJson, AttentionAndFusionOptions) {
  const TransformerModel m = model_from_json(
      json::parse(R"({"preset": "gpt3-6.7b", "attention": "flash", "fused_elementwise": false, "fused_optimizer": false})"));
  EXPECT_EQ(m.attention, AttentionImpl::Flash);
  EXPECT_FALSE(m.fused_elementwise);
  EXPECT_FALSE(m.fused_optimizer);
  EXPECT_EQ(model_to_json(m)["attention"], "flash");
  EXPECT_EQ(model_to_json(m)["fused_elementwise"], false);
  EXPECT_EQ(model_to_json(m)["fused_optimizer"], false);
  EXPECT_EQ(model_from_json(model_to_json(m)), m);
  const TransformerModel defaults = model_from_json(json::parse(R"({"preset": "gpt3-6.7b"})"));
  EXPECT_EQ(defaults.attention, AttentionImpl::Fused);
  EXPECT_TRUE(defaults.fused_elementwise);
  EXPECT_TRUE(defaults.fused_optimizer);
  EXPECT_EQ(config_error_path(json::parse(R"({"preset": "gpt3-6.7b", "fused_optimizer": "no"})")), "/model/fused_optimizer");
  EXPECT_TRUE(defaults.fused_grad_accumulation);
  const TransformerModel accumulating =
      model_from_json(json::parse(R"({"preset": "gpt3-6.7b", "fused_grad_accumulation": false})"));
  EXPECT_FALSE(accumulating.fused_grad_accumulation);
  EXPECT_EQ(model_to_json(accumulating)["fused_grad_accumulation"], false);
  EXPECT_EQ(model_from_json(model_to_json(accumulating)), accumulating);
  EXPECT_EQ(config_error_path(json::parse(R"({"preset": "gpt3-6.7b", "fused_grad_accumulation": 0})")),
            "/model/fused_grad_accumulation");
  EXPECT_TRUE(defaults.bias);
  const TransformerModel unbiased = model_from_json(json::parse(R"({"preset": "gpt3-6.7b", "bias": false})"));
  EXPECT_FALSE(unbiased.bias);
  EXPECT_EQ(model_to_json(unbiased)["bias"], false);
  EXPECT_EQ(model_from_json(model_to_json(unbiased)), unbiased);
  EXPECT_EQ(config_error_path(json::parse(R"({"preset": "gpt3-6.7b", "bias": "none"})")), "/model/bias");
  const TransformerModel torch_loss = model_from_json(json::parse(R"({"preset": "gpt3-6.7b", "loss": "pytorch"})"));
  EXPECT_EQ(torch_loss.loss, LossImpl::Pytorch);
  EXPECT_EQ(model_to_json(torch_loss)["loss"], "pytorch");
  EXPECT_EQ(model_from_json(model_to_json(torch_loss)), torch_loss);
  EXPECT_EQ(config_error_path(json::parse(R"({"preset": "gpt3-6.7b", "loss": "apex"})")), "/model/loss");
  EXPECT_TRUE(defaults.dropout);
  const TransformerModel no_dropout = model_from_json(json::parse(R"({"preset": "gpt3-6.7b", "dropout": false})"));
  EXPECT_FALSE(no_dropout.dropout);
  EXPECT_EQ(model_to_json(no_dropout)["dropout"], false);
  EXPECT_EQ(model_from_json(model_to_json(no_dropout)), no_dropout);
  EXPECT_EQ(config_error_path(json::parse(R"({"preset": "gpt3-6.7b", "dropout": 0.1})")), "/model/dropout");
}

// ---- grouped-query attention and SwiGLU ------------------------------------------------------------

// h 256, 8 heads of 32, 2 key/value heads, f 512 with SwiGLU: QKV has 256 + 2·2·32 = 384 output
// columns, FC1 2·512 = 1024.
TransformerModel gqa_swiglu() {
  TransformerModel m = gpt_model("gqa", 4, 256, 8, 128, 1000);
  m.kv_heads = 2;
  m.ffn_hidden = 512;
  m.activation = FfnActivation::Swiglu;
  return m;
}

TEST(GroupedQueryAttention, ParametersByHand) {
  const TransformerModel m = gqa_swiglu();
  EXPECT_EQ(m.qkv_width(), 384);
  EXPECT_EQ(m.fc1_width(), 1024);
  const ParameterCount p = parameter_count(m);
  EXPECT_EQ(p.attention, 256 * 384 + 384 + 256 * 256 + 256);
  EXPECT_EQ(p.ffn, 256 * 1024 + 1024 + 512 * 256 + 256);
  // One rank holds them all; tp 2 splits all but the replicated biases, LayerNorms, position
  // embedding and final norm (as for multi-head attention).
  EXPECT_EQ(rank_parameters(m, 1, 1, 1, 0).total(), p.total());
  const std::int64_t h = 256, replicated = m.layers * (2 * h + 4 * h) + m.seq_len * h + 2 * h;
  EXPECT_EQ(2 * rank_parameters(m, 2, 1, 1, 0).total(), p.total() + replicated);
  // Multi-head attention and GeLU are the special case kv_heads = heads.
  TransformerModel mha = m;
  mha.kv_heads = 8;
  mha.activation = FfnActivation::Gelu;
  EXPECT_EQ(mha.qkv_width(), 3 * 256);
  EXPECT_EQ(parameter_count(mha).attention, 4 * 256 * 256 + 4 * 256);
}

TEST(GroupedQueryAttention, OpShapesBytesAndActivations) {
  const TransformerModel m = gqa_swiglu();
  OpContext c;
  c.tp = 2;
  c.micro_batch = 2;
  const double tokens = 2 * 128;
  const auto fwd = layer_forward_ops(m, c);
  const OpCost& qkv = find_op(fwd, "qkv_fwd");
  EXPECT_EQ(qkv.n, 384 / 2);
  expect_rel(qkv.flops, 2 * tokens * 256 * 192);
  const OpCost& fc1 = find_op(fwd, "fc1_fwd");
  EXPECT_EQ(fc1.n, 1024 / 2);
  EXPECT_EQ(find_op(fwd, "fc2_fwd").k, 512 / 2);
  // SwiGLU reads the gate and the up projection and writes their product: 3 × tokens × f/t elements.
  const OpCost& act = find_op(fwd, "swiglu_fwd");
  EXPECT_EQ(act.bytes, std::llround(3 * tokens * 256 * 2));
  const auto bwd = layer_backward_ops(m, c);
  EXPECT_EQ(find_op(bwd, "swiglu_bwd").bytes, std::llround(5 * tokens * 256 * 2));
  EXPECT_EQ(find_op(bwd, "fc1_wgrad").flops, fc1.flops);
  // Unfused (Megatron-LM's glu in eager PyTorch): SiLU (n read, n written), then the product (2n, n);
  // backward the product's two gradients (2n, n each), SiLU's (2n, n) and the cat of the halves (2n, 2n),
  // n = tokens × f/t; the SiLU output is kept for backward too.
  TransformerModel eager = m;
  eager.fused_elementwise = false;
  const double n = tokens * 256;
  const auto eager_fwd = layer_forward_ops(eager, c);
  EXPECT_EQ(find_op(eager_fwd, "silu_fwd").bytes, std::llround(2 * n * 2));
  EXPECT_EQ(find_op(eager_fwd, "swiglu_fwd").bytes, std::llround(3 * n * 2));
  const std::vector<std::string> eager_names = names_of(eager_fwd);
  EXPECT_LT(std::find(eager_names.begin(), eager_names.end(), "silu_fwd"),
            std::find(eager_names.begin(), eager_names.end(), "swiglu_fwd"));
  const auto eager_bwd = layer_backward_ops(eager, c);
  EXPECT_EQ(find_op(eager_bwd, "swiglu_bwd").bytes, std::llround(6 * n * 2));
  EXPECT_EQ(find_op(eager_bwd, "silu_bwd").bytes, std::llround(3 * n * 2));
  EXPECT_EQ(find_op(eager_bwd, "swiglu_cat_bwd").bytes, std::llround(4 * n * 2));
  EXPECT_FALSE(has_op(layer_forward_ops(m, c), "silu_fwd"));
  EXPECT_EQ(activation_bytes_per_layer(eager, 2, 2, false, Recompute::None) -
                activation_bytes_per_layer(m, 2, 2, false, Recompute::None),
            std::llround(2 * n));
  // The attention core is over the query heads either way.
  TransformerModel mha = gpt_model("mha", 4, 256, 8, 128, 1000);
  mha.ffn_hidden = 512;
  EXPECT_EQ(find_op(fwd, "attn_scores_fwd").flops, find_op(layer_forward_ops(mha, c), "attn_scores_fwd").flops);
  // Stored activations (no recomputation, 16-bit): Q, K, V are sb·384 elements instead of sb·768, the
  // activation's input sb·2f instead of sb·f; split over tp 2.
  const double sb = 128 * 2;
  const Bytes diff = activation_bytes_per_layer(mha, 2, 2, false, Recompute::None) -
                     activation_bytes_per_layer(m, 2, 2, false, Recompute::None);
  EXPECT_EQ(diff, std::llround(2 * (sb * (768 - 384) - sb * 512) / 2));
  // Training FLOPs follow the op lists: the GQA + SwiGLU layer's matmuls against the MHA + GeLU one's.
  const double per_token_fwd_delta = 2.0 * 256 * (384 - 768) + 2.0 * 256 * 512;  // QKV narrower, FC1 wider
  expect_rel(training_flops(m, 1, Recompute::None) - training_flops(mha, 1, Recompute::None),
             3 * 4 * 128 * per_token_fwd_delta);
}

// Context parallelism as a ring (OpContext::cp_ring): the flash kernel's cp steps as the first step's op
// and the other cp - 1 steps', their work summing to the whole op's; each step reads the rank's Q-side
// tensors and one chunk of K and V. The forward merges the partial outputs in FP32, the backward adds the
// steps' gradients up.
TEST(Ops, ContextParallelRingSplitsTheFlashKernelIntoItsSteps) {
  TransformerModel m = gqa_swiglu();  // h 256, 8 heads, 2 key/value heads, s 128
  m.attention = AttentionImpl::Flash2;
  m.dropout = false;
  OpContext c{2, 2, false, 1, 4};
  const auto gathered = layer_forward_ops(m, c), gathered_bwd = layer_backward_ops(m, c);
  c.cp_ring = true;
  const auto fwd = layer_forward_ops(m, c), bwd = layer_backward_ops(m, c);
  const double e = 2, tokens = 2 * 128 / 4, q = tokens * 256 / 2, kv = tokens * 64 / 2, lse = 4.0 * (2 * 8 / 2) * 32;
  for (const auto& [ops, whole_ops, pass] : {std::tuple{fwd, gathered, std::string("fwd")}, std::tuple{bwd, gathered_bwd, std::string("bwd")}}) {
    const OpCost& first = find_op(ops, "flash_attn_" + pass);
    const OpCost& rest = find_op(ops, "flash_attn_ring_" + pass);
    const OpCost& whole = find_op(whole_ops, "flash_attn_" + pass);
    EXPECT_TRUE(rest.flash);
    EXPECT_EQ(rest.kind, OpCost::Kind::Attention);
    expect_rel(first.flops, whole.flops / 4);
    expect_rel(rest.flops, 3 * whole.flops / 4);
    EXPECT_EQ((std::vector<std::int64_t>{first.m, first.n, first.k}), (std::vector<std::int64_t>{whole.m, whole.n, whole.k}));
    const double per_step = pass == "fwd" ? 2 * q * e + 2 * kv * e + lse : 4 * q * e + 4 * kv * e + lse;
    EXPECT_EQ(first.bytes, std::llround(per_step));
    EXPECT_EQ(rest.bytes, std::llround(3 * per_step));
  }
  EXPECT_EQ(names_of(fwd).size(), names_of(gathered).size() + 2);
  // Forward: the first step's output scaled into FP32 (e + 4), each other step's added in on 3/4 of the
  // rows on average (4 + e + 4), the result cast back (4 + e).
  EXPECT_EQ(find_op(fwd, "attn_out_correction_fwd").bytes, std::llround(q * ((e + 4) + 0.75 * 3 * (8 + e) + (4 + e))));
  // Backward: every step's dQ, dK and dV added into their sums (read both, write one).
  EXPECT_EQ(find_op(bwd, "attn_grad_accumulate_bwd").bytes, std::llround(3 * e * 4 * (q + 2 * kv)));
  // Selective recomputation re-runs the forward's ring.
  const auto again = names_of(layer_recompute_ops(m, c, Recompute::Selective));
  EXPECT_EQ(again, (std::vector<std::string>{"flash_attn_recompute", "flash_attn_ring_recompute", "attn_out_correction_recompute"}));
  // Without context parallelism there is no ring.
  c.cp = 1;
  EXPECT_FALSE(has_op(layer_forward_ops(m, c), "flash_attn_ring_fwd"));
}

// Heads of a width of their own (head_dim): the attention a·d wide rather than h. Here 8 heads of 64 at
// h = 256, with 2 key/value heads: queries and context 512 wide, keys and values 128 each.
TransformerModel wide_heads() {
  TransformerModel m = gqa_swiglu();
  m.head_dim = 64;
  return m;
}

TEST(HeadDim, ParametersByHand) {
  const TransformerModel m = wide_heads();
  EXPECT_EQ(m.head_width(), 64);
  EXPECT_EQ(m.attention_width(), 512);
  EXPECT_EQ(m.qkv_width(), 512 + 2 * 2 * 64);
  // QKV h·q + q, projection w·h + h; the FFN as without head_dim.
  const ParameterCount p = parameter_count(m);
  EXPECT_EQ(p.attention, 256 * 768 + 768 + 512 * 256 + 256);
  EXPECT_EQ(p.ffn, parameter_count(gqa_swiglu()).ffn);
  EXPECT_EQ(layer_tensor_elements(m, 2).proj, 512 * 256 / 2 + 256);
  EXPECT_EQ(rank_parameters(m, 1, 1, 1, 0).total(), p.total());
  // head_dim = h/a is the default spelled out.
  TransformerModel same = gqa_swiglu();
  same.head_dim = 32;
  EXPECT_EQ(parameter_count(same).total(), parameter_count(gqa_swiglu()).total());
}

TEST(HeadDim, OpShapesFlopsAndActivations) {
  const TransformerModel m = wide_heads();
  OpContext c;
  c.tp = 2;
  c.micro_batch = 2;
  const double tokens = 2 * 128, heads = 2 * 8 / 2;  // b·s; b·a/t attention matmuls
  const auto fwd = layer_forward_ops(m, c);
  EXPECT_EQ(find_op(fwd, "qkv_fwd").n, 768 / 2);
  const OpCost& proj = find_op(fwd, "proj_fwd");
  EXPECT_EQ(proj.n, 256);
  EXPECT_EQ(proj.k, 512 / 2);  // the rank's a/t heads of d
  expect_rel(proj.flops, 2 * tokens * 256 * 256);
  const OpCost& scores = find_op(fwd, "attn_scores_fwd");
  EXPECT_EQ(scores.k, 64);
  expect_rel(scores.flops, 2 * heads * 128 * 128 * 64);
  expect_rel(find_op(fwd, "attn_context_fwd").flops, scores.flops);
  // The default head width spelled out changes no op.
  TransformerModel same = gqa_swiglu();
  same.head_dim = 32;
  const auto base = layer_forward_ops(gqa_swiglu(), c), spelled = layer_forward_ops(same, c);
  ASSERT_EQ(base.size(), spelled.size());
  for (std::size_t i = 0; i < base.size(); ++i) {
    EXPECT_EQ(base[i].flops, spelled[i].flops) << base[i].name;
    EXPECT_EQ(base[i].bytes, spelled[i].bytes) << base[i].name;
  }
  // Stored activations (16-bit, no recomputation, split over tp 2): Q, K, V 768 columns instead of 384,
  // the projection's input 512 instead of 256.
  const double sb = 128 * 2;
  EXPECT_EQ(activation_bytes_per_layer(m, 2, 2, false, Recompute::None) -
                activation_bytes_per_layer(gqa_swiglu(), 2, 2, false, Recompute::None),
            std::llround(2 * (sb * (768 - 384) + sb * (512 - 256)) / 2));
  // Training FLOPs follow the op lists: QKV and the projection wider, the attention core twice as deep.
  const double per_token_fwd_delta = 2.0 * 256 * (768 - 384) + 2.0 * 256 * (512 - 256) + 2.0 * 2 * 128 * (512 - 256);
  expect_rel(training_flops(m, 1, Recompute::None) - training_flops(gqa_swiglu(), 1, Recompute::None),
             3 * 4 * 128 * per_token_fwd_delta);
}

TEST(HeadDim, RopeAndFlashCoverTheWholeAttentionWidth) {
  TransformerModel m = wide_heads();
  m.positions = Positions::Rope;
  m.attention = AttentionImpl::Flash2;
  m.dropout = false;
  OpContext c;
  c.tp = 2;
  const double tokens = 128;
  const auto fwd = layer_forward_ops(m, c);
  // Fused RoPE reads and writes its elements (2e) and reads the s × d FP32 frequencies.
  EXPECT_EQ(find_op(fwd, "rope_q_fwd").bytes, std::llround(2 * 2 * tokens * 512 / 2 + 128 * 64 * 4));
  EXPECT_EQ(find_op(fwd, "rope_k_fwd").bytes, std::llround(2 * 2 * tokens * 128 / 2 + 128 * 64 * 4));
  const OpCost& flash = find_op(fwd, "flash_attn_fwd");
  EXPECT_EQ(flash.k, 64);
  expect_rel(flash.flops, 2 * (8 / 2) * 128 * 128 * 64.0);
  // It reads Q (the rank's 4 query heads of 64), K and V (its one key/value head of 64 each), writes O
  // and the FP32 log-sum-exp of each query row; backward reads Q, K, V, O, dO and writes dQ, dK, dV.
  const double q = 2 * tokens * 512 / 2, kv = 2 * tokens * 128 / 2, lse = 4.0 * 4 * 128;
  EXPECT_EQ(flash.bytes, std::llround(2 * q + 2 * kv + lse));
  EXPECT_EQ(find_op(layer_backward_ops(m, c), "flash_attn_bwd").bytes, std::llround(4 * q + 4 * kv + lse));
}

TEST(ModelJson, GroupedQueryAttentionAndSwiglu) {
  const TransformerModel m = model_from_json(json::parse(
      R"({"layers": 2, "hidden": 256, "heads": 8, "kv_heads": 2, "ffn_hidden": 512, "activation": "swiglu", "seq_len": 16, "vocab": 100})"));
  EXPECT_EQ(m.kv_heads, 2);
  EXPECT_EQ(m.activation, FfnActivation::Swiglu);
  EXPECT_EQ(model_to_json(m)["kv_heads"], 2);
  EXPECT_EQ(model_to_json(m)["activation"], "swiglu");
  EXPECT_EQ(model_from_json(model_to_json(m)), m);
  // Without kv_heads: multi-head attention, resolved; a preset's heads override carries it along.
  EXPECT_EQ(model_from_json(json::parse(R"({"layers": 2, "hidden": 64, "heads": 4, "seq_len": 16, "vocab": 100})")).kv_heads, 4);
  EXPECT_EQ(model_from_json(json::parse(R"({"preset": "gpt3-1.3b", "heads": 32})")).kv_heads, 32);
  EXPECT_EQ(model_from_json(json::parse(R"({"preset": "gpt3-1.3b"})")), model_preset("gpt3-1.3b"));
  const std::string base = R"("layers": 2, "hidden": 64, "heads": 4, "seq_len": 16, "vocab": 100)";
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "kv_heads": 3})")), "/model/kv_heads");
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "kv_heads": 0})")), "/model/kv_heads");
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "activation": "relu"})")), "/model/activation");
  const std::string relu = config_error_message(json::parse("{" + base + R"(, "activation": "relu"})"));
  EXPECT_NE(relu.find("gelu, swiglu"), std::string::npos) << relu;
  EXPECT_EQ(activation_names(), (std::vector<std::string>{"gelu", "swiglu"}));
}

TEST(ModelJson, HeadDim) {
  const std::string base = R"("layers": 2, "hidden": 256, "heads": 8, "seq_len": 16, "vocab": 100)";
  const TransformerModel m = model_from_json(json::parse("{" + base + R"(, "head_dim": 64})"));
  EXPECT_EQ(m.head_dim, 64);
  EXPECT_EQ(m.attention_width(), 512);
  EXPECT_EQ(model_to_json(m)["head_dim"], 64);
  EXPECT_EQ(model_from_json(model_to_json(m)), m);
  // Unset, it follows hidden and heads and is not written.
  const TransformerModel plain = model_from_json(json::parse("{" + base + "}"));
  EXPECT_EQ(plain.head_width(), 32);
  EXPECT_FALSE(model_to_json(plain).contains("head_dim"));
  // With head_dim, hidden need not divide by heads (16 heads of 128 at h = 1000).
  EXPECT_EQ(model_from_json(json::parse(R"({"layers": 2, "hidden": 1000, "heads": 16, "head_dim": 128, "seq_len": 16, "vocab": 100})"))
                .attention_width(),
            2048);
  EXPECT_EQ(config_error_path(json::parse(R"({"layers": 2, "hidden": 1000, "heads": 16, "seq_len": 16, "vocab": 100})")),
            "/model/heads");
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "head_dim": 0})")), "/model/head_dim");
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "head_dim": "64"})")), "/model/head_dim");
  const std::string wide = config_error_message(json::parse("{" + base + R"(, "head_dim": 1048576})"));
  EXPECT_NE(wide.find("heads × head_dim"), std::string::npos) << wide;
}

// RoPE (Positions::Rope): the queries and keys rotated after the QKV GEMM and their gradients rotated
// back before its backward, memory-bound; no position table (parameters, embedding add).
TEST(Rope, RotatesQueriesAndKeysAndHasNoPositionTable) {
  TransformerModel m = model_from_json(json::parse(
      R"({"layers": 2, "hidden": 4096, "heads": 32, "kv_heads": 8, "ffn_hidden": 11008, "activation": "swiglu",
          "bias": false, "seq_len": 4096, "vocab": 32000, "positions": "rope"})"));
  EXPECT_EQ(m.positions, Positions::Rope);
  const OpContext c{2, 2, false, 1};
  const auto names = [](const std::vector<OpCost>& ops) {
    std::vector<std::string> out;
    for (const OpCost& op : ops) out.push_back(op.name);
    return out;
  };
  const auto fwd = layer_forward_ops(m, c);
  const auto fwd_names = names(fwd);
  const auto at = [&](const std::vector<std::string>& v, const std::string& name) {
    return std::find(v.begin(), v.end(), name) - v.begin();
  };
  ASSERT_EQ(at(fwd_names, "rope_q_fwd"), at(fwd_names, "qkv_fwd") + 1);
  ASSERT_EQ(at(fwd_names, "rope_k_fwd"), at(fwd_names, "qkv_fwd") + 2);
  // 2 × 4096 tokens; this rank's 16 query heads and 4 key heads of 128; BF16; fused: a read and a write,
  // plus the FP32 frequencies, 4096 × 128.
  const double tokens = 2 * 4096, freqs = 4096 * 128 * 4;
  const double queries = tokens * 16 * 128, keys = tokens * 4 * 128;
  EXPECT_EQ(find_op(fwd, "rope_q_fwd").bytes, std::llround(2 * queries * 2 + freqs));
  EXPECT_EQ(find_op(fwd, "rope_k_fwd").bytes, std::llround(2 * keys * 2 + freqs));
  EXPECT_EQ(find_op(fwd, "rope_q_fwd").kind, OpCost::Kind::MemoryBound);
  const auto bwd = layer_backward_ops(m, c);
  const auto bwd_names = names(bwd);
  ASSERT_LT(at(bwd_names, "rope_q_bwd"), at(bwd_names, "qkv_dgrad"));
  EXPECT_GT(at(bwd_names, "rope_q_bwd"), at(bwd_names, "attn_context_dgrad_v"));
  EXPECT_EQ(find_op(bwd, "rope_k_bwd").bytes, std::llround(2 * keys * 2 + freqs));
  // Unfused (PyTorch's passes): 12 element reads and writes forward, 10 backward.
  TransformerModel unfused = m;
  unfused.fused_elementwise = false;
  EXPECT_EQ(find_op(layer_forward_ops(unfused, c), "rope_q_fwd").bytes, std::llround(12 * queries * 2 + freqs));
  EXPECT_EQ(find_op(layer_backward_ops(unfused, c), "rope_q_bwd").bytes, std::llround(10 * queries * 2 + freqs));
  // Full recomputation re-runs them; selective (the attention core alone) does not.
  EXPECT_TRUE(has_op(layer_recompute_ops(m, c, Recompute::Full), "rope_q_recompute"));
  EXPECT_FALSE(has_op(layer_recompute_ops(m, c, Recompute::Selective), "rope_q_recompute"));
  // Learned positions: no rotation, and a position table of s × h parameters the embedding adds.
  TransformerModel learned = m;
  learned.positions = Positions::Learned;
  EXPECT_FALSE(has_op(layer_forward_ops(learned, c), "rope_q_fwd"));
  EXPECT_FALSE(has_op(layer_backward_ops(learned, c), "rope_q_bwd"));
  EXPECT_EQ(parameter_count(learned).embedding - parameter_count(m).embedding, 4096 * 4096);
  EXPECT_EQ(rank_parameters(learned, 2, 1, 1, 0).dense - rank_parameters(m, 2, 1, 1, 0).dense, 4096 * 4096);
  const double n = tokens * 4096;
  EXPECT_EQ(find_op(embedding_forward_ops(m, c), "embedding_dropout_fwd").bytes, std::llround(2 * n * 2 + n));
  EXPECT_EQ(find_op(embedding_forward_ops(learned, c), "embedding_dropout_fwd").bytes, std::llround(3 * n * 2 + n));
  EXPECT_EQ(find_op(embedding_backward_ops(m, c), "embedding_dropout_bwd").bytes, std::llround(2 * n * 2 + n));
  EXPECT_EQ(find_op(embedding_backward_ops(learned, c), "embedding_dropout_bwd").bytes, std::llround(3 * n * 2 + n));
  // JSON: round trip, the default, and a clear error.
  EXPECT_EQ(model_to_json(m)["positions"], "rope");
  EXPECT_EQ(model_from_json(model_to_json(m)), m);
  EXPECT_EQ(model_preset("gpt3-1.3b").positions, Positions::Learned);
  EXPECT_EQ(positions_names(), (std::vector<std::string>{"learned", "rope", "alibi"}));
  const std::string base = R"("layers": 2, "hidden": 64, "heads": 4, "seq_len": 16, "vocab": 100)";
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "positions": "sinusoidal"})")), "/model/positions");
  const std::string sinusoidal = config_error_message(json::parse("{" + base + R"(, "positions": "sinusoidal"})"));
  EXPECT_NE(sinusoidal.find("learned, rope, alibi"), std::string::npos) << sinusoidal;
}

// The RoPE implementation a config states (RopeImpl) overrides what fused_elementwise implies: fms's
// eager rotation moves 36 bytes a BF16 element each way (to FP32, the broadcast product writing two FP32
// values, their sum, the cast back) and reads the 2×2 FP32 rotation matrices per token; FP32 has no casts.
TEST(Rope, TheConfigNamesHowTheFrameworkRotates) {
  const std::string base = R"("layers": 2, "hidden": 4096, "heads": 32, "seq_len": 4096, "vocab": 32000, "positions": "rope")";
  const TransformerModel fms = model_from_json(json::parse("{" + base + R"(, "rope": "fms", "fused_elementwise": true})"));
  EXPECT_EQ(fms.rope_impl(), RopeImpl::Fms);
  const OpContext c{1, 1, false, 1};
  const double tokens = 4096, elements = tokens * 4096, rotations = tokens * 128 * 8;
  EXPECT_EQ(find_op(layer_forward_ops(fms, c), "rope_q_fwd").bytes, std::llround(36 * elements + rotations));
  EXPECT_EQ(find_op(layer_backward_ops(fms, c), "rope_k_bwd").bytes, std::llround(36 * elements + rotations));
  TransformerModel fp32 = fms;
  fp32.dtype = DType::FP32;
  EXPECT_EQ(find_op(layer_forward_ops(fp32, c), "rope_q_fwd").bytes, std::llround(24 * elements + rotations));
  // Stated against fused_elementwise: megatron's unfused passes though the rest is fused, and fused
  // though it is not.
  const TransformerModel megatron = model_from_json(json::parse("{" + base + R"(, "rope": "megatron"})"));
  EXPECT_TRUE(megatron.fused_elementwise);
  EXPECT_EQ(find_op(layer_forward_ops(megatron, c), "rope_q_fwd").bytes, std::llround(12 * elements * 2 + 4096 * 128 * 4));
  const TransformerModel fused = model_from_json(json::parse("{" + base + R"(, "rope": "fused", "fused_elementwise": false})"));
  EXPECT_EQ(find_op(layer_forward_ops(fused, c), "rope_q_fwd").bytes, std::llround(2 * elements * 2 + 4096 * 128 * 4));
  // Unset it follows fused_elementwise, and stays unset through JSON; set, it round-trips.
  const TransformerModel unset = model_from_json(json::parse("{" + base + "}"));
  EXPECT_FALSE(unset.rope.has_value());
  EXPECT_FALSE(model_to_json(unset).contains("rope"));
  EXPECT_EQ(model_to_json(fms)["rope"], "fms");
  EXPECT_EQ(model_from_json(model_to_json(fms)), fms);
  EXPECT_EQ(rope_names(), (std::vector<std::string>{"fused", "megatron", "fms"}));
  // Errors name the field: an unknown implementation lists the known ones; a rope for a model without
  // rotary positions says so.
  const std::string unknown = config_error_message(json::parse("{" + base + R"(, "rope": "hf"})"));
  EXPECT_NE(unknown.find("fused, megatron, fms"), std::string::npos) << unknown;
  const std::string small = R"("layers": 2, "hidden": 64, "heads": 4, "seq_len": 16, "vocab": 100)";
  EXPECT_EQ(config_error_path(json::parse("{" + small + R"(, "rope": "fms"})")), "/model/rope");
  const std::string learned = config_error_message(json::parse("{" + small + R"(, "rope": "fms"})"));
  EXPECT_NE(learned.find("\"learned\""), std::string::npos) << learned;
}

// ALiBi (Positions::Alibi): outside flash attention the bias is written over the scores and read back
// by the QKᵀ GEMM, forward (and when the core is recomputed) only; no position table, no backward pass.
TEST(Alibi, BiasesTheScoresAndHasNoPositionTable) {
  TransformerModel m = model_from_json(json::parse(
      R"({"layers": 2, "hidden": 1024, "heads": 16, "seq_len": 2048, "vocab": 32000, "positions": "alibi"})"));
  EXPECT_EQ(m.positions, Positions::Alibi);
  const OpContext c{2, 2, false, 1};
  const auto fwd = layer_forward_ops(m, c);
  const std::vector<std::string> names = names_of(fwd);
  const auto at = [&](const std::string& name) { return std::find(names.begin(), names.end(), name) - names.begin(); };
  ASSERT_EQ(at("attn_alibi_fwd") + 1, at("attn_scores_fwd"));
  // 2 sequences × 8 heads on this rank × 2048²: the scores written and read back, BF16.
  const double scores = 2.0 * 8 * 2048 * 2048;
  EXPECT_EQ(find_op(fwd, "attn_alibi_fwd").bytes, std::llround(2 * scores * 2));
  EXPECT_EQ(find_op(fwd, "attn_alibi_fwd").kind, OpCost::Kind::MemoryBound);
  for (const OpCost& op : layer_backward_ops(m, c)) EXPECT_EQ(op.name.find("alibi"), std::string::npos) << op.name;
  EXPECT_TRUE(has_op(layer_recompute_ops(m, c, Recompute::Selective), "attn_alibi_recompute"));
  // A flash kernel adds the bias in its tiles; learned positions have no such pass.
  TransformerModel flash = m;
  flash.attention = AttentionImpl::Flash;
  EXPECT_FALSE(has_op(layer_forward_ops(flash, c), "attn_alibi_fwd"));
  TransformerModel learned = m;
  learned.positions = Positions::Learned;
  EXPECT_FALSE(has_op(layer_forward_ops(learned, c), "attn_alibi_fwd"));
  // No position table: the embedding holds the words alone and its pass adds no positions.
  EXPECT_EQ(parameter_count(learned).embedding - parameter_count(m).embedding, 2048 * 1024);
  const double n = 2.0 * 2048 * 1024;
  EXPECT_EQ(find_op(embedding_forward_ops(m, c), "embedding_dropout_fwd").bytes, std::llround(2 * n * 2 + n));
  EXPECT_EQ(model_from_json(model_to_json(m)), m);
  EXPECT_EQ(model_to_json(m)["positions"], "alibi");
}

// RMSNorm (Norm::RmsNorm): γ alone, so h parameters a norm fewer; as a kernel the passes of LayerNorm's
// but for β; as PyTorch's eager operators (fused_elementwise false) a chain of FP32 passes whose bytes
// are counted by hand here, and which keeps an FP32 copy of its input for backward.
TEST(Norm, RmsNormHasNoBetaAndRunsEagerAsFp32Passes) {
  const std::string llama = R"("layers": 2, "hidden": 4096, "heads": 32, "ffn_hidden": 11008, "activation": "swiglu",
      "bias": false, "seq_len": 4096, "vocab": 32000, "positions": "rope")";
  const TransformerModel ln = model_from_json(json::parse("{" + llama + "}"));
  const TransformerModel rms = model_from_json(json::parse("{" + llama + R"(, "norm": "rmsnorm"})"));
  EXPECT_EQ(ln.norm, Norm::LayerNorm);
  EXPECT_EQ(rms.norm, Norm::RmsNorm);
  const std::int64_t h = 4096;
  // Parameters: two norms a layer and the final one, h each instead of 2h.
  EXPECT_EQ(parameter_count(rms).norms, 2 * h);
  EXPECT_EQ(parameter_count(rms).final_norm, h);
  EXPECT_EQ(parameter_count(ln).total() - parameter_count(rms).total(), 2 * 2 * h + h);
  EXPECT_EQ(layer_tensor_elements(rms, 2).norms, 2 * h);
  EXPECT_EQ(rank_parameters(ln, 2, 2, 1, 1).dense - rank_parameters(rms, 2, 2, 1, 1).dense, 2 * h + h);
  EXPECT_EQ(rank_parameters(ln, 2, 2, 1, 0).dense - rank_parameters(rms, 2, 2, 1, 0).dense, 2 * h);
  // The fused kernels: LayerNorm's bytes less β's read.
  const OpContext c{2, 2, false, 1};
  const double n = 2.0 * 4096 * h, e = 2;
  EXPECT_EQ(find_op(layer_forward_ops(ln, c), "ln1_fwd").bytes - find_op(layer_forward_ops(rms, c), "ln1_fwd").bytes,
            std::llround(h * e));
  EXPECT_EQ(find_op(layer_backward_ops(rms, c), "ln2_gamma_bwd").bytes, std::llround(2 * n * e));
  EXPECT_EQ(find_op(layer_backward_ops(rms, c), "ln2_bwd").bytes, std::llround(3 * n * e + h * e));
  EXPECT_FALSE(has_op(layer_backward_ops(rms, c), "ln2_gamma_beta_bwd"));
  EXPECT_EQ(activation_bytes_per_layer(rms, 2, 2, false, Recompute::None),
            activation_bytes_per_layer(ln, 2, 2, false, Recompute::None));
  // Eager, in BF16, per element: forward x.float() 2+4, pow 4+4, mean 4, ·rsqrt 4+4, back to BF16 4+2,
  // γ· 2+2 = 36 (and γ's h); backward g·γ 2+2, the cast's 2+4, the product's 4+4 and 8+4+4, mean's 4,
  // pow's 4+4, 4+4 and 8+4, the sum of xf's two gradients 8+4, the first cast's 4+2 = 84 (and γ's h); dγ
  // (g·x̂ summed over the tokens) 2+2+2 then 2 = 8.
  TransformerModel eager = rms;
  eager.fused_elementwise = false;
  for (const std::string norm : {"ln1", "ln2"}) {
    EXPECT_EQ(find_op(layer_forward_ops(eager, c), norm + "_fwd").bytes, std::llround(36 * n + h * e)) << norm;
    EXPECT_EQ(find_op(layer_backward_ops(eager, c), norm + "_bwd").bytes, std::llround(84 * n + h * e)) << norm;
    EXPECT_EQ(find_op(layer_backward_ops(eager, c), norm + "_gamma_bwd").bytes, std::llround(8 * n)) << norm;
  }
  EXPECT_EQ(find_op(head_forward_ops(eager, c), "final_ln_fwd").bytes, std::llround(36 * n + h * e));
  EXPECT_EQ(find_op(layer_recompute_ops(eager, c, Recompute::Full), "ln1_recompute").bytes, std::llround(36 * n + h * e));
  // It saves an FP32 copy of each norm's input and the normalised x̂ (4 + 2 bytes) instead of the input.
  TransformerModel ln_eager = ln;
  ln_eager.fused_elementwise = false;
  EXPECT_EQ(activation_bytes_per_layer(eager, 2, 2, false, Recompute::None) -
                activation_bytes_per_layer(ln_eager, 2, 2, false, Recompute::None),
            std::llround(2 * 4 * n));
  // In FP32 the casts are no kernels: forward 28, backward data 76, dγ 16 bytes an element.
  TransformerModel fp32 = eager;
  fp32.dtype = DType::FP32;
  EXPECT_EQ(find_op(layer_forward_ops(fp32, c), "ln1_fwd").bytes, std::llround(28 * n + h * 4));
  EXPECT_EQ(find_op(layer_backward_ops(fp32, c), "ln1_bwd").bytes, std::llround(76 * n + h * 4));
  EXPECT_EQ(find_op(layer_backward_ops(fp32, c), "ln1_gamma_bwd").bytes, std::llround(16 * n));
  // A LayerNorm stays one kernel unfused (PyTorch's layer_norm is native); FP8 runs Transformer
  // Engine's norm kernels.
  EXPECT_EQ(find_op(layer_forward_ops(ln_eager, c), "ln1_fwd").bytes, find_op(layer_forward_ops(ln, c), "ln1_fwd").bytes);
  TransformerModel fp8 = eager;
  fp8.dtype = DType::FP8;
  TransformerModel fp8_fused = rms;
  fp8_fused.dtype = DType::FP8;
  EXPECT_EQ(find_op(layer_backward_ops(fp8, c), "ln1_bwd").bytes, find_op(layer_backward_ops(fp8_fused, c), "ln1_bwd").bytes);
  // JSON: round trip, the default, and a clear error.
  EXPECT_EQ(model_to_json(rms)["norm"], "rmsnorm");
  EXPECT_EQ(model_from_json(model_to_json(eager)), eager);
  EXPECT_EQ(model_preset("gpt3-1.3b").norm, Norm::LayerNorm);
  EXPECT_EQ(norm_names(), (std::vector<std::string>{"layernorm", "rmsnorm"}));
  const std::string base = R"("layers": 2, "hidden": 64, "heads": 4, "seq_len": 16, "vocab": 100)";
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "norm": "batchnorm"})")), "/model/norm");
  const std::string batchnorm = config_error_message(json::parse("{" + base + R"(, "norm": "batchnorm"})"));
  EXPECT_NE(batchnorm.find("layernorm, rmsnorm"), std::string::npos) << batchnorm;
}

TEST(ModelJson, StrictErrorsNameThePath) {
  const std::string base = R"("layers": 2, "hidden": 64, "heads": 4, "seq_len": 16, "vocab": 100)";
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "hiden": 64})")), "/model/hiden");
  EXPECT_EQ(config_error_path(json::parse(R"({"layers": 2, "hidden": "64", "heads": 4, "seq_len": 16, "vocab": 100})")),
            "/model/hidden");
  EXPECT_EQ(config_error_path(json::parse(R"({"layers": 2, "hidden": 64.5, "heads": 4, "seq_len": 16, "vocab": 100})")),
            "/model/hidden");
  EXPECT_EQ(config_error_path(json::parse(R"({"layers": -2, "hidden": 64, "heads": 4, "seq_len": 16, "vocab": 100})")),
            "/model/layers");
  EXPECT_EQ(config_error_path(json::parse(R"({"layers": 2, "hidden": 64, "heads": 5, "seq_len": 16, "vocab": 100})")),
            "/model/heads");
  EXPECT_EQ(config_error_path(json::parse(R"({"layers": 2, "hidden": 64, "heads": 4, "seq_len": 16})")), "/model/vocab");
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "experts": 4, "top_k": 5})")), "/model/top_k");
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "dtype": "int8"})")), "/model/dtype");
  EXPECT_EQ(config_error_path(json::parse(R"({"preset": "gpt-4"})")), "/model/preset");
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "attention": "sdpa"})")), "/model/attention");
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "attention": true})")), "/model/attention");
  EXPECT_EQ(config_error_path(json::parse("{" + base + R"(, "fused_elementwise": "yes"})")), "/model/fused_elementwise");
  const std::string sdpa = config_error_message(json::parse("{" + base + R"(, "attention": "sdpa"})"));
  EXPECT_NE(sdpa.find("unfused, fused, flash"), std::string::npos) << sdpa;
  EXPECT_EQ(config_error_path(json::parse("[1, 2]")), "/model");
  try {
    model_from_json(json::parse("{" + base + R"(, "dtype": "int8"})"), "/experiments/0/model");
    FAIL() << "no throw";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "/experiments/0/model/dtype");
    EXPECT_NE(std::string(e.what()).find("fp32, tf32, bf16, fp16, fp8"), std::string::npos) << e.what();
  }
  try {
    model_from_json(json::parse("{" + base + R"(, "hiden": 64})"));
    FAIL() << "no throw";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("accepted keys here"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace twinbed
