// Training over MPI on however many ranks mpirun started (ctest: 2 and 4): data-parallel training
// equals one rank on the same global batch, the replicas stay bit-identical, and TGC sends exactly its
// payloads. Every rank reaches the same verdicts, so no rank leaves a collective early.
#include <mpi.h>

#include <gtest/gtest.h>

#include <cmath>

#include "twinbed/kernels/payload.hpp"
#include "twinbed/real/mpi.hpp"
#include "twinbed/train/train_config.hpp"
#include "twinbed/train/trainer.hpp"
#include "train_support.hpp"
#include "support/mpi_world.hpp"

namespace twinbed::train {
namespace {

using nlohmann::json;

int world() { return twinbed::test::world_size(); }

TrainConfig config(json variants, int steps) {
  json j = test::small_config(variants);
  j["ranks"] = world();
  j["training"]["steps"] = steps;
  j["training"]["global_batch"] = 4 * world();
  return train_config_from_json(j, ".");
}

TEST(DataParallel, EqualsOneRankOnTheSameGlobalBatch) {
  const TrainConfig c = config(json::array({{{"name", "b"}}}), 8);
  auto ranks = mpi_ranks("ring");
  const VariantResult parallel = train_variant(c, 0, *ranks, nullptr);
  auto solo = solo_ranks();
  const VariantResult single = train_variant(c, 0, *solo, nullptr);
  for (std::size_t s = 0; s < parallel.steps.size(); ++s)
    EXPECT_NEAR(parallel.steps[s].train_loss, single.steps[s].train_loss, 1e-4) << "step " << s + 1;
  float worst = 0;
  for (std::size_t i = 0; i < parallel.model.params().size(); ++i)
    worst = std::max(worst, std::abs(parallel.model.params()[i] - single.model.params()[i]));
  EXPECT_LT(worst, 1e-4f);  // fp32 sums in another order, 8 Adam steps of lr 0.01
  EXPECT_GT(parallel.steps.back().bytes_sent, 0);
}

TEST(DataParallel, ReplicasStayBitIdentical) {
  const TrainConfig c = config(json::array({{{"name", "q"}, {"techniques", {{{"pass", "tgc"}, {"bits", "adaptive"}, {"topk_fraction", 0.3}}}}}}), 5);
  auto ranks = mpi_ranks("rhd");
  const VariantResult r = train_variant(c, 0, *ranks, nullptr);
  // Every rank's parameters against rank 0's, gathered whole.
  const auto p = r.model.params();
  std::vector<float> all(p.size() * static_cast<std::size_t>(world()));
  ranks->all_gather(std::vector<float>(p.begin(), p.end()), all);
  for (int q = 1; q < world(); ++q)
    EXPECT_TRUE(std::equal(p.begin(), p.end(), all.begin() + static_cast<std::ptrdiff_t>(q * p.size()))) << "rank " << q;
}

// The payload a rank sends, padded to whole floats, to each of the other ranks in a ring all-gather.
std::int64_t gathered_bytes(std::size_t payload) {
  return static_cast<std::int64_t>((payload + 3) / 4 * 4) * (world() - 1);
}

TEST(Tgc, SendsExactlyItsPayloads) {
  const TrainConfig c = config(json::array({{{"name", "dense"}},
                                            {{"name", "q4"}, {"techniques", {{{"pass", "tgc"}, {"bits", 4}}}}},
                                            {{"name", "top"}, {"techniques", {{{"pass", "tgc"}, {"bits", 8}, {"topk_fraction", 0.05}}}}},
                                            {{"name", "raw"}, {"techniques", {{{"pass", "tgc"}, {"topk_fraction", 0.05}}}}}}),
                               2);
  auto ranks = mpi_ranks("ring");
  const VariantResult dense = train_variant(c, 0, *ranks, nullptr);
  const VariantResult q4 = train_variant(c, 1, *ranks, nullptr);
  const VariantResult top = train_variant(c, 2, *ranks, nullptr);
  const VariantResult raw = train_variant(c, 3, *ranks, nullptr);
  const std::size_t n = dense.model.params().size();
  const std::size_t k = static_cast<std::size_t>(std::ceil(0.05 * static_cast<double>(n)));
  EXPECT_EQ(q4.steps[1].bytes_sent, gathered_bytes(kernels::quant_payload_bytes(n, kernels::QuantSpec{4, 256})));
  EXPECT_EQ(top.steps[1].bytes_sent, gathered_bytes(kernels::sparse_quant_payload_bytes(k, kernels::QuantSpec{8, 256})));
  EXPECT_EQ(raw.steps[1].bytes_sent, gathered_bytes(kernels::sparse_payload_bytes(k)));
  EXPECT_EQ(q4.steps[1].tgc_bits, 4);
  EXPECT_LT(q4.steps[1].bytes_sent, dense.steps[1].bytes_sent);
}

}  // namespace
}  // namespace twinbed::train
