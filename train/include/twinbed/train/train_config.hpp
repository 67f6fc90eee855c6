// A training experiment: `twinbed train CONFIG`. One JSON file names the model, the corpus, the
// optimiser and a list of variants — the baseline and each technique switched on by the same
// "techniques" entries an experiment's passes read — trained one after another on the same data.
//
//   {
//     "name": "train-fortunes",                       // names the results folder
//     "model": {"layers": 4, "hidden": 128, "heads": 4, "seq_len": 64},   // byte vocabulary (256)
//     "data": {"folder": "/usr/share/games/fortunes", "files": [], "held_out_every": 10},
//     "training": {"steps": 300, "global_batch": 16, "lr": 0.003, "warmup_steps": 20,
//                  "min_lr_fraction": 0.1, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95,
//                  "seed": 1, "eval_every": 25, "eval_batches": 4},
//     "ranks": 2, "collective_algorithm": "ring",
//     "variants": [{"name": "baseline"},
//                  {"name": "tgc", "techniques": [{"pass": "tgc", "bits": 8, "topk_fraction": 0.1}]},
//                  {"name": "lora", "from": "baseline", "training": {"steps": 100},
//                   "techniques": [{"pass": "lora", "rank": 8}]}],
//     "output": "results/train-fortunes"
//   }
//
// Every key but "name" has a default (the values above; "variants" defaults to one "baseline"). A
// variant may override "data" and any "training" key, start from another variant's final weights
// ("from", an earlier variant) or from a checkpoint file a previous run wrote ("checkpoint", relative to
// the config). Its "techniques" are parsed by the passes' own parsers (core/passes.hpp), so a key a
// pass does not know is an error here too; "zrdf" is refused (a memory plan changes no number a
// training run computes). Strict like every config: unknown keys, wrong types and out-of-range values
// are ConfigErrors naming the JSON path.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/experiment.hpp"
#include "twinbed/train/corpus.hpp"
#include "twinbed/train/gpt.hpp"

namespace twinbed::train {

struct TrainingSettings {
  std::int64_t steps = 300;
  int global_batch = 16;        // sequences per step, over all ranks (a multiple of the ranks)
  // AdamW with linear warm-up then cosine decay to min_lr_fraction·lr (Loshchilov & Hutter 2019;
  // the schedule of GPT-3, Brown et al. 2020, and nanoGPT). Weight decay on matrices only.
  double lr = 3e-3;
  std::int64_t warmup_steps = 20;
  double min_lr_fraction = 0.1;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  std::uint64_t seed = 1;       // weights, LoRA adapters' init (seed + 1), data order
  std::int64_t eval_every = 25; // held-out loss every N steps and after the last
  int eval_batches = 4;         // held-out sequences evaluated: eval_batches · global_batch
  bool operator==(const TrainingSettings&) const = default;
};

struct Variant {
  std::string name;
  std::vector<TechniqueConfig> techniques;  // resolved by the passes' parsers
  std::string from;                          // an earlier variant's name, or empty
  std::string checkpoint;                    // an absolute checkpoint path, or empty
  CorpusSpec data;                           // the config's, with this variant's overrides
  TrainingSettings training;                 // likewise
};

struct TrainConfig {
  std::string name;
  std::string description;
  GptShape model;
  CorpusSpec data;
  TrainingSettings training;
  int ranks = 2;
  std::string collective_algorithm = "ring";
  std::vector<Variant> variants;
  std::string output;  // default results/<name>
};

TrainConfig train_config_from_json(const nlohmann::json& config, const std::filesystem::path& base_dir);
// read_config_file + train_config_from_json(…, the file's folder).
TrainConfig load_train_config(const std::filesystem::path& file);
// Every key written (defaults filled in; data folders and checkpoints absolute, output as given):
// train_config_from_json reads it back equal.
nlohmann::json train_config_to_json(const TrainConfig& c);

// The technique entry of a variant, or nullptr.
const TechniqueConfig* find_technique(const Variant& v, const std::string& pass);

}  // namespace twinbed::train
