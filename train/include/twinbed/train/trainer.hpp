// Training one variant of a `twinbed train` config on this rank, data-parallel over the ranks of a
// job: the numerically real counterpart of the Plan passes. Each step, every rank takes its share of
// the same global batch (corpus.hpp's sampling), runs the Gpt's forward and backward, and the ranks
// exchange gradients — densely through the shared collective schedules, or compressed by TGC — then
// every rank applies the same AdamW update, so the replicas stay bit-identical.
//
// Techniques, from the variant's "techniques" entries (the passes' parameters), executed with the
// kernels of kernels/ on the real gradients and weights:
//   tgc        quantise and/or top-k the rank's gradient (plus the error-feedback residual), all-gather
//              the payloads (packed bytes, exactly kernels/payload.hpp's sizes), decode and sum. The
//              simulator's pass reduces a quantised payload hop by hop; here every rank's payload is
//              gathered whole and decoded once (one quantisation per contribution, none of the partial
//              sums'), which on 2 ranks sends the same bytes (P per rank) and on R ranks (R−1)·P.
//              "adaptive": each rank's choose_bits(acc, block, adaptive_tolerance); the ranks use the
//              widest. Hierarchy is not applied: the exchange is flat over all ranks. Gradients are
//              unscaled (÷ the loss scale) before the exchange, so the residual never mixes two scales.
//   dsa        every refresh_every steps (from step 0), each target matrix's mask is recomputed from
//              importance = ½|g| + ½|m| (g the step's averaged gradient, m Adam's first moment: the seed
//              names the two signals without weights) at the target density and granularity
//              (unstructured, block, n:m); the optimizer then updates active entries only (masked
//              Adam: frozen entries keep their value and moments); mode "prune" also zeroes frozen
//              weights at each refresh.
//   lora       the base (from "from"/"checkpoint") is frozen; adapters on the target matrices train, and
//              only their gradients are exchanged.
//   precision  per-layer storage types (Gpt's Precision): "static" takes the pass's target dtype of each
//              layer's GEMMs; "adaptive" starts from the pass's even split and every redecide_every
//              steps puts the low_fraction of layers whose gradients have the smallest crest factor
//              (max|g| / rms g, the same signal TGC's adaptive width uses: small crest, little dynamic
//              range to lose) in `low`, the rest in `high`. Loss scaling "dynamic" with fp16 anywhere:
//              PyTorch GradScaler's rule (torch.amp.GradScaler defaults: initial scale 2^16, halved on
//              an overflow — the step is skipped on every rank — and doubled after 2,000 steps without
//              one).
// zrdf is refused by the config (train_config.hpp).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "twinbed/train/gpt.hpp"
#include "twinbed/train/train_config.hpp"

namespace twinbed::train {

// What training needs from the ranks of a job. Collective: every rank calls each function with the
// same sizes in the same order.
class Ranks {
 public:
  virtual ~Ranks() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void all_reduce(std::span<float> data) = 0;  // sum, in place
  virtual void all_gather(std::span<const float> mine, std::span<float> all) = 0;
  virtual std::int64_t bytes_sent() const = 0;  // by this rank, so far
};

// A job of one rank: no communication, no bytes.
std::unique_ptr<Ranks> solo_ranks();
// The ranks of the running MPI job, through real::DataCollectives and `algorithm`'s schedules.
std::unique_ptr<Ranks> mpi_ranks(const std::string& algorithm);

// One step as every rank agrees on it.
struct StepRecord {
  std::int64_t step = 0;                 // 1-based: the number of updates tried so far
  double lr = 0;
  double train_loss = 0;                 // mean over the global batch
  std::optional<double> held_out_loss;   // at eval steps
  std::optional<double> held_out_accuracy;  // top-1 next-byte accuracy in [0, 1], at eval steps
  double step_s = 0;                     // wall time of the step, the slowest rank's
  double elapsed_s = 0;                  // sum of step_s so far (evaluations excluded)
  std::int64_t bytes_sent = 0;           // sent in this step (the gradient exchange, and the overflow and
                                         // adaptive-width agreements), the busiest rank's
  std::int64_t peak_memory_bytes = 0;    // the variant's peak so far (see VariantResult), the largest rank's
  bool skipped = false;                  // overflow: no update
  float loss_scale = 1;
  int tgc_bits = 0;                      // quantisation width used (0: none)
  double active_fraction = 1;            // dsa: active share of the target parameters
  int low_precision_layers = 0;          // precision: layers stored in a 16-bit type
};

struct VariantResult {
  std::string name;
  std::vector<StepRecord> steps;
  std::int64_t parameters = 0;           // the model's
  std::int64_t trainable = 0;            // what the optimizer updates (LoRA: adapters only)
  // The variant's own peak: resident memory above what the process held when the variant started
  // (the program, and the weights of earlier variants a later one may start from, not counted), the
  // largest rank's.
  std::int64_t peak_memory_bytes = 0;
  std::int64_t overflow_steps = 0;
  double unigram_entropy = 0;            // of the training text, nats
  std::int64_t train_bytes = 0, held_out_bytes = 0;
  Gpt model;                             // final weights (and adapters), identical on every rank
};

using StepCallback = std::function<void(const StepRecord&)>;

// Everything train_variant would refuse, found before any rank starts (the CLI runs it before it
// relaunches under mpirun, so an error prints once): on `ranks` ranks, each variant's global batch
// split and activation memory (at most 2 GiB of saved activations per rank), its techniques' parameters
// against the model, its corpus and its checkpoint. Throws ConfigError naming the JSON path.
void check_variants(const TrainConfig& config, int ranks);

// Trains `variant` (config gives the model shape and ranks' algorithm) on `ranks`. `start`: the weights
// to begin from (a "from" variant's final model or a loaded checkpoint), or nullptr for a fresh
// initialisation from the variant's seed. on_step is called on every rank after each step.
// Throws ConfigError naming the variant's JSON path for what check_variants refuses (a dsa target whose
// columns n:m does not divide, dsa with lora, fp8, a batch that does not split over the ranks). Deterministic: the same config, ranks and start give
// bit-identical records (wall times aside) and weights.
VariantResult train_variant(const TrainConfig& config, std::size_t variant_index, Ranks& ranks, const Gpt* start,
                            const StepCallback& on_step = {});

// Checkpoints: an 8-byte magic, the shape (5 x int32), the parameter count (uint64), then every base
// parameter (fp32, little-endian). A model with LoRA adapters is not saved (InvalidArgument). save
// writes a temporary then renames, so a file is whole or absent.
void save_checkpoint(const Gpt& model, const std::string& file);
// Throws ConfigError (path = the file) when the file is not a checkpoint or is for another shape.
Gpt load_checkpoint(const std::string& file, const GptShape& expected);

}  // namespace twinbed::train
