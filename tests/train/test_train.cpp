// The training run on one rank (solo): the corpus split and sampling, the config's strictness, and what
// each technique switch must change — the loss falls below the byte-unigram entropy, reruns are
// bit-identical, LoRA trains r·(d+k) per matrix and leaves the base untouched, DSA updates only the
// entries its mask keeps. The multi-rank properties are in test_train_mpi.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "twinbed/core/error.hpp"
#include "twinbed/kernels/dsa.hpp"
#include "twinbed/train/corpus.hpp"
#include "twinbed/train/train_config.hpp"
#include "twinbed/train/train_output.hpp"
#include "twinbed/train/trainer.hpp"
#include "train_support.hpp"

namespace twinbed::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::small_config;
using test::test_corpus;

TrainConfig parse(const json& j) { return train_config_from_json(j, "."); }

std::string config_error(const json& j) {
  try {
    parse(j);
  } catch (const ConfigError& e) {
    return e.path();
  }
  return "(no error)";
}

TEST(Corpus, SplitsByFortuneAndSkipsIndexFiles) {
  const Corpus c = load_corpus(CorpusSpec{test_corpus().string(), {}, 10}, 17);
  EXPECT_EQ(c.files, std::vector<std::string>{"sayings"});
  // 400 fortunes: every 10th (40) held out; each is 12 words and a newline.
  const std::size_t newlines_train = static_cast<std::size_t>(std::count(c.train.begin(), c.train.end(), '\n'));
  const std::size_t newlines_held = static_cast<std::size_t>(std::count(c.held_out.begin(), c.held_out.end(), '\n'));
  EXPECT_EQ(newlines_train, 360u);
  EXPECT_EQ(newlines_held, 40u);
  EXPECT_EQ(std::count(c.train.begin(), c.train.end(), '%'), 0);
}

TEST(Corpus, UnigramEntropyIsThatOfTheByteFrequencies) {
  const std::vector<std::uint8_t> two = {'a', 'b', 'a', 'b'};
  EXPECT_NEAR(unigram_entropy(two), std::log(2.0), 1e-12);
  const std::vector<std::uint8_t> one = {'a', 'a', 'a'};
  EXPECT_EQ(unigram_entropy(one), 0.0);
}

TEST(Corpus, SamplingIsDeterministicAndInRange) {
  std::set<std::size_t> seen;
  for (std::size_t i = 0; i < 100; ++i) {
    const std::size_t s = sequence_start(7, 3, i, 1000, 17);
    EXPECT_EQ(s, sequence_start(7, 3, i, 1000, 17));
    EXPECT_LE(s + 17, 1000u);
    seen.insert(s);
  }
  EXPECT_GT(seen.size(), 90u);
  EXPECT_NE(sequence_start(7, 3, 0, 1000, 17), sequence_start(8, 3, 0, 1000, 17));
}

TEST(Corpus, AMissingFolderSaysSo) {
  EXPECT_THROW(load_corpus(CorpusSpec{"/nonexistent/twinbed", {}, 10}, 17), ConfigError);
  EXPECT_THROW(load_corpus(CorpusSpec{test_corpus().string(), {"absent"}, 10}, 17), ConfigError);
}

TEST(TrainConfig, EveryTrainingConfigInExperimentsLoads) {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(TWINBED_SOURCE_DIR) / "experiments")) {
    const std::string stem = entry.path().stem().string();
    if (entry.path().extension() != ".json" || !stem.starts_with("train-")) continue;
    SCOPED_TRACE(entry.path().string());
    const TrainConfig c = load_train_config(entry.path());
    EXPECT_EQ(c.name, stem);  // the file name is the run's name
    EXPECT_EQ(train_config_to_json(load_train_config(entry.path())), train_config_to_json(c));
    ++n;
  }
  EXPECT_GE(n, 2);
}

TEST(TrainConfig, DefaultsAndRoundTrip) {
  const TrainConfig c = parse(small_config());
  ASSERT_EQ(c.variants.size(), 1u);
  EXPECT_EQ(c.variants[0].name, "baseline");
  EXPECT_EQ(c.output, "results/t");
  const TrainConfig back = parse(train_config_to_json(c));
  EXPECT_EQ(train_config_to_json(back), train_config_to_json(c));
}

TEST(TrainConfig, ErrorsNameTheField) {
  json j = small_config();
  j["modle"] = json::object();
  EXPECT_EQ(config_error(j), "/modle");
  j = small_config();
  j["model"]["heads"] = 3;
  EXPECT_EQ(config_error(j), "/model/heads");
  j = small_config();
  j["ranks"] = 3;  // global batch 4 does not split over 3 ranks
  EXPECT_EQ(config_error(j), "/variants/0/training/global_batch");
  EXPECT_EQ(config_error(small_config(json::array({{{"name", "z"}, {"techniques", {{{"pass", "zrdf"}}}}}}))),
            "/variants/0/techniques/0");
  EXPECT_EQ(config_error(small_config(json::array({{{"name", "l"}, {"techniques", {{{"pass", "lora"}, {"rank", 2}}}}}}))),
            "/variants/0/techniques");
  EXPECT_EQ(config_error(small_config(json::array({{{"name", "l"}, {"from", "later"}}}))), "/variants/0/from");
  EXPECT_EQ(config_error(small_config(json::array({{{"name", "a"}}, {{"name", "a"}}}))), "/variants/1/name");
  EXPECT_EQ(config_error(small_config(json::array({{{"name", "t"}, {"techniques", {{{"pass", "tgc"}, {"bitz", 4}}}}}}))),
            "/variants/0/techniques/0/bitz");
  j = small_config();
  j["collective_algorithm"] = "tree";  // no all-gather
  EXPECT_EQ(config_error(j), "/collective_algorithm");
  j = small_config();
  j["model"] = {{"layers", 1024}, {"hidden", 16384}, {"heads", 16}};  // 3.3e12 parameters
  EXPECT_EQ(config_error(j), "/model");
  EXPECT_EQ(config_error(small_config(json::array(
                {{{"name", "b"}},
                 {{"name", "l"}, {"from", "b"}, {"techniques", {{{"pass", "lora"}, {"rank", 2}}}}},
                 {{"name", "again"}, {"from", "l"}}}))),
            "/variants/2/from");
}

// What only the model, the corpus or the ranks can tell, before anything trains.
std::string check_error(const json& j, int ranks = 1) {
  try {
    check_variants(parse(j), ranks);
  } catch (const ConfigError& e) {
    return e.path();
  }
  return "(no error)";
}

TEST(CheckVariants, RefusesBeforeAnyStep) {
  EXPECT_EQ(check_error(small_config()), "(no error)");
  // n:m with m = 3 does not divide the 32 columns of qkv.
  EXPECT_EQ(check_error(small_config(json::array(
                {{{"name", "b"}}, {{"name", "nm"}, {"techniques", {{{"pass", "dsa"}, {"granularity", "nm"}, {"n", 1}, {"m", 3}}}}}}))),
            "/variants/1/techniques/0/m");
  EXPECT_EQ(check_error(small_config(json::array({{{"name", "p"}, {"techniques", {{{"pass", "precision"}, {"dtype", "fp8"}}}}}}))),
            "/variants/0/techniques/0");
  EXPECT_EQ(check_error(small_config(json::array({{{"name", "f"}, {"data", {{"files", {"absent"}}}}}}))),
            "/variants/0/data/files/0");
  EXPECT_EQ(check_error(small_config(), 3), "/variants/0/training/global_batch");  // 4 sequences over 3 ranks
  json big = small_config();
  big["model"] = {{"layers", 64}, {"hidden", 32}, {"heads", 2}, {"seq_len", 4096}};
  big["training"]["global_batch"] = 64;
  EXPECT_EQ(check_error(big), "/variants/0/training/global_batch");  // ~36 GiB of activations
}

VariantResult train(const TrainConfig& c, std::size_t i, const Gpt* start = nullptr) {
  auto ranks = solo_ranks();
  return train_variant(c, i, *ranks, start);
}

TEST(Training, TheLossFallsBelowTheUnigramEntropyAndRerunsAreBitIdentical) {
  const TrainConfig c = parse(small_config());
  const VariantResult a = train(c, 0);
  ASSERT_EQ(a.steps.size(), 40u);
  ASSERT_TRUE(a.steps.back().held_out_loss.has_value());
  EXPECT_LT(*a.steps.back().held_out_loss, a.unigram_entropy);
  ASSERT_TRUE(a.steps.back().held_out_accuracy.has_value());
  EXPECT_GT(*a.steps.back().held_out_accuracy, 0.0);
  EXPECT_LE(*a.steps.back().held_out_accuracy, 1.0);
  EXPECT_FALSE(a.steps.front().held_out_accuracy.has_value());  // evaluated every 20 steps
  EXPECT_LT(a.steps.back().train_loss, a.steps.front().train_loss);
  const VariantResult b = train(c, 0);
  for (std::size_t s = 0; s < a.steps.size(); ++s) EXPECT_EQ(a.steps[s].train_loss, b.steps[s].train_loss) << s;
  EXPECT_TRUE(std::equal(a.model.params().begin(), a.model.params().end(), b.model.params().begin()));
  EXPECT_EQ(a.trainable, static_cast<std::int64_t>(a.model.params().size()));
  EXPECT_EQ(a.steps.back().bytes_sent, 0);  // one rank sends nothing
}

TEST(Training, LoraTrainsOnlyItsAdaptersAndLeavesTheBaseBitIdentical) {
  const TrainConfig c = parse(small_config(json::array(
      {{{"name", "base"}, {"training", {{"steps", 5}}}},
       {{"name", "lora"}, {"from", "base"}, {"training", {{"steps", 10}}},
        {"techniques", {{{"pass", "lora"}, {"rank", 4}, {"targets", {"qkv", "fc2"}}}}}}})));
  const VariantResult base = train(c, 0);
  const VariantResult lora = train(c, 1, &base.model);
  // qkv: d = 3·32, k = 32; fc2: d = 32, k = 4·32; two layers.
  EXPECT_EQ(lora.trainable, 2 * (4 * (96 + 32) + 4 * (32 + 128)));
  EXPECT_TRUE(std::equal(base.model.params().begin(), base.model.params().end(), lora.model.params().begin()));
  ASSERT_TRUE(lora.model.has_lora());
  const auto a = lora.model.adapter_params();
  EXPECT_TRUE(std::any_of(a.begin(), a.end(), [](float x) { return x != 0; }));
}

TEST(Training, DsaUpdatesOnlyTheEntriesItsMaskKeeps) {
  // One refresh (step 0) for the whole run: the kept entries are fixed, so exactly the kept count of
  // each target changes and every other entry keeps its initial value.
  const TrainConfig c = parse(small_config(json::array(
      {{{"name", "dsa"},
        {"training", {{"steps", 6}}},
        {"techniques", {{{"pass", "dsa"}, {"density", 0.25}, {"refresh_every", 1000}, {"targets", {"fc1", "proj"}}}}}}})));
  const VariantResult r = train(c, 0);
  const Gpt initial(c.model, c.variants[0].training.seed);
  for (const Weight& w : r.model.weights()) {
    std::size_t changed = 0;
    for (std::size_t i = 0; i < w.size(); ++i) changed += r.model.params()[w.offset + i] != initial.params()[w.offset + i];
    if (w.kind == ParamKind::Fc1 || w.kind == ParamKind::Proj)
      EXPECT_EQ(changed, kernels::dsa_active_count(w.size(), 0.25)) << w.name;
    else
      EXPECT_GT(changed, 0u) << w.name;
  }
  EXPECT_NEAR(r.steps.back().active_fraction, 0.25, 1e-9);
}

TEST(Training, Fp16StorageScalesTheLossAndBf16NeedsNoScaling) {
  const TrainConfig c = parse(small_config(json::array(
      {{{"name", "fp16"}, {"training", {{"steps", 3}}}, {"techniques", {{{"pass", "precision"}, {"dtype", "fp16"}}}}},
       {{"name", "bf16"}, {"training", {{"steps", 3}}}, {"techniques", {{{"pass", "precision"}, {"dtype", "bf16"}}}}}})));
  const VariantResult fp16 = train(c, 0);
  const VariantResult bf16 = train(c, 1);
  EXPECT_EQ(fp16.steps[0].loss_scale, 65536.0f);
  EXPECT_EQ(fp16.steps[0].low_precision_layers, 2);
  EXPECT_EQ(bf16.steps[0].loss_scale, 1.0f);
  const TrainConfig base = parse(small_config(json::array({{{"name", "b"}, {"training", {{"steps", 3}}}}})));
  const VariantResult fp32 = train(base, 0);
  EXPECT_NE(bf16.steps.back().train_loss, fp32.steps.back().train_loss);  // the rounding is real
  EXPECT_NEAR(bf16.steps.back().train_loss, fp32.steps.back().train_loss, 0.05);
}

TEST(Training, ComparisonsPairEachVariantWithItsReference) {
  const TrainConfig c = parse(small_config(json::array(
      {{{"name", "base"}, {"training", {{"steps", 4}, {"eval_every", 2}}}},
       {{"name", "q"}, {"training", {{"steps", 4}, {"eval_every", 2}}}, {"techniques", {{{"pass", "tgc"}, {"bits", 4}}}}},
       {{"name", "base-seed2"}, {"training", {{"steps", 4}, {"eval_every", 2}, {"seed", 2}}}}})));
  std::vector<VariantResult> results;
  for (std::size_t i = 0; i < 3; ++i) results.push_back(train(c, i));
  const auto comparisons = compare_variants(c, results);
  ASSERT_EQ(comparisons.size(), 1u);
  EXPECT_EQ(comparisons[0].variant, "q");
  EXPECT_EQ(comparisons[0].reference, "base");
  EXPECT_DOUBLE_EQ(comparisons[0].held_out_delta_equal_steps, final_held_out(results[1]) - final_held_out(results[0]));
  // The spread of the reference and its technique-free peer (another seed).
  ASSERT_TRUE(comparisons[0].seed_spread_loss.has_value());
  EXPECT_DOUBLE_EQ(*comparisons[0].seed_spread_loss, std::abs(final_held_out(results[2]) - final_held_out(results[0])));
  EXPECT_GT(*comparisons[0].seed_spread_loss, 0.0);
  EXPECT_EQ(comparisons[0].seed_runs, 2);
  const json j = train_results_json(c, results, json::object());
  EXPECT_EQ(j["format"], "twinbed-train-1");
  EXPECT_EQ(j["variants"][1]["steps"].size(), 4u);
  EXPECT_TRUE(j["comparisons"][0]["seed_spread_loss"].is_number());
}

TEST(Training, HeldOutAtTimeInterpolatesBetweenEvaluations) {
  VariantResult r{"x", {}, 0, 0, 0, 0, 0, 0, 0, Gpt(GptShape{1, 8, 2, 4, 256}, 1)};
  StepRecord a, b;
  a.elapsed_s = 1;
  a.held_out_loss = 3;
  b.elapsed_s = 3;
  b.held_out_loss = 2;
  r.steps = {a, b};
  EXPECT_DOUBLE_EQ(*held_out_at_time(r, 2), 2.5);
  EXPECT_FALSE(held_out_at_time(r, 0.5).has_value());
  EXPECT_FALSE(held_out_at_time(r, 4).has_value());
}

TEST(Checkpoint, RoundTripsAndRefusesAnotherShape) {
  const Gpt m(GptShape{1, 8, 2, 4, 256}, 3);
  const fs::path file = fs::temp_directory_path() / ("twinbed-ckpt-" + std::to_string(::getpid()) + ".bin");
  save_checkpoint(m, file.string());
  const Gpt back = load_checkpoint(file.string(), m.shape());
  EXPECT_TRUE(std::equal(m.params().begin(), m.params().end(), back.params().begin()));
  EXPECT_THROW(load_checkpoint(file.string(), GptShape{2, 8, 2, 4, 256}), ConfigError);
  std::ofstream(file, std::ios::app) << "x";
  EXPECT_THROW(load_checkpoint(file.string(), m.shape()), ConfigError);
  fs::remove(file);
}

}  // namespace
}  // namespace twinbed::train
