#include "twinbed/train/train_config.hpp"

#include <algorithm>
#include <climits>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"

namespace twinbed::train {
namespace fs = std::filesystem;
using json_read::check_keys;
using json_read::child;
using json_read::fail;
using json_read::read_int;
using json_read::read_number;
using nlohmann::json;

namespace {

// The largest model and run accepted: far beyond what trains on CPUs in a session, small enough that
// counts fit the integers they are kept in.
constexpr std::int64_t kMaxWidth = 1 << 14;
constexpr std::int64_t kMaxSteps = 100'000'000;
constexpr double kMaxParameters = double{1 << 28};

GptShape parse_model(const json& j) {
  const std::string path = "/model";
  json_read::require_object(j, path);
  check_keys(j, path, {"layers", "hidden", "heads", "seq_len"}, " (the vocabulary is the 256 byte values)");
  GptShape s;
  if (j.contains("layers")) s.layers = static_cast<int>(read_int(j["layers"], path + "/layers", 1, 1024));
  if (j.contains("hidden")) s.hidden = static_cast<int>(read_int(j["hidden"], path + "/hidden", 1, kMaxWidth));
  if (j.contains("heads")) s.heads = static_cast<int>(read_int(j["heads"], path + "/heads", 1, kMaxWidth));
  if (j.contains("seq_len")) s.seq_len = static_cast<int>(read_int(j["seq_len"], path + "/seq_len", 1, kMaxWidth));
  if (s.hidden % s.heads != 0)
    fail(path + "/heads", "must divide hidden (" + std::to_string(s.hidden) + "), got " + std::to_string(s.heads));
  // 12·layers·hidden² + (256 + seq_len + 4·layers + 2)·hidden parameters (gpt_weights), counted in double.
  const double h = s.hidden, params = 12.0 * s.layers * h * h + (256.0 + s.seq_len + 4.0 * s.layers + 2) * h;
  if (params > kMaxParameters)
    fail(path, "the model has " + json_read::number_text(params) + " parameters; a CPU rank of twinbed train holds at "
                   "most 2^28 (1 GiB of fp32 weights, before gradients and optimizer state)");
  return s;
}

CorpusSpec parse_data(const json& j, const std::string& path, CorpusSpec s, const fs::path& base_dir) {
  json_read::require_object(j, path);
  check_keys(j, path, {"folder", "files", "held_out_every"});
  if (j.contains("folder")) {
    const std::string folder = json_read::read_name(j["folder"], path + "/folder");
    s.folder = fs::absolute(base_dir / folder).lexically_normal().string();
  }
  if (j.contains("files")) {
    const json& files = j["files"];
    if (!files.is_array()) fail(path + "/files", "expected an array of file names in the folder, got " + json_read::got(files));
    s.files.clear();
    for (std::size_t i = 0; i < files.size(); ++i) {
      const std::string name = json_read::read_name(files[i], child(path + "/files", i));
      if (name.find('/') != std::string::npos || name == "." || name == "..")
        fail(child(path + "/files", i), "expected a file name inside the folder, got " + json_read::quoted(name));
      s.files.push_back(name);
    }
  }
  if (j.contains("held_out_every"))
    s.held_out_every = static_cast<int>(read_int(j["held_out_every"], path + "/held_out_every", 2, 1'000'000));
  return s;
}

TrainingSettings parse_training(const json& j, const std::string& path, TrainingSettings t) {
  json_read::require_object(j, path);
  check_keys(j, path,
             {"steps", "global_batch", "lr", "warmup_steps", "min_lr_fraction", "weight_decay", "beta1", "beta2", "seed",
              "eval_every", "eval_batches"});
  const auto number = [&](const char* key, double& out, double lo, double hi, const char* what) {
    if (!j.contains(key)) return;
    const double v = read_number(j[key], path + "/" + key, what);
    if (!(v >= lo && v <= hi)) fail(path + "/" + key, std::string("expected ") + what + ", got " + json_read::got(j[key]));
    out = v;
  };
  if (j.contains("steps")) t.steps = read_int(j["steps"], path + "/steps", 1, kMaxSteps);
  if (j.contains("global_batch"))
    t.global_batch = static_cast<int>(read_int(j["global_batch"], path + "/global_batch", 1, 1 << 20));
  number("lr", t.lr, 1e-12, 10, "a learning rate in [1e-12, 10]");
  if (j.contains("warmup_steps")) t.warmup_steps = read_int(j["warmup_steps"], path + "/warmup_steps", 0, kMaxSteps);
  number("min_lr_fraction", t.min_lr_fraction, 0, 1, "a fraction in [0, 1]");
  number("weight_decay", t.weight_decay, 0, 10, "a decay in [0, 10]");
  number("beta1", t.beta1, 0, 0.999999, "a number in [0, 1)");
  number("beta2", t.beta2, 0, 0.999999, "a number in [0, 1)");
  if (j.contains("seed")) t.seed = static_cast<std::uint64_t>(read_int(j["seed"], path + "/seed", 0, INT64_MAX));
  if (j.contains("eval_every")) t.eval_every = read_int(j["eval_every"], path + "/eval_every", 1, kMaxSteps);
  if (j.contains("eval_batches"))
    t.eval_batches = static_cast<int>(read_int(j["eval_batches"], path + "/eval_batches", 1, 1 << 16));
  return t;
}

Variant parse_variant(const json& j, const std::string& path, const TrainConfig& c, const fs::path& base_dir) {
  json_read::require_object(j, path);
  check_keys(j, path, {"name", "techniques", "from", "checkpoint", "data", "training"});
  Variant v;
  v.name = json_read::read_string(json_read::required(j, path, "name", "the variant's name"), path + "/name");
  if (!valid_name(v.name))
    fail(path + "/name", "expected a name of letters, digits, '-', '_' and '.' (it names a folder), got " +
                             json_read::quoted(v.name));
  for (const Variant& earlier : c.variants)
    if (earlier.name == v.name) fail(path + "/name", json_read::quoted(v.name) + " names an earlier variant too");
  if (j.contains("techniques")) v.techniques = techniques_from_json(j["techniques"], path + "/techniques");
  for (std::size_t i = 0; i < v.techniques.size(); ++i)
    if (v.techniques[i].pass == "zrdf")
      fail(child(path + "/techniques", i),
           "zrdf plans memory and changes no number a training run computes: it has nothing to train (run it with "
           "`twinbed run`); training takes lora, precision, dsa and tgc");
  if (j.contains("from")) {
    v.from = json_read::read_name(j["from"], path + "/from");
    const auto from = std::find_if(c.variants.begin(), c.variants.end(), [&](const Variant& e) { return e.name == v.from; });
    if (from == c.variants.end())
      fail(path + "/from", "expected the name of an earlier variant, got " + json_read::quoted(v.from));
    if (const TechniqueConfig* lora = find_technique(*from, "lora"); lora && lora->params.value("rank", 0) > 0)
      fail(path + "/from", json_read::quoted(v.from) + " trains LoRA adapters; start from a variant without lora");
  }
  if (j.contains("checkpoint")) {
    if (!v.from.empty()) fail(path + "/checkpoint", "give \"from\" or \"checkpoint\", not both");
    v.checkpoint = fs::absolute(base_dir / json_read::read_name(j["checkpoint"], path + "/checkpoint"))
                       .lexically_normal()
                       .string();
  }
  if (find_technique(v, "lora") && v.from.empty() && v.checkpoint.empty())
    fail(path + "/techniques", "lora fine-tunes trained weights: give \"from\" (an earlier variant) or \"checkpoint\"");
  v.data = j.contains("data") ? parse_data(j["data"], path + "/data", c.data, base_dir) : c.data;
  v.training = j.contains("training") ? parse_training(j["training"], path + "/training", c.training) : c.training;
  if (v.training.global_batch % c.ranks != 0)
    fail(path + "/training/global_batch", "must be a multiple of the ranks (" + std::to_string(c.ranks) + "), got " +
                                              std::to_string(v.training.global_batch));
  return v;
}

json training_json(const TrainingSettings& t) {
  return {{"steps", t.steps},         {"global_batch", t.global_batch}, {"lr", t.lr},
          {"warmup_steps", t.warmup_steps}, {"min_lr_fraction", t.min_lr_fraction}, {"weight_decay", t.weight_decay},
          {"beta1", t.beta1},         {"beta2", t.beta2},               {"seed", t.seed},
          {"eval_every", t.eval_every}, {"eval_batches", t.eval_batches}};
}

json data_json(const CorpusSpec& d) {
  return {{"folder", d.folder}, {"files", d.files}, {"held_out_every", d.held_out_every}};
}

}  // namespace

TrainConfig train_config_from_json(const json& config, const fs::path& base_dir) {
  json_read::require_object(config, "");
  check_keys(config, "",
             {"name", "description", "model", "data", "training", "ranks", "collective_algorithm", "variants", "output"});
  TrainConfig c;
  c.name = json_read::read_string(json_read::required(config, "", "name", "the run's name, also its results folder"), "/name");
  if (!valid_name(c.name))
    fail("/name", "expected a non-empty name of letters, digits, '-', '_' and '.' (it names a folder), got " +
                      json_read::quoted(c.name));
  if (config.contains("description")) c.description = json_read::read_string(config["description"], "/description");
  if (config.contains("model")) c.model = parse_model(config["model"]);
  if (config.contains("data")) c.data = parse_data(config["data"], "/data", c.data, base_dir);
  if (config.contains("training")) c.training = parse_training(config["training"], "/training", c.training);
  if (config.contains("ranks")) c.ranks = static_cast<int>(read_int(config["ranks"], "/ranks", 1, 4096));
  if (config.contains("collective_algorithm")) {
    c.collective_algorithm = json_read::read_string(config["collective_algorithm"], "/collective_algorithm");
    // The gradient exchange all-reduces (dense) and all-gathers (TGC's payloads) over one host.
    std::vector<std::string> usable;
    const auto registry = collective_algorithms();
    for (const auto& e : registry.entries())
      if (e.name != "hierarchical" && e.value.ops.count(CollectiveOp::AllReduce) && e.value.ops.count(CollectiveOp::AllGather))
        usable.push_back(e.name);
    if (std::find(usable.begin(), usable.end(), c.collective_algorithm) == usable.end())
      fail("/collective_algorithm", "expected a schedule with all-reduce and all-gather: " + json_read::join(usable) +
                                        ", got " + json_read::quoted(c.collective_algorithm));
  }
  if (config.contains("variants")) {
    const json& vs = config["variants"];
    if (!vs.is_array() || vs.empty())
      fail("/variants", "expected a non-empty array of variants like {\"name\": \"baseline\"}, got " + json_read::got(vs));
    for (std::size_t i = 0; i < vs.size(); ++i) c.variants.push_back(parse_variant(vs[i], child("/variants", i), c, base_dir));
  } else {
    c.variants.push_back(parse_variant(json{{"name", "baseline"}}, "/variants/0", c, base_dir));
  }
  c.output = "results/" + c.name;
  if (config.contains("output")) {
    c.output = json_read::read_string(config["output"], "/output");
    if (c.output.empty()) fail("/output", "expected a folder path, got an empty string");
  }
  return c;
}

TrainConfig load_train_config(const fs::path& file) {
  const json j = read_config_file(file);
  return train_config_from_json(j, file.parent_path().empty() ? fs::path(".") : file.parent_path());
}

json train_config_to_json(const TrainConfig& c) {
  json variants = json::array();
  for (const Variant& v : c.variants) {
    json techniques = json::array();
    for (const TechniqueConfig& t : v.techniques) {
      json entry = t.params;
      entry["pass"] = t.pass;
      techniques.push_back(entry);
    }
    json jv = {{"name", v.name}, {"techniques", techniques}, {"data", data_json(v.data)}, {"training", training_json(v.training)}};
    if (!v.from.empty()) jv["from"] = v.from;
    if (!v.checkpoint.empty()) jv["checkpoint"] = v.checkpoint;
    variants.push_back(jv);
  }
  return {{"name", c.name},
          {"description", c.description},
          {"model", {{"layers", c.model.layers}, {"hidden", c.model.hidden}, {"heads", c.model.heads}, {"seq_len", c.model.seq_len}}},
          {"data", data_json(c.data)},
          {"training", training_json(c.training)},
          {"ranks", c.ranks},
          {"collective_algorithm", c.collective_algorithm},
          {"variants", variants},
          {"output", c.output}};
}

const TechniqueConfig* find_technique(const Variant& v, const std::string& pass) {
  for (const TechniqueConfig& t : v.techniques)
    if (t.pass == pass) return &t;
  return nullptr;
}

}  // namespace twinbed::train
