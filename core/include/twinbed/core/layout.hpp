// How a model is laid out on a cluster: data (dp), tensor (tp), pipeline (pp) and expert (ep)
// parallelism, sequence parallelism, ZeRO stage, batch sizes, pipeline schedule, recomputation and
// gradient-reduction overlap. A plain struct; validate() says whether a layout is possible for a model on
// a cluster, and names the offending field as a JSON path ("/layout/tp") with the values it accepts.
//
// Rank order is Megatron's: tp fastest, then cp, then dp, then pp (so a tensor group sits on consecutive
// ranks, i.e. inside a host when tp <= ranks_per_host). Context parallelism (cp) splits each sequence
// over cp ranks that hold the same parameters, so gradients are reduced and ZeRO-sharded over the dp·cp
// ranks of a stage (Megatron's data-parallel group "with context parallel"). Expert parallelism is
// carved out of those dp·cp ranks (Megatron-Core's MoE parallel folding): the ep ranks of an expert
// group are ep consecutive ones of them, each holding E/ep experts; expert parameters are therefore
// replicated (and ZeRO-sharded) over dp·cp/ep ranks, dense ones over dp·cp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "twinbed/core/model.hpp"
#include "twinbed/core/units.hpp"

namespace twinbed {

// GPipe: all forwards, then all backwards. 1F1B: PipeDream-Flush (warm-up, one forward one backward,
// cool-down). Interleaved1F1B: Megatron's interleaved schedule, each rank holding v model chunks.
enum class PipelineSchedule { GPipe, OneFOneB, Interleaved1F1B };
// "gpipe", "1f1b", "interleaved-1f1b"; parse throws UnknownName listing them.
std::string schedule_name(PipelineSchedule s);
PipelineSchedule parse_schedule(const std::string& name);
std::vector<std::string> schedule_names();

// The dtype of the gradient buffers, in which gradients are accumulated over micro-batches and reduced
// over data parallelism:
//   Model — the model's gradient dtype (gradient_bytes_per_element: 2 bytes for the 16-bit dtypes), as
//           PyTorch DDP, and FSDP without a MixedPrecision reduce_dtype, keep and reduce them.
//   FP32  — 4 bytes whatever the model's dtype: Megatron-LM's main_grad buffers under
//           --accumulate-allreduce-grads-in-fp32 (megatron/model/distributed.py, _get_buffer_type:
//           torch.float when it is set), which megatron/arguments.py turns on for every bf16 run
//           ("bfloat16 requires gradient accumulation and all-reduce to be done in fp32").
// It sets the bytes of the gradient state (model_state_of, rank_model_state_bytes) and of every
// data-parallel gradient reduction (buckets, ZeRO-3 reduce-scatters, the tied embedding's all-reduce).
enum class GradDtype { Model, FP32 };
// "model", "fp32"; parse throws UnknownName listing them.
std::string grad_dtype_name(GradDtype g);
GradDtype parse_grad_dtype(const std::string& name);
std::vector<std::string> grad_dtype_names();

// How the ranks of a context-parallel group share the keys and values (Transformer Engine's
// DotProductAttention cp_comm_type, transformer_engine/pytorch/attention/dot_product_attention/
// context_parallel.py):
//  - AllGather ("all_gather", AttnFuncWithCPAndKVAllGather): the whole sequence's K and V gathered
//    before the attention, on the compute stream, its gradients reduce-scattered after; Llama 3's form
//    (Llama Team 2024, §3.3.2).
//  - P2P ("p2p", AttnFuncWithCPAndKVP2P): a ring. Each rank's K and V go round the group a step at a
//    time, the exchange of the next step's chunk running beside the flash kernel of the current one, and
//    each step's partial output merged in FP32 (flash_attn_fwd_out_correction); the backward sends K and
//    V round again with their gradients, the last gradients' exchange after the last step. Megatron-LM's
//    default (--cp-comm-type, default ["p2p"]) and Transformer Engine's. Needs a flash kernel.
enum class CpComm { AllGather, P2P };
// "allgather", "p2p"; parse throws UnknownName listing them.
std::string cp_comm_name(CpComm c);
CpComm parse_cp_comm(const std::string& name);
std::vector<std::string> cp_comm_names();

// ZeRO-3's gather of the next layer's parameters in backward (the layer before, in forward order): issued
// once the current layer's backward has begun, overlapping it (Pre: PyTorch FSDP's default
// BackwardPrefetch.BACKWARD_PRE, "prefetches the next set of parameters before the current set of
// parameters' gradient computation"; DeepSpeed ZeRO-3 prefetches ahead too), or once its gradients are
// computed (Post: BACKWARD_POST, "prefetches the next set of parameters after the current set of
// parameters' gradient computation", which "enables less overlap but requires less memory usage";
// MosaicML Composer's default), so that the next layer waits for its gather. (Both quotes:
// torch.distributed.fsdp.BackwardPrefetch's documentation.) Either way the gather goes before the
// current layer's gradient reduce-scatter (FSDP runs the two on streams of their own).
enum class BackwardPrefetch { Pre, Post };
// "pre", "post"; parse throws UnknownName listing them.
std::string backward_prefetch_name(BackwardPrefetch b);
BackwardPrefetch parse_backward_prefetch(const std::string& name);
std::vector<std::string> backward_prefetch_names();

struct Layout {
  int dp = 1;
  int tp = 1;
  int pp = 1;
  int ep = 1;                       // expert-parallel degree, divides dp·cp (MoE only)
  int cp = 1;                       // context-parallel degree: ranks sharing each sequence
  CpComm cp_comm = CpComm::AllGather;  // how a cp group shares K and V (above); no effect at cp = 1
  bool sequence_parallel = false;   // Korthikanti et al.; needs seq_len % tp == 0; no effect at tp = 1
  int zero_stage = 0;               // 0..3
  int micro_batch = 1;              // sequences per micro-batch (b)
  int global_batch = 1;             // sequences per iteration over all replicas (B)
  PipelineSchedule schedule = PipelineSchedule::OneFOneB;
  int virtual_stages = 1;           // v, model chunks per pipeline rank: 1 unless interleaved (then >= 2)
  Recompute recompute = Recompute::None;
  // With recompute "full", only the first recompute_layers transformer layers of each model chunk are
  // recomputed; the chunk's other layers keep their activations (0: every layer). Megatron-LM's
  // --recompute-method block --recompute-num-layers N (megatron/core/transformer/transformer_block.py,
  // _checkpointed_forward: "Checkpoint the input activation of only a set number of individual
  // Transformer layers and skip the rest", layers [0, N) of the block, a pipeline rank's model chunk). A
  // chunk of N layers or fewer is recomputed whole. (Megatron moves the window one layer on where the
  // chunk's input needs no gradient under FP8; a chunk's input always does in training, so not modelled.)
  int recompute_layers = 0;
  bool overlap_grad_reduce = true;  // reduce gradient buckets during backward
  // ZeRO 1-2: the all-gather of the updated parameters runs at the start of the next step, overlapping
  // its forward (each layer's first forward op waits for the bucket holding its parameters) instead of
  // right after the optimizer step: Megatron-LM's --overlap-param-gather (with its distributed
  // optimizer), and FSDP without resharding after forward, which gathers in the forward pass. Off,
  // Megatron's default and DeepSpeed ZeRO's behaviour.
  bool overlap_param_gather = false;
  // Pipeline sends overlap the compute after them. Off, Megatron-LM's default (--overlap-p2p-communication
  // turns it on for the interleaved schedule), a stage computes nothing more until its last send is
  // through: megatron/core/pipeline_parallel/p2p_communication.py waits on every request of a
  // send/receive batch, then calls torch.cuda.synchronize() ("to protect against race condition when
  // using batch_isend_irecv()"); DeepSpeed's pipeline engine sends blocking too. The plan then follows
  // each pipeline Send with a SendDone on the compute stream (plan.hpp).
  bool overlap_p2p_comm = false;
  // The sequence-parallel collectives that sit between a layer's ops overlap the GEMMs beside them, as
  // Transformer Engine's userbuffers do (NeMo's ub_tp_comm_overlap; te.initialize_ub with the launcher's
  // ub_cfg_*.yaml). Each such GEMM is split into tp chunks along its tokens:
  //   all-gather then GEMM (QKV and FC1 forward, the projection's and FC2's input gradient): a ring
  //     exchange ("ring_exchange") — the chunk of the rank's own shard first, each further chunk once the
  //     next shard has come round the ring, the shards moved by the copy engines (no SMs taken);
  //   GEMM then reduce-scatter (the projection's and FC2's forward): each chunk's output reduce-scattered
  //     while the next chunk runs ("pipeline", its reduction kernels on SMs of their own).
  // FC1 and FC2 only in a dense layer (an MoE's experts are no userbuffers GEMMs). The backward's other
  // collectives overlap as Megatron issues them anyway (plan_builder.cpp, ColumnBackward). Needs
  // sequence_parallel and tp >= 2 (Transformer Engine overlaps sequence-parallel collectives only). The
  // userbuffers themselves (a communication buffer per overlapped GEMM) are not counted in memory.
  bool tp_comm_overlap = false;
  // The pipeline split counts the embedding (first chunk) and the LM head with its loss (last chunk) as a
  // layer each, so those chunks carry a transformer layer less: Megatron-LM's
  // --account-for-embedding-in-pipeline-split / --account-for-loss-in-pipeline-split
  // (megatron/core/transformer/transformer_layer.py, get_transformer_layer_offset). Llama 3 405B's
  // pipeline (Llama Team 2024, §3.3.2): "we reduce one Transformer layer each from the first and the last
  // stages ... the first model chunk on the first stage has only the embedding".
  bool embedding_in_split = false;
  bool loss_in_split = false;
  // With full recomputation and without sequence parallelism, each tensor-parallel rank keeps only its
  // t-th of a layer's checkpointed input and the group all-gathers it before the layer's recomputation:
  // Megatron-LM's --distribute-saved-activations (megatron/core/tensor_parallel/random.py,
  // CheckpointFunction: split_tensor_into_1d_equal_chunks in the forward, gather_split_1d_tensor in the
  // backward), metaseq's --distribute-checkpointed-activations. Needs recompute "full"; with
  // sequence_parallel an error (the checkpoint is sequence-sharded already; Megatron ignores the flag).
  bool distribute_saved_activations = false;
  Bytes bucket_bytes = 25 * MiB;    // gradient bucket size (PyTorch DDP's default bucket_cap_mb = 25)
  GradDtype grad_dtype = GradDtype::Model;  // gradient accumulation and reduction dtype (above)
  BackwardPrefetch backward_prefetch = BackwardPrefetch::Pre;  // ZeRO-3 only (above)
  // ZeRO-3 over groups of this many consecutive data-parallel ranks, replicated across the groups
  // (0: one group of all dp·cp ranks). Hybrid sharding: PyTorch FSDP's ShardingStrategy.HYBRID_SHARD
  // ("Apply FULL_SHARD within a node, and replicate parameters across nodes", torch/distributed/fsdp/
  // api.py), whose default groups are the ranks of a node; DeepSpeed's MiCS (mics_shard_size) likewise.
  // Parameters, gradients and optimizer state are sharded over the group; each layer is gathered within
  // it; its gradients are reduce-scattered within it, and each rank's gradient shard is then
  // all-reduced across the replicas, on a stream of its own (FSDP's _reduce_grad: dist.all_reduce(
  // new_sharded_grad, group=state._inter_node_pg) on state._all_reduce_stream). Needs zero_stage 3 and
  // ep 1; must divide dp·cp.
  int zero_shard_ranks = 0;

  // dp·tp·cp·pp (ep does not multiply: it lives inside dp·cp).
  int world_size() const { return dp * tp * cp * pp; }
  // The ranks of a stage that hold the same parameters and reduce their gradients together: dp·cp.
  int grad_ranks() const { return dp * cp; }
  // The ranks ZeRO shards the model state over (zero_shard_ranks, or all dp·cp), and the replicas.
  int zero_shards() const { return zero_shard_ranks > 0 ? zero_shard_ranks : grad_ranks(); }
  int zero_replicas() const { return grad_ranks() / zero_shards(); }
  // Micro-batches each pipeline runs per iteration: B / (dp·b). Also the gradient-accumulation steps.
  int micro_batches() const { return global_batch / (dp * micro_batch); }
  int grad_accum_steps() const { return micro_batches(); }
  // The pipeline's split: layers plus the embedding and loss slots it counts, in pp·v equal chunks.
  // Chunk c of pipeline rank s is virtual stage c·pp + s; chunk_layers gives the transformer layers of a
  // virtual stage ([first, first + count): a slot's layer is its index less the embedding's slot), and
  // stage_layers how many a pipeline rank holds over its chunks. Require a layout validate() accepts.
  std::int64_t pipeline_slots(const TransformerModel& m) const {
    return m.layers + (embedding_in_split ? 1 : 0) + (loss_in_split ? 1 : 0);
  }
  struct LayerRange {
    std::int64_t first = 0;
    std::int64_t count = 0;
  };
  LayerRange chunk_layers(const TransformerModel& m, int virtual_stage) const;
  std::int64_t stage_layers(const TransformerModel& m, int stage) const;
  // Whether the layer at index j of its model chunk (0: the chunk's first transformer layer) is
  // recomputed: under recompute "selective" every layer, under "full" the first recompute_layers.
  bool recomputes(std::int64_t j) const {
    return recompute != Recompute::None && (recompute_layers == 0 || j < recompute_layers);
  }
  // The same for transformer layer `layer` of the model (its chunk found from the split), and how many
  // of the model's layers are recomputed.
  bool recomputes_layer(const TransformerModel& m, std::int64_t layer) const;
  std::int64_t recomputed_layers(const TransformerModel& m) const;
  // The per-op context of this layout (micro-batch, tp, sp, ep, cp) for model.hpp's op lists.
  OpContext op_context() const {
    return {micro_batch, tp, sequence_parallel, ep, cp, cp > 1 && cp_comm == CpComm::P2P};
  }

  bool operator==(const Layout&) const = default;
};

// Checks that `layout` can run `model` on a cluster of `cluster_ranks` ranks with `ranks_per_host` per
// host. Throws ConfigError, its path naming the field ("/layout/tp", "/layout/virtual_stages", ...)
// and its message the accepted values, when the layout is impossible:
//   any degree or batch < 1; dp·tp·cp·pp != cluster_ranks (path /layout/dp); heads, kv_heads or ffn_hidden not
//   divisible by tp; the pipeline's slots (layers, plus the embedding and loss when in the split) not
//   divisible by pp (/layout/pp) or by pp·v (/layout/virtual_stages);
//   global_batch not a multiple of dp·micro_batch; zero_stage outside 0..3; interleaved with v < 2 or
//   pp < 2 (/layout/schedule), v > 1 without interleaving; interleaved with micro-batches not a multiple
//   of pp (Megatron's constraint, /layout/global_batch); ep > 1 on a dense model, (dp·cp) % ep or
//   experts % ep != 0 (/layout/ep); sequence parallelism with (seq_len/cp) % tp != 0; cp > 1 with
//   seq_len not a multiple of 2·cp (the load-balanced chunks) (/layout/cp); bucket_MiB
//   under one byte; overlap_param_gather with zero_stage other than 1 or 2; distribute_saved_activations
//   without full recomputation, or with sequence parallelism at tp > 1; tp_comm_overlap without
//   sequence parallelism at tp >= 2; backward_prefetch "post" with zero_stage other than 3;
//   zero_shard_ranks below dp·cp with zero_stage other than 3 or ep > 1, or not dividing dp·cp;
//   recompute_layers with recompute other than "full".
// The model is validated first (paths under /model). Returns warnings — legal but probably unintended:
// tp > ranks_per_host (tensor all-reduces cross hosts); fewer micro-batches than pipeline stages
// (the bubble dominates); sequence_parallel with tp = 1 (a no-op: Megatron turns it off); the embedding
// or loss in the split with pp = 1 (nothing to balance); zero_stage > 0
// or overlap_param_gather with dp·cp = 1 (nothing to shard or gather); distribute_saved_activations
// with tp = 1; interleaving with fewer micro-batches than stages is an error.
std::vector<std::string> validate(const Layout& layout, const TransformerModel& model, int cluster_ranks,
                                  int ranks_per_host);
// The work validate() accepts, estimated before any plan is built (an impossible request fails in
// milliseconds, naming the field, instead of exhausting memory): a micro-batch's activations per layer
// at most kMaxMicroBatchBytes ("/layout/micro_batch"), and a plan of at most kMaxPlanOps stored ops —
// stages × micro-batches × layers per stage × ops per layer, plus gradient buckets ("/layout/global_batch",
// or "/layout/bucket_MiB" when buckets dominate). GPT-3 175B with PP 16 and 192 micro-batches: about 1.1 M.
inline constexpr double kMaxMicroBatchBytes = 1e15;
inline constexpr double kMaxPlanOps = 2e7;

// The parameters a rank of pipeline stage `stage` holds: model.hpp's rank_parameters with the stage's
// layers as the layout splits them.
RankParameters rank_parameters(const TransformerModel& model, const Layout& layout, int stage);

// Model-state bytes (parameters, gradients, Adam state) on a rank of pipeline stage `stage` under the
// layout's ZeRO stage: dense parameters sharded over dp·cp (or the hybrid shard group: zero_shards()),
// expert parameters over dp·cp/ep (model.hpp's rank_parameters and model_state_bytes), gradients in the
// layout's grad_dtype. Requires a layout that validate() accepts.
ModelStateBytes rank_model_state_bytes(const TransformerModel& model, const Layout& layout, int stage);

// Bytes of one gradient element under the layout: 4 with GradDtype::FP32, else
// gradient_bytes_per_element(dtype).
Bytes gradient_bytes_per_element(const Layout& layout, DType dtype);

// Activation bytes per layer per micro-batch on one rank under the layout (model.hpp's formula with the
// layout's micro_batch, tp, sequence_parallel, recompute and cp; a t-th of the checkpoint with
// distribute_saved_activations): a recomputed layer's, where recompute_layers leaves some out.
Bytes rank_activation_bytes_per_layer(const TransformerModel& model, const Layout& layout);
// The iteration's FLOPs (model.hpp's training_flops) with the layout's recomputation: the recompute
// mode's extra work on recomputed_layers() of the model's layers.
double training_flops(const TransformerModel& model, const Layout& layout);
// What the loss keeps per micro-batch on the last stage under the layout (model.hpp's
// loss_activation_bytes with the layout's micro_batch, tp and cp).
Bytes rank_loss_activation_bytes(const TransformerModel& model, const Layout& layout);

// ---- JSON (the edge) -----------------------------------------------------------------------------

// {"dp", "tp", "pp", "ep", "cp", "sequence_parallel", "zero_stage", "micro_batch", "global_batch", "schedule",
//  "virtual_stages", "recompute", "overlap_grad_reduce", "overlap_param_gather", "overlap_p2p_comm",
//  "tp_comm_overlap", "bucket_MiB", "grad_dtype"
//  ("model" | "fp32"), "backward_prefetch" ("pre" | "post"), "zero_shard_ranks" (an integer >= 1, or "all"),
//  "embedding_in_split", "loss_in_split", "distribute_saved_activations", "recompute_layers" (an integer
//  >= 1, or "all")}:
// every key optional, defaulting
// to Layout{}'s values, except global_batch, which is required. Strict: unknown keys, wrong types and
// out-of-range values are ConfigErrors naming `path` + "/key". Cross-field checks are validate()'s.
Layout layout_from_json(const nlohmann::json& j, const std::string& path = "/layout");
// Every key written; layout_from_json reads it back to an equal Layout when bucket_bytes is a whole
// number of bytes expressible in MiB as a double (always, in practice).
nlohmann::json layout_to_json(const Layout& l);

}  // namespace twinbed
