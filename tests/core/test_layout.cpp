// Layout: derived sizes, every impossible layout an error naming its field, warnings for legal but
// doubtful ones, strict JSON, and the per-rank memory it implies.
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "twinbed/core/error.hpp"
#include "twinbed/core/layout.hpp"
#include "twinbed/core/model.hpp"

namespace twinbed {
namespace {

using json = nlohmann::json;

// GPT-3 175B on 1,024 GPUs as Narayanan et al. run it: tp 8, pp 16 (interleaved), dp 8, B = 1536.
Layout gpt3_layout() {
  Layout l;
  l.dp = 8;
  l.tp = 8;
  l.pp = 16;
  l.sequence_parallel = true;
  l.micro_batch = 1;
  l.global_batch = 1536;
  l.schedule = PipelineSchedule::Interleaved1F1B;
  l.virtual_stages = 3;
  return l;
}

TransformerModel small_moe() {
  TransformerModel m = gpt_model("moe", 4, 512, 8, 256, 1000);
  m.experts = 8;
  m.top_k = 2;
  return m;
}

// The ConfigError's message when validate() throws one, else a marker.
std::string error_of(const Layout& l, const TransformerModel& m, int ranks, int per_host = 8) {
  try {
    validate(l, m, ranks, per_host);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(Layout, DerivedSizes) {
  const Layout l = gpt3_layout();
  EXPECT_EQ(l.world_size(), 1024);
  EXPECT_EQ(l.micro_batches(), 192);
  EXPECT_EQ(l.grad_accum_steps(), 192);
  const TransformerModel m = model_preset("gpt3-175b");
  EXPECT_EQ(l.stage_layers(m, 0), 6);
  EXPECT_EQ(l.chunk_layers(m, 0).count, 2);
  EXPECT_EQ(l.chunk_layers(m, 17).first, 34);  // chunk 1 of stage 1: virtual stage 1·16 + 1
  EXPECT_EQ(l.op_context(), (OpContext{1, 8, true, 1}));
}

TEST(Layout, Gpt3IsValidWithoutWarnings) {
  EXPECT_TRUE(validate(gpt3_layout(), model_preset("gpt3-175b"), 1024, 8).empty());
  Layout l = gpt3_layout();
  l.schedule = PipelineSchedule::OneFOneB;
  l.virtual_stages = 1;
  l.pp = 8;
  l.dp = 16;
  EXPECT_TRUE(validate(l, model_preset("gpt3-175b"), 1024, 8).empty());
}

TEST(Layout, ProductMustMatchTheCluster) {
  const std::string e = error_of(gpt3_layout(), model_preset("gpt3-175b"), 2048);
  EXPECT_TRUE(contains(e, "/layout/dp")) << e;
  EXPECT_TRUE(contains(e, "dp = 16 fits")) << e;
}

TEST(Layout, TensorParallelMustDivideHeadsAndFfn) {
  TransformerModel odd_ffn = gpt_model("x", 4, 512, 8, 256, 1000);
  odd_ffn.ffn_hidden = 1004;
  TransformerModel gqa = gpt_model("x", 4, 512, 8, 256, 1000);
  gqa.kv_heads = 2;  // grouped-query attention: tp splits the key/value heads too
  struct Case {
    TransformerModel model;
    int tp;
    std::vector<std::string> said;  // besides the path
  };
  const std::vector<Case> cases = {{model_preset("gpt3-175b"), 64, {"accepted values: 1, 2, 4, 8, 16, 32"}},
                                   {odd_ffn, 8, {"ffn_hidden"}},
                                   {gqa, 4, {"kv_heads (2)", "accepted values: 1, 2"}}};
  for (const Case& c : cases) {
    Layout l;
    l.tp = c.tp;
    l.global_batch = 8;
    const std::string e = error_of(l, c.model, c.tp);
    EXPECT_TRUE(contains(e, "/layout/tp")) << e;
    for (const std::string& part : c.said) EXPECT_TRUE(contains(e, part)) << e;
  }
  Layout two;
  two.tp = 2;
  two.global_batch = 8;
  EXPECT_TRUE(validate(two, gqa, 2, 8).empty());
}

TEST(Layout, PipelineMustDivideLayers) {
  const TransformerModel m = model_preset("gpt3-175b");
  Layout l;
  l.pp = 5;
  l.global_batch = 5;
  const std::string e = error_of(l, m, 5);
  EXPECT_TRUE(contains(e, "/layout/pp")) << e;
  EXPECT_TRUE(contains(e, "1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 96")) << e;

  Layout v = gpt3_layout();
  v.virtual_stages = 4;  // 16·4 = 64 does not divide 96
  EXPECT_TRUE(contains(error_of(v, m, 1024), "/layout/virtual_stages"));
  v.virtual_stages = 1;  // interleaved needs v >= 2
  const std::string one = error_of(v, m, 1024);
  EXPECT_TRUE(contains(one, "/layout/virtual_stages")) << one;
  EXPECT_TRUE(contains(one, "2, 3, 6")) << one;
  v.schedule = PipelineSchedule::OneFOneB;
  v.virtual_stages = 2;  // v > 1 without interleaving
  EXPECT_TRUE(contains(error_of(v, m, 1024), "/layout/virtual_stages"));

  Layout single;
  single.schedule = PipelineSchedule::Interleaved1F1B;
  single.virtual_stages = 2;
  single.global_batch = 4;
  EXPECT_TRUE(contains(error_of(single, m, 1), "/layout/schedule"));
}

// Llama 3 405B's split (Llama Team 2024, §3.3.2): 126 layers + the embedding + the loss in 16 × 8
// one-slot chunks; the first chunk holds only the embedding, the last only the loss.
TEST(Layout, EmbeddingAndLossTakeALayersSlotInThePipelineSplit) {
  TransformerModel m = gpt_model("llama-like", 126, 1024, 8, 256, 1000);
  Layout l;
  l.pp = 16;
  l.global_batch = 16;
  l.schedule = PipelineSchedule::Interleaved1F1B;
  l.virtual_stages = 8;
  const std::string uneven = error_of(l, m, 16);  // 126 layers in 128 chunks: not without the slots
  EXPECT_TRUE(contains(uneven, "/layout/pp")) << uneven;
  l.embedding_in_split = l.loss_in_split = true;
  EXPECT_TRUE(validate(l, m, 16, 8).empty());
  EXPECT_EQ(l.pipeline_slots(m), 128);
  EXPECT_EQ(l.chunk_layers(m, 0).count, 0);    // the embedding's chunk
  EXPECT_EQ(l.chunk_layers(m, 1).first, 0);    // stage 1's first chunk: layer 0
  EXPECT_EQ(l.chunk_layers(m, 16).first, 15);  // stage 0's second chunk
  EXPECT_EQ(l.chunk_layers(m, 126).first, 125);
  EXPECT_EQ(l.chunk_layers(m, 127).count, 0);  // the loss's chunk
  std::int64_t layers = 0, params = 0;
  for (int stage = 0; stage < l.pp; ++stage) {
    EXPECT_EQ(l.stage_layers(m, stage), stage == 0 || stage == 15 ? 7 : 8) << stage;
    layers += l.stage_layers(m, stage);
    params += rank_parameters(m, l, stage).total();
  }
  EXPECT_EQ(layers, 126);
  const std::int64_t tied_copy = m.vocab * m.hidden;  // the last stage's LM head
  EXPECT_EQ(params, parameter_count(m).total() + tied_copy);

  // Without interleaving: 14 layers + 2 slots over 4 stages of 4.
  m.layers = 14;
  Layout flat;
  flat.pp = 4;
  flat.global_batch = 4;
  flat.embedding_in_split = true;
  const std::string one_slot = error_of(flat, m, 4);  // 15 slots
  EXPECT_TRUE(contains(one_slot, "/layout/pp")) << one_slot;
  EXPECT_TRUE(contains(one_slot, "embedding/loss = 15")) << one_slot;
  EXPECT_TRUE(contains(one_slot, "accepted values: 1, 3, 5, 15")) << one_slot;
  flat.loss_in_split = true;
  EXPECT_TRUE(validate(flat, m, 4, 8).empty());
  EXPECT_EQ(flat.stage_layers(m, 0), 3);
  EXPECT_EQ(flat.chunk_layers(m, 1).first, 3);
  EXPECT_EQ(flat.stage_layers(m, 3), 3);

  // Only the embedding's slot: the last stage keeps its full share.
  m.layers = 15;
  flat.loss_in_split = false;
  EXPECT_EQ(flat.stage_layers(m, 0), 3);
  EXPECT_EQ(flat.chunk_layers(m, 3).first, 11);
  EXPECT_EQ(flat.stage_layers(m, 3), 4);
}

// Megatron's block method: the first recompute_layers layers of every model chunk, counted from the
// chunk's first transformer layer (after the embedding's slot), a short chunk whole.
TEST(Layout, RecomputeLayersAreEachChunksFirst) {
  TransformerModel m = gpt_model("llama-like", 14, 1024, 8, 256, 1000);
  Layout l;
  l.pp = 4;
  l.global_batch = 4;
  l.embedding_in_split = l.loss_in_split = true;  // chunks of 3, 4, 4, 3 layers: 0-2, 3-6, 7-10, 11-13
  l.recompute = Recompute::Full;
  l.recompute_layers = 2;
  ASSERT_TRUE(validate(l, m, 4, 8).empty());
  const std::vector<bool> expected = {true, true, false, true, true, false, false,
                                      true, true, false, false, true, true, false};
  for (std::int64_t layer = 0; layer < m.layers; ++layer) {
    EXPECT_EQ(l.recomputes_layer(m, layer), expected[static_cast<std::size_t>(layer)]) << layer;
  }
  EXPECT_EQ(l.recomputed_layers(m), 8);
  EXPECT_TRUE(l.recomputes(1));
  EXPECT_FALSE(l.recomputes(2));
  l.recompute_layers = 4;  // more than the 3-layer chunks hold: those whole
  EXPECT_EQ(l.recomputed_layers(m), 14);
  l.recompute_layers = 0;  // "all"
  EXPECT_EQ(l.recomputed_layers(m), 14);
  EXPECT_TRUE(l.recomputes(100));
  l.recompute = Recompute::None;
  EXPECT_EQ(l.recomputed_layers(m), 0);
  EXPECT_FALSE(l.recomputes(0));

  // The iteration's FLOPs: the recomputation's forward on the recomputed layers' share.
  l.recompute = Recompute::Full;
  const double none = training_flops(m, l.global_batch, Recompute::None);
  const double full = training_flops(m, l.global_batch, Recompute::Full);
  EXPECT_DOUBLE_EQ(training_flops(m, l), full);
  l.recompute_layers = 2;
  EXPECT_NEAR(training_flops(m, l), none + (full - none) * 8 / 14, 1e-9 * full);
  l.recompute = Recompute::None;
  l.recompute_layers = 0;
  EXPECT_DOUBLE_EQ(training_flops(m, l), none);
}

// Context parallelism: a fourth degree in the product, the sequence in 2·cp chunks, dense only.
TEST(Layout, ContextParallelism) {
  const TransformerModel m = model_preset("gpt3-1.3b");  // s 2048, 16 heads
  Layout l;
  l.tp = 2, l.cp = 4, l.dp = 2, l.global_batch = 2;
  EXPECT_EQ(l.world_size(), 16);
  EXPECT_EQ(l.grad_ranks(), 8);
  EXPECT_EQ(l.micro_batches(), 1);  // context ranks share their sequences
  EXPECT_EQ(l.op_context().cp, 4);
  EXPECT_TRUE(validate(l, m, 16, 8).empty());
  const std::string world = error_of(l, m, 8);
  EXPECT_TRUE(contains(world, "dp·tp·cp·pp = 2·2·4·1 = 16")) << world;
  EXPECT_TRUE(contains(world, "dp = 1 fits")) << world;
  Layout odd = l;
  odd.cp = 3, odd.dp = 1, odd.tp = 1;
  const std::string chunks = error_of(odd, m, 3);  // 2048 tokens in 6 chunks
  EXPECT_TRUE(contains(chunks, "/layout/cp")) << chunks;
  EXPECT_TRUE(contains(chunks, "accepted values: 1")) << chunks;
  Layout sp = l;
  sp.sequence_parallel = true, sp.tp = 16, sp.cp = 256, sp.dp = 1;  // 8 tokens per context rank over 16
  const std::string split = error_of(sp, gpt_model("long", 2, 1024, 16, 2048, 1000), 4096);
  EXPECT_TRUE(contains(split, "/layout/sequence_parallel")) << split;
  EXPECT_TRUE(contains(split, "seq_len/cp = 8")) << split;
  TransformerModel moe = small_moe();
  // Expert parallelism over the dp·cp ranks (MoE parallel folding): ep up to dp·cp = 4.
  Layout ep;
  ep.dp = 2, ep.ep = 4, ep.cp = 2, ep.global_batch = 2;
  EXPECT_TRUE(validate(ep, moe, 4, 8).empty());
  ep.ep = 8;
  const std::string folded = error_of(ep, moe, 4);
  EXPECT_TRUE(contains(folded, "/layout/ep")) << folded;
  EXPECT_TRUE(contains(folded, "dp·cp (4)")) << folded;
  // The ring (cp_comm "p2p") runs a flash kernel per step: with another attention it is refused; the
  // op context carries it only where there is a ring (cp > 1).
  Layout ring = l;
  ring.cp_comm = CpComm::P2P;
  const std::string unfused = error_of(ring, m, 16);
  EXPECT_TRUE(contains(unfused, "/layout/cp_comm")) << unfused;
  EXPECT_TRUE(contains(unfused, "\"fused\"")) << unfused;
  TransformerModel flash = m;
  flash.attention = AttentionImpl::Flash2;
  EXPECT_TRUE(validate(ring, flash, 16, 8).empty());
  EXPECT_TRUE(ring.op_context().cp_ring);
  ring.cp = 1, ring.dp = 8, ring.global_batch = 8;
  EXPECT_TRUE(validate(ring, m, 16, 8).empty());
  EXPECT_FALSE(ring.op_context().cp_ring);
  // ZeRO shards over the dp·cp ranks that hold the same parameters.
  l.zero_stage = 1;
  Layout flat = l;
  flat.cp = 1, flat.dp = 8;
  EXPECT_EQ(rank_model_state_bytes(m, l, 0), rank_model_state_bytes(m, flat, 0));
}

TEST(Layout, BatchAndZeroStage) {
  const TransformerModel m = model_preset("gpt3-175b");
  Layout l = gpt3_layout();
  l.global_batch = 1540;  // not a multiple of dp·b = 8
  EXPECT_TRUE(contains(error_of(l, m, 1024), "/layout/global_batch"));
  l.global_batch = 8 * 20;  // 20 micro-batches per pipeline, not a multiple of pp = 16 (interleaved)
  const std::string e = error_of(l, m, 1024);
  EXPECT_TRUE(contains(e, "/layout/global_batch")) << e;
  EXPECT_TRUE(contains(e, "multiples of 128")) << e;
  l = gpt3_layout();
  l.zero_stage = 4;
  const std::string z = error_of(l, m, 1024);
  EXPECT_TRUE(contains(z, "/layout/zero_stage")) << z;
  EXPECT_TRUE(contains(z, "0, 1, 2, 3")) << z;
  l = gpt3_layout();
  l.micro_batch = 0;
  EXPECT_TRUE(contains(error_of(l, m, 1024), "/layout/micro_batch"));
  // The parameter gather overlap needs ZeRO 1-2's gather of the updated shards.
  for (int zero : {0, 3}) {
    l = gpt3_layout();
    l.zero_stage = zero;
    l.overlap_param_gather = true;
    const std::string o = error_of(l, m, 1024);
    EXPECT_TRUE(contains(o, "/layout/overlap_param_gather")) << o;
    EXPECT_TRUE(contains(o, "zero_stage to 1 or 2")) << o;
  }
  l.zero_stage = 1;
  EXPECT_TRUE(validate(l, m, 1024, 8).empty());
  // BACKWARD_POST times ZeRO-3's backward gathers, which no other stage has.
  Layout post = gpt3_layout();
  post.zero_stage = 1;
  post.backward_prefetch = BackwardPrefetch::Post;
  const std::string b = error_of(post, m, 1024);
  EXPECT_TRUE(contains(b, "/layout/backward_prefetch")) << b;
  EXPECT_TRUE(contains(b, "zero_stage to 3")) << b;
  post.zero_stage = 3;
  EXPECT_TRUE(validate(post, m, 1024, 8).empty());
  // Hybrid sharding: ZeRO-3 in equal groups of the data-parallel ranks.
  Layout hybrid = gpt3_layout();
  hybrid.zero_stage = 3;
  ASSERT_EQ(hybrid.grad_ranks(), 8);
  for (int k : {1, 2, 4, 8}) {
    hybrid.zero_shard_ranks = k;
    EXPECT_TRUE(validate(hybrid, m, 1024, 8).empty()) << k;
    EXPECT_EQ(hybrid.zero_shards(), k);
    EXPECT_EQ(hybrid.zero_replicas(), 8 / k);
  }
  hybrid.zero_shard_ranks = 3;
  const std::string uneven = error_of(hybrid, m, 1024);
  EXPECT_TRUE(contains(uneven, "/layout/zero_shard_ranks")) << uneven;
  EXPECT_TRUE(contains(uneven, "must divide the dp = 8")) << uneven;
  hybrid.zero_shard_ranks = 4;
  hybrid.zero_stage = 2;
  const std::string stage = error_of(hybrid, m, 1024);
  EXPECT_TRUE(contains(stage, "/layout/zero_shard_ranks")) << stage;
  EXPECT_TRUE(contains(stage, "set zero_stage to 3")) << stage;
  hybrid.zero_shard_ranks = 8;  // the whole group: plain sharding, any stage
  EXPECT_TRUE(validate(hybrid, m, 1024, 8).empty());
  EXPECT_EQ(hybrid.zero_replicas(), 1);
  // Distributing the saved activations splits full recomputation's checkpoint; without SP only.
  for (Recompute r : {Recompute::None, Recompute::Selective}) {
    l = gpt3_layout();
    l.sequence_parallel = false;
    l.recompute = r;
    l.distribute_saved_activations = true;
    const std::string d = error_of(l, m, 1024);
    EXPECT_TRUE(contains(d, "/layout/distribute_saved_activations")) << d;
    EXPECT_TRUE(contains(d, "recompute to \"full\"")) << d;
  }
  l.recompute = Recompute::Full;
  EXPECT_TRUE(validate(l, m, 1024, 8).empty());
  l.sequence_parallel = true;
  const std::string d = error_of(l, m, 1024);
  EXPECT_TRUE(contains(d, "/layout/distribute_saved_activations")) << d;
  EXPECT_TRUE(contains(d, "sequence_parallel")) << d;
  // Recomputing the first layers of each chunk is full recomputation's block method only.
  for (Recompute r : {Recompute::None, Recompute::Selective}) {
    l = gpt3_layout();
    l.recompute = r;
    l.recompute_layers = 2;
    const std::string why = error_of(l, m, 1024);
    EXPECT_TRUE(contains(why, "/layout/recompute_layers")) << why;
    EXPECT_TRUE(contains(why, "recompute to \"full\"")) << why;
  }
  l = gpt3_layout();
  l.recompute = Recompute::Full;
  l.recompute_layers = 2;
  EXPECT_TRUE(validate(l, m, 1024, 8).empty());
  // Userbuffers overlap the sequence-parallel collectives: none without sequence parallelism at tp >= 2.
  l = gpt3_layout();
  l.tp_comm_overlap = true;
  EXPECT_TRUE(validate(l, m, 1024, 8).empty());
  l.sequence_parallel = false;
  const std::string o = error_of(l, m, 1024);
  EXPECT_TRUE(contains(o, "/layout/tp_comm_overlap")) << o;
  EXPECT_TRUE(contains(o, "set sequence_parallel to true")) << o;
}

TEST(Layout, DistributedSavedActivationsKeepATensorParallelShareOfTheCheckpoint) {
  const TransformerModel m = gpt_model("m", 8, 1024, 8, 256, 1000);
  Layout l;
  l.tp = 8;
  l.recompute = Recompute::Full;
  const Bytes whole = rank_activation_bytes_per_layer(m, l);
  EXPECT_EQ(whole, 2 * 256 * 1024);  // the layer input: s·b·h BF16 elements
  l.distribute_saved_activations = true;
  EXPECT_EQ(rank_activation_bytes_per_layer(m, l), whole / 8);
  l.tp = 3;  // equal 1-D chunks, the last padded
  EXPECT_EQ(rank_activation_bytes_per_layer(m, l), (whole + 2) / 3);
  // Without recomputation nothing is split: the builder measures the recompute workspace this way.
  Layout none = l, plain = l;
  none.recompute = plain.recompute = Recompute::None;
  plain.distribute_saved_activations = false;
  EXPECT_EQ(rank_activation_bytes_per_layer(m, none), rank_activation_bytes_per_layer(m, plain));
  l.tp = 1;
  l.global_batch = 1;
  const std::vector<std::string> w = validate(l, m, 1, 8);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_TRUE(contains(w[0], "/layout/distribute_saved_activations")) << w[0];
}

TEST(Layout, ExpertParallelism) {
  Layout l;
  l.dp = 4;
  l.global_batch = 16;
  l.ep = 2;
  EXPECT_TRUE(contains(error_of(l, gpt_model("dense", 4, 512, 8, 256, 1000), 4), "/layout/ep"));
  EXPECT_TRUE(validate(l, small_moe(), 4, 8).empty());
  l.ep = 8;  // does not divide dp = 4
  const std::string e = error_of(l, small_moe(), 4);
  EXPECT_TRUE(contains(e, "/layout/ep")) << e;
  EXPECT_TRUE(contains(e, "accepted values: 1, 2, 4")) << e;
  TransformerModel six = small_moe();
  six.experts = 6;
  l.ep = 4;  // does not divide 6 experts
  EXPECT_TRUE(contains(error_of(l, six, 4), "/layout/ep"));
}

TEST(Layout, SequenceParallelNeedsDivisibleSequence) {
  TransformerModel m = gpt_model("x", 4, 512, 8, 250, 1000);
  Layout l;
  l.tp = 4;
  l.sequence_parallel = true;
  l.global_batch = 4;
  EXPECT_TRUE(contains(error_of(l, m, 4), "/layout/sequence_parallel"));
}

TEST(Layout, InvalidModelIsNamedUnderModel) {
  TransformerModel m = gpt_model("x", 4, 512, 7, 256, 1000);
  Layout l;
  l.global_batch = 1;
  EXPECT_TRUE(contains(error_of(l, m, 1), "/model/heads"));
}

TEST(Layout, WarningsForLegalButDoubtfulLayouts) {
  const TransformerModel m = model_preset("gpt3-175b");
  Layout l;
  l.tp = 16;
  l.pp = 4;
  l.global_batch = 2;  // 2 micro-batches for 4 stages
  l.sequence_parallel = false;
  const std::vector<std::string> w = validate(l, m, 64, 8);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_TRUE(contains(w[0], "/layout/tp")) << w[0];
  EXPECT_TRUE(contains(w[1], "/layout/global_batch")) << w[1];

  Layout sp;
  sp.sequence_parallel = true;  // with tp = 1: legal, does nothing
  sp.zero_stage = 2;            // with dp = 1: legal, shards nothing
  sp.global_batch = 1;
  const std::vector<std::string> w2 = validate(sp, m, 1, 8);
  ASSERT_EQ(w2.size(), 2u);
  EXPECT_TRUE(contains(w2[0], "/layout/sequence_parallel"));
  EXPECT_TRUE(contains(w2[1], "/layout/zero_stage"));

  Layout gather;
  gather.zero_stage = 1;
  gather.overlap_param_gather = true;  // with dp = 1: nothing to gather
  gather.global_batch = 1;
  const std::vector<std::string> w4 = validate(gather, m, 1, 8);
  ASSERT_EQ(w4.size(), 2u);
  EXPECT_TRUE(contains(w4[0], "/layout/overlap_param_gather")) << w4[0];

  Layout split;
  split.global_batch = 1;
  split.loss_in_split = true;  // with pp = 1: nothing to balance
  const std::vector<std::string> w3 = validate(split, gpt_model("odd", 95, 1024, 8, 256, 1000), 1, 8);
  ASSERT_EQ(w3.size(), 1u);
  EXPECT_TRUE(contains(w3[0], "/layout/loss_in_split")) << w3[0];
  // ...and indeed SP at t = 1 leaves activations unchanged.
  EXPECT_EQ(activation_bytes_per_layer(m, 1, 1, true, Recompute::None),
            activation_bytes_per_layer(m, 1, 1, false, Recompute::None));
}

TEST(Layout, ScheduleNames) {
  EXPECT_EQ(parse_schedule("gpipe"), PipelineSchedule::GPipe);
  EXPECT_EQ(parse_schedule("1f1b"), PipelineSchedule::OneFOneB);
  EXPECT_EQ(parse_schedule("interleaved-1f1b"), PipelineSchedule::Interleaved1F1B);
  for (const std::string& n : schedule_names()) EXPECT_EQ(schedule_name(parse_schedule(n)), n);
  try {
    parse_schedule("zero-bubble");
    FAIL() << "no throw";
  } catch (const UnknownName& e) {
    EXPECT_TRUE(contains(e.what(), "gpipe, 1f1b, interleaved-1f1b")) << e.what();
  }
}

// ---- memory per rank -----------------------------------------------------------------------------

TEST(LayoutMemory, ZeroStagesShardOverDataParallel) {
  const TransformerModel m = model_preset("gpt3-6.7b");
  Layout l;
  l.dp = 8;
  l.tp = 2;
  l.pp = 2;
  l.global_batch = 64;
  for (int stage : {0, 1}) {
    const std::int64_t psi = rank_parameters(m, 2, 2, 1, stage).total();
    for (int z = 0; z <= 3; ++z) {
      l.zero_stage = z;
      const ModelStateBytes got = rank_model_state_bytes(m, l, stage);
      const double p = static_cast<double>(psi);
      const double expected[] = {16 * p, 4 * p + 12 * p / 8, 2 * p + 14 * p / 8, 16 * p / 8};
      EXPECT_NEAR(static_cast<double>(got.total()), expected[z], 16.0) << "stage " << stage << " zero " << z;
      EXPECT_EQ(got, model_state_bytes(psi, m.dtype, z, 8));
    }
  }
}

// grad_dtype fp32 (Megatron's fp32 main_grad buffers): 4 bytes per gradient instead of 2, sharded by
// ZeRO-2/3 as before; parameters and optimizer state unchanged.
TEST(LayoutMemory, Fp32GradientBuffersDoubleTheGradientsOfA16BitModel) {
  const TransformerModel m = model_preset("gpt3-1.3b");
  Layout l;
  l.dp = 8;
  l.tp = 2;
  l.pp = 2;
  l.global_batch = 64;
  for (int z = 0; z <= 3; ++z) {
    l.zero_stage = z;
    l.grad_dtype = GradDtype::Model;
    const ModelStateBytes model = rank_model_state_bytes(m, l, 1);
    l.grad_dtype = GradDtype::FP32;
    const ModelStateBytes fp32 = rank_model_state_bytes(m, l, 1);
    EXPECT_EQ(fp32.grads, 2 * model.grads) << "zero " << z;
    EXPECT_EQ(fp32.params, model.params) << "zero " << z;
    EXPECT_EQ(fp32.optimizer, model.optimizer) << "zero " << z;
    EXPECT_EQ(gradient_bytes_per_element(l, DType::BF16), 4);
  }
  l.grad_dtype = GradDtype::Model;
  EXPECT_EQ(gradient_bytes_per_element(l, DType::BF16), 2);
  EXPECT_EQ(gradient_bytes_per_element(l, DType::FP32), 4);
}

TEST(LayoutMemory, ExpertStateShardsOverDpOverEp) {
  const TransformerModel m = small_moe();
  Layout l;
  l.dp = 8;
  l.ep = 4;
  l.zero_stage = 1;
  l.global_batch = 8;
  const RankParameters p = rank_parameters(m, 1, 1, 4, 0);
  const ModelStateBytes got = rank_model_state_bytes(m, l, 0);
  EXPECT_EQ(got.optimizer, 12 * ((p.dense + 7) / 8) + 12 * ((p.expert + 1) / 2));
  EXPECT_EQ(got.params, 2 * p.total());
}

TEST(LayoutMemory, ActivationsFollowTheLayout) {
  const TransformerModel m = model_preset("gpt3-175b");
  Layout l = gpt3_layout();
  l.recompute = Recompute::Selective;
  EXPECT_EQ(rank_activation_bytes_per_layer(m, l), 34LL * 2048 * 12288 / 8);
}

// ---- JSON ----------------------------------------------------------------------------------------

std::string json_error_path(const std::string& text, const std::string& prefix = "/layout") {
  try {
    layout_from_json(json::parse(text), prefix);
  } catch (const ConfigError& e) {
    return e.path();
  }
  return "(no error)";
}

TEST(LayoutJson, ParsesEveryKeyAndRoundTrips) {
  const Layout l = layout_from_json(json::parse(R"({
      "dp": 8, "tp": 8, "pp": 16, "sequence_parallel": true, "zero_stage": 0, "micro_batch": 1,
      "global_batch": 1536, "schedule": "interleaved-1f1b", "virtual_stages": 3, "recompute": "none",
      "overlap_grad_reduce": true, "bucket_MiB": 25})"));
  EXPECT_EQ(l, gpt3_layout());
  Layout other = gpt3_layout();
  other.bucket_bytes = 40'000'000;
  other.recompute = Recompute::Full;
  other.overlap_grad_reduce = false;
  other.grad_dtype = GradDtype::FP32;
  other.embedding_in_split = true;
  other.overlap_p2p_comm = true;
  other.cp = 2;
  other.loss_in_split = true;
  other.overlap_param_gather = true;
  other.distribute_saved_activations = true;
  other.tp_comm_overlap = true;
  other.backward_prefetch = BackwardPrefetch::Post;
  other.zero_shard_ranks = 4;
  other.recompute_layers = 5;
  other.cp_comm = CpComm::P2P;
  EXPECT_EQ(layout_from_json(layout_to_json(other)), other);
  EXPECT_EQ(layout_to_json(other)["cp_comm"], "p2p");
  EXPECT_EQ(layout_from_json(json::parse(R"({"global_batch": 4})")).cp_comm, CpComm::AllGather);
  EXPECT_EQ(layout_to_json(other)["recompute_layers"], 5);
  EXPECT_EQ(layout_to_json(Layout{})["recompute_layers"], "all");
  EXPECT_EQ(layout_from_json(json::parse(R"({"global_batch": 4, "recompute_layers": "all"})")).recompute_layers, 0);
  EXPECT_EQ(layout_to_json(other)["zero_shard_ranks"], 4);
  EXPECT_EQ(layout_to_json(Layout{})["zero_shard_ranks"], "all");
  EXPECT_EQ(layout_from_json(json::parse(R"({"global_batch": 4, "zero_shard_ranks": "all"})")).zero_shard_ranks, 0);
  EXPECT_EQ(layout_from_json(json::parse(R"({"global_batch": 4})")).zero_shard_ranks, 0);
  EXPECT_EQ(layout_to_json(other)["backward_prefetch"], "post");
  EXPECT_EQ(layout_from_json(json::parse(R"({"global_batch": 4})")).backward_prefetch, BackwardPrefetch::Pre);
  EXPECT_EQ(layout_to_json(other)["grad_dtype"], "fp32");
  EXPECT_EQ(layout_from_json(json::parse(R"({"global_batch": 4, "grad_dtype": "fp32"})")).grad_dtype, GradDtype::FP32);
  EXPECT_EQ(layout_from_json(json::parse(R"({"global_batch": 4, "grad_dtype": "model"})")).grad_dtype, GradDtype::Model);
  EXPECT_EQ(layout_from_json(json::parse(R"({"global_batch": 4})")).dp, 1);
}

TEST(LayoutJson, StrictErrorsNameThePath) {
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "tpp": 8})"), "/layout/tpp");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "tp": "8"})"), "/layout/tp");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "tp": 0})"), "/layout/tp");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "zero_stage": 4})"), "/layout/zero_stage");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "sequence_parallel": 1})"), "/layout/sequence_parallel");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "schedule": "zb-h1"})"), "/layout/schedule");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "recompute": true})"), "/layout/recompute");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "bucket_MiB": -1})"), "/layout/bucket_MiB");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "grad_dtype": "bf16"})"), "/layout/grad_dtype");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "cp_comm": "a2a"})"), "/layout/cp_comm");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "grad_dtype": true})"), "/layout/grad_dtype");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "grad_reduce_dtype": "fp32"})"), "/layout/grad_reduce_dtype");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "embedding_in_split": 1})"), "/layout/embedding_in_split");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "cp": 0})"), "/layout/cp");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "overlap_p2p_comm": "no"})"), "/layout/overlap_p2p_comm");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "tp_comm_overlap": 1})"), "/layout/tp_comm_overlap");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "loss_in_split": "yes"})"), "/layout/loss_in_split");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "overlap_param_gather": 1})"), "/layout/overlap_param_gather");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "distribute_saved_activations": "yes"})"),
            "/layout/distribute_saved_activations");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "backward_prefetch": "BACKWARD_PRE"})"), "/layout/backward_prefetch");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "zero_shard_ranks": 0})"), "/layout/zero_shard_ranks");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "zero_shard_ranks": "node"})"), "/layout/zero_shard_ranks");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "zero_shard_ranks": 2.5})"), "/layout/zero_shard_ranks");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "recompute_layers": 0})"), "/layout/recompute_layers");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "recompute_layers": "half"})"), "/layout/recompute_layers");
  EXPECT_EQ(json_error_path(R"({"tp": 8})"), "/layout/global_batch");
  EXPECT_EQ(json_error_path(R"([8])"), "/layout");
  EXPECT_EQ(json_error_path(R"({"global_batch": 8, "ep": 2.0})", "/experiments/2/layout"), "/experiments/2/layout/ep");
  try {
    layout_from_json(json::parse(R"({"global_batch": 8, "recompute": "some"})"));
    FAIL() << "no throw";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "none, selective, full")) << e.what();
  }
  try {
    layout_from_json(json::parse(R"({"global_batch": 8, "grad_dtype": "fp16"})"));
    FAIL() << "no throw";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "model, fp32")) << e.what();
  }
  try {
    layout_from_json(json::parse(R"({"global_batch": 8, "backward_prefetch": "none"})"));
    FAIL() << "no throw";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "pre, post")) << e.what();
  }
}

TEST(LayoutJson, WorkIsEstimatedBeforeAnyPlanIsBuilt) {
  const TransformerModel gpt3 = model_preset("gpt3-175b");
  Layout l;
  l.tp = 8;
  l.pp = 16;
  l.dp = 8;
  l.global_batch = 1536;
  EXPECT_NO_THROW(validate(l, gpt3, 1024, 8));  // the 0.8 M-op GPT-3 plan of the examples
  const auto path_of = [&](const Layout& x) {
    try {
      validate(x, gpt3, 1024, 8);
    } catch (const ConfigError& e) {
      return e.path();
    }
    return std::string("no error");
  };
  Layout many = l;
  many.global_batch = 8 * 100000;  // 100,000 micro-batches per pipeline
  EXPECT_EQ(path_of(many), "/layout/global_batch");
  Layout buckets = l;
  buckets.bucket_bytes = 1 * KiB;  // millions of gradient buckets per stage
  EXPECT_EQ(path_of(buckets), "/layout/bucket_MiB");
  Layout wide = l;
  wide.micro_batch = 1 << 24;
  wide.global_batch = 8 << 24;
  EXPECT_EQ(path_of(wide), "/layout/micro_batch");
}

TEST(ModelJson, SizesAreBoundedToWhatASimulationHolds) {
  TransformerModel m = gpt_model("m", 4, 256, 4, 128, 1024);
  EXPECT_NO_THROW(validate(m));
  const auto path_of = [](const TransformerModel& x) {
    try {
      validate(x);
    } catch (const ConfigError& e) {
      return e.path();
    }
    return std::string("no error");
  };
  TransformerModel x = m;
  x.layers = kMaxModelLayers + 1;
  EXPECT_EQ(path_of(x), "/model/layers");
  x = m;
  x.hidden = x.heads = kMaxModelWidth * 2;
  EXPECT_EQ(path_of(x), "/model/hidden");
  x = m;
  x.vocab = kMaxModelVocab + 1;
  EXPECT_EQ(path_of(x), "/model/vocab");
  x = gpt_model("big", 60000, 1 << 20, 1 << 10, 2048, 51200);  // each size allowed, 8e17 parameters together
  EXPECT_EQ(path_of(x), "/model");
}

}  // namespace
}  // namespace twinbed
