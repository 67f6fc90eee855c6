// The results of `twinbed train`, in its results folder:
//   config.json      the resolved config (every default written)
//   train.json       {"format": "twinbed-train-1", "provenance", "variants": [per variant: name,
//                    techniques, parameters, trainable, peak_memory_bytes (above the process's at the
//                    variant's start: trainer.hpp), overflow_steps, unigram_entropy_nats, train_bytes,
//                    held_out_bytes,
//                    final_held_out_loss, final_held_out_accuracy, mean_step_s, mean_bytes_per_step, steps: [...]],
//                    "comparisons": [...]}
//   steps.csv        one row per variant and step (the StepRecord fields; held_out_loss empty between
//                    evaluations)
//   summary.csv      one row per variant, with its comparison
//   checkpoints/<variant>.bin   final weights (trainer.hpp's format), for "checkpoint" in a later config
// A comparison sets a variant beside its reference: the first variant without techniques that starts
// from the same weights ("from"/"checkpoint" equal) and trains as many steps — the baseline for a
// technique trained from scratch, the full fine-tune for LoRA. Figures (variant − reference, so a
// positive loss difference means the technique lost accuracy):
//   held_out_delta_equal_steps   final held-out loss difference, both after the same steps
//   held_out_delta_equal_time    held-out loss difference at the same training wall time: both curves
//                                interpolated linearly between their evaluations at the earlier of the
//                                two finishing times (null when that is before either's first evaluation)
//   accuracy_drop_points         reference − variant final top-1 held-out accuracy (next byte), in
//                                percentage points: the "accuracy loss" the seeds state
//   step_time_ratio, bytes_ratio, trainable_ratio, peak_memory_ratio   variant / reference
//   seed_spread_loss, seed_spread_accuracy_points   how far apart the final held-out loss and accuracy of
//                                the reference's technique-free peers (the same start and steps, other
//                                settings such as the seed) lie: max − min over them and the reference
//                                (seed_runs of them); null without such peers. A difference within it is
//                                not told apart from the run-to-run spread of training at this scale.
//                                Two runs understate it: four seeds of the default config ended 0.078
//                                nats apart where two had ended 0.002 apart.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/train/train_config.hpp"
#include "twinbed/train/trainer.hpp"

namespace twinbed::train {

struct Comparison {
  std::string variant, reference;
  double held_out_delta_equal_steps = 0;
  std::optional<double> held_out_delta_equal_time;
  double accuracy_drop_points = 0;  // reference − variant top-1 held-out accuracy, in percentage points
  double step_time_ratio = 0, bytes_ratio = 0, trainable_ratio = 0, peak_memory_ratio = 0;
  std::optional<double> seed_spread_loss, seed_spread_accuracy_points;
  int seed_runs = 1;  // the reference and its peers the spread is taken over
};

double final_held_out(const VariantResult& r);
double final_held_out_accuracy(const VariantResult& r);  // in [0, 1]
double mean_step_s(const VariantResult& r);
double mean_bytes_per_step(const VariantResult& r);
// The held-out loss of `r` at training time `elapsed_s`, linear between evaluations; nullopt outside them.
std::optional<double> held_out_at_time(const VariantResult& r, double elapsed_s);

// One comparison per variant that has a reference (see above), in variant order.
std::vector<Comparison> compare_variants(const TrainConfig& config, const std::vector<VariantResult>& results);

nlohmann::json train_results_json(const TrainConfig& config, const std::vector<VariantResult>& results,
                                  const nlohmann::json& provenance);
std::string steps_csv(const std::vector<VariantResult>& results);
std::string summary_csv(const TrainConfig& config, const std::vector<VariantResult>& results);

}  // namespace twinbed::train
