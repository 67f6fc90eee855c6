// The edge: validation row files (experiments/validation/README.md) to plain structs, strictly.
#include <algorithm>
#include <iterator>
#include <limits>

#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/topology_json.hpp"
#include "twinbed/validate/validate.hpp"

namespace twinbed::validation {

namespace fs = std::filesystem;
using nlohmann::json;
namespace jr = json_read;

std::string to_string(Set s) { return s == Set::Collectives ? "collectives" : "training"; }
std::vector<std::string> set_names() { return {"collectives", "training"}; }
Set parse_set(const std::string& name) {
  if (name == "collectives") return Set::Collectives;
  if (name == "training") return Set::Training;
  throw UnknownName("validation set", name, set_names());
}
std::string to_string(FlopsBasis b) { return b == FlopsBasis::Model ? "model" : "hardware"; }
std::string to_string(Metric m) {
  switch (m) {
    case Metric::Mfu: return "mfu";
    case Metric::TokensPerGpu: return "tokens_per_gpu";
    case Metric::TflopsPerGpu: break;
  }
  return "tflops_per_gpu";
}

namespace {

// Errors raised while reading a file name it: the path stays the JSON pointer inside the file.
template <class F>
auto in_file(const std::string& file, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const ConfigError& e) {
    if (e.message().find("(in " + file + ")") != std::string::npos) throw;
    throw ConfigError(e.path(), e.message() + " (in " + file + ")");
  } catch (const UnknownName& e) {
    throw ConfigError("/", std::string(e.what()) + " (in " + file + ")");
  }
}

std::string stem(const std::string& file) { return fs::path(file).stem().string(); }

const json& rows_of(const json& j, const std::string& what) {
  jr::require_object(j, "");
  const json& rows = jr::required(j, "", "rows", what);
  if (!rows.is_array() || rows.empty()) jr::fail("/rows", "expected a non-empty array of rows, got " + jr::got(rows));
  return rows;
}

std::string optional_text(const json& obj, const std::string& path, const std::string& key) {
  return obj.contains(key) ? jr::read_string(obj.at(key), jr::child(path, key)) : "";
}

}  // namespace

std::vector<CollectiveCase> collectives_from_json(const json& j, const std::string& file) {
  return in_file(file, [&] {
    jr::require_object(j, "");
    jr::check_keys(j, "", {"description", "topology", "rows"});
    if (j.contains("description")) jr::read_string(j.at("description"), "/description");
    const json& topology = jr::required(j, "", "topology", "the twinbed topology standing for the machine");
    jr::require_object(topology, "/topology");
    topology_from_json(topology);  // a bad topology fails here, at load, not mid-run
    const json& rows = rows_of(j, "one object per measurement");
    std::vector<CollectiveCase> out;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const json& r = rows[i];
      const std::string p = jr::child("/rows", i);
      jr::require_object(r, p);
      jr::check_keys(r, p,
                     {"machine", "op", "ranks", "size_bytes", "size_note", "nccl_algo", "nccl_version", "measured_busbw_GBps",
                      "measured_time_us", "derived", "source", "where", "inputs", "note"});
      CollectiveCase c;
      c.id = stem(file) + "/" + std::to_string(i);
      c.topology = topology;
      c.machine = jr::read_name(jr::required(r, p, "machine", "the machine as the source names it"), jr::child(p, "machine"));
      c.op = jr::read_named(jr::required(r, p, "op"), jr::child(p, "op"), parse_collective_op);
      c.ranks = static_cast<int>(jr::read_int(jr::required(r, p, "ranks"), jr::child(p, "ranks"), 1, kMaxCount));
      c.size = jr::read_int(jr::required(r, p, "size_bytes"), jr::child(p, "size_bytes"), 1, std::int64_t{1} << 50);
      const json& algo = jr::required(r, p, "nccl_algo", "null for NCCL's choice, or \"Ring\", \"Tree\", \"NVLS\"");
      if (!algo.is_null()) {
        const std::string a = jr::read_string(algo, jr::child(p, "nccl_algo"));
        if (a != "Ring" && a != "Tree" && a != "NVLS") {
          jr::fail(jr::child(p, "nccl_algo"), "expected null (NCCL's choice), \"Ring\", \"Tree\" or \"NVLS\", got " + jr::got(algo));
        }
        c.nccl_algo = a;
      }
      if (r.contains("nccl_version")) {
        c.nccl_minor = parse_nccl_release(jr::read_string(r.at("nccl_version"), jr::child(p, "nccl_version")),
                                          jr::child(p, "nccl_version"));
      }
      const bool bw = r.contains("measured_busbw_GBps"), t = r.contains("measured_time_us");
      if (bw == t) jr::fail(p, "expected exactly one of measured_busbw_GBps and measured_time_us");
      if (bw) c.busbw_GBps = jr::read_number(r.at("measured_busbw_GBps"), jr::child(p, "measured_busbw_GBps"), "a number > 0 (GB/s)");
      if (t) c.time_us = jr::read_number(r.at("measured_time_us"), jr::child(p, "measured_time_us"), "a number > 0 (us)");
      if (c.busbw_GBps.value_or(1) <= 0) jr::fail(jr::child(p, "measured_busbw_GBps"), "expected a number > 0 (GB/s), got " + jr::got(r.at("measured_busbw_GBps")));
      if (c.time_us.value_or(1) <= 0) jr::fail(jr::child(p, "measured_time_us"), "expected a number > 0 (us), got " + jr::got(r.at("measured_time_us")));
      c.provenance.file = file;
      c.provenance.source = jr::read_name(jr::required(r, p, "source", "the URL of the source"), jr::child(p, "source"));
      c.provenance.where = jr::read_name(jr::required(r, p, "where", "where in the source"), jr::child(p, "where"));
      jr::read_name(jr::required(r, p, "inputs", "the command and settings as the source states them"), jr::child(p, "inputs"));
      for (const char* k : {"size_note", "derived", "note"}) optional_text(r, p, k);
      out.push_back(std::move(c));
    }
    return out;
  });
}

std::vector<TrainingCase> training_from_json(const json& j, const std::string& file, const fs::path& base_dir) {
  return in_file(file, [&] {
    jr::require_object(j, "");
    jr::check_keys(j, "", {"description", "rows"});
    if (j.contains("description")) jr::read_string(j.at("description"), "/description");
    const json& rows = rows_of(j, "one object per published run");
    std::vector<TrainingCase> out;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const json& r = rows[i];
      const std::string p = jr::child("/rows", i);
      jr::require_object(r, p);
      jr::check_keys(r, p, {"id", "run", "experiment", "published", "source", "where", "inputs", "assumed", "note"});
      TrainingCase c;
      c.id = jr::read_name(jr::required(r, p, "id", "a short unique name"), jr::child(p, "id"));
      if (!valid_name(c.id)) jr::fail(jr::child(p, "id"), "expected 1 to 128 letters, digits, '-', '_', '.', got " + jr::got(r.at("id")));
      c.run = jr::read_name(jr::required(r, p, "run", "the run as the source names it"), jr::child(p, "run"));

      const json& pub = jr::required(r, p, "published", "{\"metric\", \"value\", \"flops\"}");
      const std::string pp = jr::child(p, "published");
      jr::require_object(pub, pp);
      jr::check_keys(pub, pp, {"metric", "value", "flops"});
      const std::string metrics = "\"tflops_per_gpu\", \"mfu\" (a fraction) or \"tokens_per_gpu\" (tokens/s per GPU)";
      const std::string metric = jr::read_string(jr::required(pub, pp, "metric", metrics), jr::child(pp, "metric"));
      if (metric == "tflops_per_gpu") c.metric = Metric::TflopsPerGpu;
      else if (metric == "mfu") c.metric = Metric::Mfu;
      else if (metric == "tokens_per_gpu") c.metric = Metric::TokensPerGpu;
      else jr::fail(jr::child(pp, "metric"), "expected " + metrics + ", got " + jr::got(pub.at("metric")));
      const std::string range = c.metric == Metric::Mfu            ? "a fraction in (0, 1]"
                                : c.metric == Metric::TokensPerGpu ? "a number > 0 (tokens/s per GPU)"
                                                                   : "a number > 0 (TFLOP/s per GPU)";
      c.published = jr::read_number(jr::required(pub, pp, "value"), jr::child(pp, "value"), range);
      if (c.published <= 0 || (c.metric == Metric::Mfu && c.published > 1)) {
        jr::fail(jr::child(pp, "value"), "expected " + range + ", got " + jr::got(pub.at("value")));
      }
      if (c.metric == Metric::TokensPerGpu) {
        if (pub.contains("flops")) jr::fail(jr::child(pp, "flops"), "tokens_per_gpu counts no FLOPs: remove \"flops\"");
      } else {
        const std::string flops = jr::read_string(jr::required(pub, pp, "flops", "\"model\" or \"hardware\""), jr::child(pp, "flops"));
        if (flops == "model") c.flops = FlopsBasis::Model;
        else if (flops == "hardware") c.flops = FlopsBasis::Hardware;
        else jr::fail(jr::child(pp, "flops"), "expected \"model\" (no recomputation counted) or \"hardware\" (the run's recomputation counted), got " + jr::got(pub.at("flops")));
      }

      const json& e = jr::required(r, p, "experiment", "an experiment config (cluster, model, layout)");
      jr::require_object(e, jr::child(p, "experiment"));
      if (e.contains("name")) jr::fail(jr::child(jr::child(p, "experiment"), "name"), "the row's id names the experiment; remove \"name\"");
      json config = e;
      config["name"] = c.id;
      try {
        c.experiment = experiment_from_json(config, base_dir);
      } catch (const ConfigError& err) {
        throw ConfigError(jr::child(p, "experiment") + err.path(), err.message());
      }
      if (!c.experiment.techniques.empty()) jr::fail(jr::child(jr::child(p, "experiment"), "techniques"), "expected none: rows are plain training runs");

      c.provenance.file = file;
      c.provenance.source = jr::read_name(jr::required(r, p, "source", "the URL of the source"), jr::child(p, "source"));
      c.provenance.where = jr::read_name(jr::required(r, p, "where", "where in the source"), jr::child(p, "where"));
      jr::read_name(jr::required(r, p, "inputs", "the inputs in the source's words"), jr::child(p, "inputs"));
      if (r.contains("note")) jr::read_string(r.at("note"), jr::child(p, "note"));
      if (r.contains("assumed")) {
        const json& a = r.at("assumed");
        const std::string ap = jr::child(p, "assumed");
        jr::require_object(a, ap);
        for (const auto& [pointer, why] : a.items()) {
          if (!jr::find_pointer(r, pointer)) {
            jr::fail(jr::child(ap, pointer), "expected a JSON pointer into the row naming a value it sets (\"/experiment/layout/global_batch\", \"/published/flops\")");
          }
          c.assumed.push_back(pointer + ": " + jr::read_name(why, jr::child(ap, pointer)));
        }
      }
      for (const TrainingCase& seen : out) {
        if (seen.id == c.id) jr::fail(jr::child(p, "id"), "\"" + c.id + "\" is the id of an earlier row");
      }
      out.push_back(std::move(c));
    }
    return out;
  });
}

Dataset load_dataset(const fs::path& dir, std::optional<Set> only) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw ConfigError("--data", "\"" + dir.string() + "\" is not a folder");
  if (!fs::is_directory(dir / "collectives", ec) && !fs::is_directory(dir / "training", ec)) {
    throw ConfigError("--data", "\"" + dir.string() + "\" has neither collectives/ nor training/ (see experiments/validation/README.md)");
  }
  Dataset d;
  for (Set set : {Set::Collectives, Set::Training}) {
    if (only && *only != set) continue;
    const fs::path sub = dir / to_string(set);
    if (!fs::is_directory(sub, ec)) continue;
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(sub)) {
      if (entry.path().extension() == ".json") names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      const std::string file = to_string(set) + "/" + name;
      const json j = in_file(file, [&] { return jr::read_json_file((sub / name).string(), "validation rows"); });
      d.files.push_back(file);
      if (set == Set::Collectives) {
        for (CollectiveCase& c : collectives_from_json(j, file)) d.collectives.push_back(std::move(c));
      } else {
        for (TrainingCase& c : training_from_json(j, file, sub)) {
          for (const TrainingCase& seen : d.training) {
            if (seen.id == c.id) throw ConfigError("/rows", "id \"" + c.id + "\" is also a row of " + seen.provenance.file + " (in " + file + ")");
          }
          d.training.push_back(std::move(c));
        }
      }
    }
  }
  return d;
}

Dataset select_rows(const Dataset& d, const std::vector<std::string>& names) {
  const auto stem = [](const std::string& file) { return fs::path(file).stem().string(); };
  const auto names_row = [&](const std::string& name, const auto& row) { return row.id == name || stem(row.provenance.file) == name; };
  const auto named = [&](const auto& row) {
    return std::any_of(names.begin(), names.end(), [&](const std::string& name) { return names_row(name, row); });
  };
  for (const std::string& name : names) {
    const auto is = [&](const auto& row) { return names_row(name, row); };
    if (std::none_of(d.collectives.begin(), d.collectives.end(), is) && std::none_of(d.training.begin(), d.training.end(), is)) {
      std::string stems;
      for (const std::string& file : d.files) stems += (stems.empty() ? "" : ", ") + stem(file);
      throw ConfigError("--row", "no row or data file '" + name + "' in the data read; expected a row id as the table prints it " +
                                     "(e.g. h100-8gpu-nvswitch/3) or a data file: " + stems);
    }
  }
  Dataset out;
  out.files = d.files;
  std::copy_if(d.collectives.begin(), d.collectives.end(), std::back_inserter(out.collectives), named);
  std::copy_if(d.training.begin(), d.training.end(), std::back_inserter(out.training), named);
  return out;
}

bool cheap(const TrainingCase& c) {
  const Layout& l = c.experiment.layout;
  return l.world_size() <= kCheapRanks &&
         c.experiment.model.layers * static_cast<std::int64_t>(l.micro_batches()) <= kCheapLayerMicroBatches;
}

}  // namespace twinbed::validation
