// Experiment configs: a valid config parses to the expected values, every kind of bad input is a
// ConfigError whose path names the offending field, resolved() round-trips, sweeps expand to the
// Cartesian product with stable ids.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "twinbed/core/error.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/profile.hpp"
#include "twinbed/core/topology_json.hpp"

namespace twinbed {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const fs::path kData = fs::path(TWINBED_TEST_DATA_DIR) / "experiments";

json small_config() {
  return json::parse(R"({
    "name": "small",
    "cluster": {"topology": "fat-tree", "ranks": 16, "gpus_per_node": 8, "device": "a100"},
    "model": {"name": "tiny", "layers": 4, "hidden": 256, "heads": 4, "seq_len": 128, "vocab": 1024},
    "layout": {"dp": "auto", "tp": 2, "pp": 2, "global_batch": 16},
    "simulation": {"network": "analytical"}
  })");
}

// The path of the ConfigError `config` raises (fails the test when none is raised).
std::string error_path(const json& config, std::string* message = nullptr) {
  try {
    experiment_from_json(config, kData);
  } catch (const ConfigError& e) {
    if (message) *message = e.what();
    return e.path();
  }
  ADD_FAILURE() << "no ConfigError for " << config.dump();
  return "";
}

// The ConfigError expanding `config`'s sweep raises (fails the test when none is raised).
ConfigError sweep_error(const json& config) {
  try {
    expand_sweep(config, kData);
  } catch (const ConfigError& e) {
    return e;
  }
  ADD_FAILURE() << "no ConfigError for the sweep " << config["sweep"].dump();
  return ConfigError("", "");
}

TEST(Experiment, ParsesAValidConfigWithDefaults) {
  const Experiment e = experiment_from_json(small_config(), kData);
  EXPECT_EQ(e.name, "small");
  EXPECT_EQ(e.cluster.topology, "fat-tree");
  EXPECT_FALSE(e.cluster.topology_is_file);
  EXPECT_EQ(e.cluster.overrides.ranks, 16);
  EXPECT_EQ(e.cluster.overrides.device, "a100");
  EXPECT_EQ(e.model.layers, 4);
  EXPECT_EQ(e.layout.dp, 4);  // "auto": 16 / (2·2)
  EXPECT_EQ(e.layout.tp, 2);
  EXPECT_EQ(e.layout.pp, 2);
  json context = small_config();
  context["layout"]["cp"] = 2;
  EXPECT_EQ(experiment_from_json(context, kData).layout.dp, 2);  // "auto": 16 / (2·2·2)
  EXPECT_TRUE(e.techniques.empty());
  EXPECT_EQ(e.backends, std::vector<std::string>{"sim"});
  EXPECT_EQ(e.simulation.network, "analytical");
  EXPECT_EQ(e.simulation.fidelity, "representative");
  EXPECT_EQ(e.simulation.collective_algorithm, "auto");
  EXPECT_EQ(e.simulation.nccl_minor, 20);  // NCCL 2.20.3's tuner tables unless the config names another
  EXPECT_EQ(e.output, "results/small");
  EXPECT_EQ(build_topology(e.cluster).num_ranks(), 16);
}

TEST(Experiment, ResolvedRoundTrips) {
  const Experiment e = experiment_from_json(small_config(), kData);
  const json r = resolved(e);
  EXPECT_EQ(r["layout"]["dp"], 4);
  EXPECT_EQ(r["simulation"]["fidelity"], "representative");
  EXPECT_EQ(r["output"], "results/small");
  EXPECT_FALSE(r.contains("sweep"));
  EXPECT_EQ(experiment_from_json(r, "/"), e);
  json c = small_config();
  c["simulation"]["nccl_version"] = "2.24.3";
  const Experiment v = experiment_from_json(c, kData);
  EXPECT_EQ(v.simulation.nccl_minor, 24);
  EXPECT_EQ(resolved(v)["simulation"]["nccl_version"], "2.24");
  EXPECT_EQ(experiment_from_json(resolved(v), "/"), v);
}

TEST(Experiment, LoadsAFileAndResolvesRelativeTopologyPaths) {
  const Experiment e = load_experiment(kData / "file_topology.json");
  EXPECT_TRUE(e.cluster.topology_is_file);
  EXPECT_TRUE(fs::path(e.cluster.topology).is_absolute());
  EXPECT_EQ(fs::path(e.cluster.topology).filename(), "two_hosts.json");
  EXPECT_EQ(e.layout.dp, 2);
  // The resolved form runs from anywhere: the path is absolute.
  EXPECT_EQ(experiment_from_json(resolved(e), "/tmp"), e);
}

TEST(Experiment, UnknownKeysAreErrorsNamingThePath) {
  json c = small_config();
  c["clustre"] = json::object();
  std::string msg;
  EXPECT_EQ(error_path(c, &msg), "/clustre");
  EXPECT_NE(msg.find("accepted keys here"), std::string::npos) << msg;

  c = small_config();
  c["cluster"]["bandwidth_Gbps"] = 50;
  EXPECT_EQ(error_path(c), "/cluster/bandwidth_Gbps");
  c = small_config();
  c["layout"]["micro_batchs"] = 2;
  EXPECT_EQ(error_path(c), "/layout/micro_batchs");
  c = small_config();
  c["simulation"]["fidelty"] = "full";
  EXPECT_EQ(error_path(c), "/simulation/fidelty");
}

TEST(Experiment, WrongTypesAndRangesAreErrors) {
  json c = small_config();
  c["cluster"]["ranks"] = "16";
  EXPECT_EQ(error_path(c), "/cluster/ranks");
  c = small_config();
  c["cluster"]["oversubscription"] = 0.5;
  EXPECT_EQ(error_path(c), "/cluster/oversubscription");
  c = small_config();
  c["model"]["hidden"] = -1;
  EXPECT_EQ(error_path(c), "/model/hidden");
  c = small_config();
  c["name"] = 3;
  EXPECT_EQ(error_path(c), "/name");
  c = small_config();
  c["name"] = "a/b";
  EXPECT_EQ(error_path(c), "/name");
  c = small_config();
  c["output"] = "";
  EXPECT_EQ(error_path(c), "/output");
  c = small_config();
  c["layout"]["dp"] = "fill";
  EXPECT_EQ(error_path(c), "/layout/dp");
  c = small_config();
  c["layout"]["tp"] = 3;  // 16 ranks are not a multiple of tp·pp = 6
  EXPECT_EQ(error_path(c), "/layout/dp");
  c = small_config();
  c.erase("model");
  EXPECT_EQ(error_path(c), "/model");
  c = small_config();
  for (const json& bad : {json("2.19"), json("2.29"), json("3.20"), json("2.24.3.1"), json("2.x"), json(2.24)}) {
    c["simulation"]["nccl_version"] = bad;
    std::string why;
    EXPECT_EQ(error_path(c, &why), "/simulation/nccl_version") << bad;
    if (bad.is_string()) {
      EXPECT_NE(why.find("accepted: 2.20 to 2.28"), std::string::npos) << why;
    }
  }
  c = small_config();
  c["simulation"]["network"] = "fluid";
  std::string msg;
  EXPECT_EQ(error_path(c, &msg), "/simulation/network");
  EXPECT_NE(msg.find("flow, analytical"), std::string::npos) << msg;
  c = small_config();
  c["cluster"]["device"] = "v100";
  EXPECT_EQ(error_path(c), "/cluster/device");
}

TEST(Experiment, ClusterErrors) {
  json c = small_config();
  c["cluster"]["topology"] = "nosuch";
  std::string msg;
  EXPECT_EQ(error_path(c, &msg), "/cluster/topology");
  EXPECT_NE(msg.find("fat-tree"), std::string::npos) << msg;  // lists the presets
  c = small_config();
  c["cluster"]["dims"] = json::array({4, 4});  // fat-tree takes no dims
  EXPECT_EQ(error_path(c, &msg), "/cluster/dims");
  EXPECT_NE(msg.find("it takes: ranks, gpus_per_node, bandwidth_GBps"), std::string::npos) << msg;
  c = small_config();
  c["cluster"] = {{"topology", "../topologies/two_hosts.json"}, {"ranks", 4}};  // no overrides on a file
  EXPECT_EQ(error_path(c), "/cluster/ranks");
  c = small_config();
  c["cluster"]["profile"] = "no-such-profile.json";
  EXPECT_EQ(error_path(c), "/cluster/profile");
}

TEST(Experiment, TechniquesAndBackends) {
  json c = small_config();
  std::string msg;
  c["techniques"] = json::array({"lora"});  // an entry is an object naming its pass
  EXPECT_EQ(error_path(c, &msg), "/techniques/0");
  c["techniques"] = json::array({{{"pass", "lorra"}}});
  EXPECT_EQ(error_path(c, &msg), "/techniques/0/pass");
  EXPECT_NE(msg.find("known: lora"), std::string::npos) << msg;
  c["techniques"] = json::array({{{"pass", "lora"}, {"rnak", 8}}});
  EXPECT_EQ(error_path(c, &msg), "/techniques/0/rnak");
  EXPECT_NE(msg.find("rank"), std::string::npos) << msg;  // lists the accepted keys
  c["techniques"] = json::array({{{"pass", "lora"}, {"rank", -1}}});
  EXPECT_EQ(error_path(c), "/techniques/0/rank");
  c["techniques"] = json::array({{{"pass", "lora"}, {"targets", {"qkv", "attn"}}}});
  EXPECT_EQ(error_path(c), "/techniques/0/targets/1");
  c["techniques"] = json::array();
  EXPECT_NO_THROW(experiment_from_json(c, kData));
  // Parameters are resolved: every default is written, and the resolved config reads back equal.
  c["techniques"] = json::array({{{"pass", "lora"}, {"rank", 4}}});
  const Experiment e = experiment_from_json(c, kData);
  ASSERT_EQ(e.techniques.size(), 1u);
  EXPECT_EQ(e.techniques[0].pass, "lora");
  EXPECT_EQ(e.techniques[0].params, (json{{"rank", 4}, {"alpha", 16.0}, {"targets", {"qkv"}}}));
  Experiment back = experiment_from_json(resolved(e), kData);
  back.warnings = e.warnings;
  EXPECT_EQ(back, e);

  c = small_config();
  c["backends"] = json::array({"sim", "real"});
  EXPECT_EQ(experiment_from_json(c, kData).backends, (std::vector<std::string>{"sim", "real"}));
  c["backends"] = json::array({"sim", "sim"});
  EXPECT_EQ(error_path(c, &msg), "/backends/1");
  EXPECT_NE(msg.find("twice"), std::string::npos) << msg;
  c["backends"] = json::array({"gpu"});
  EXPECT_EQ(error_path(c, &msg), "/backends/0");
  EXPECT_NE(msg.find("accepted: sim, real"), std::string::npos) << msg;
  c["backends"] = json::array();
  EXPECT_EQ(error_path(c), "/backends");
}

TEST(Experiment, ImpossibleLayoutNamesTheLayoutField) {
  EXPECT_THROW(load_experiment(kData / "bad_layout.json"), ConfigError);
  try {
    load_experiment(kData / "bad_layout.json");
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path().rfind("/layout/", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad_layout.json"), std::string::npos) << e.what();
  }
}

TEST(Experiment, FileErrorsNameTheFile) {
  try {
    load_experiment(kData / "nonexistent.json");
    ADD_FAILURE();
  } catch (const ConfigError& e) {
    EXPECT_NE(e.path().find("nonexistent.json"), std::string::npos);
  }
  try {
    load_experiment(kData / "unknown_key.json");
    ADD_FAILURE();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "/layout/micro_batchs");
    EXPECT_NE(std::string(e.what()).find("unknown_key.json"), std::string::npos);
  }
}

// Every shipped example parses, so none of them rots.
TEST(Experiment, EveryExampleInExperimentsParses) {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(TWINBED_SOURCE_DIR) / "experiments")) {
    if (entry.path().extension() != ".json") continue;
    // experiments/train-*.json are training configs of `twinbed train` (tests/train checks them).
    if (entry.path().stem().string().starts_with("train-")) continue;
    SCOPED_TRACE(entry.path().string());
    const Experiment e = load_experiment(entry.path());
    EXPECT_EQ(e.name, entry.path().stem().string());  // the file name is the experiment's name
    EXPECT_FALSE(expand_sweep(read_config_file(entry.path()), entry.path().parent_path()).empty());
    ++n;
  }
  EXPECT_GE(n, 6);
}

TEST(Sweep, NoSweepIsOneBasePoint) {
  const auto points = expand_sweep(small_config(), kData);
  ASSERT_EQ(points.size(), 1u);
  EXPECT_EQ(points[0].id, "base");
  EXPECT_EQ(points[0].config, small_config());
}

TEST(Sweep, CartesianProductFirstAxisSlowest) {
  json c = small_config();
  c["sweep"] = json::parse(R"({"/layout/pp": [1, 2, 4], "/layout/micro_batch": [1, 2], "/simulation/network": ["flow"]})");
  const auto axes = sweep_axes(c, kData);
  ASSERT_EQ(axes.size(), 3u);
  const auto points = expand_sweep(c, kData);
  ASSERT_EQ(points.size(), 6u);
  // nlohmann's object keeps keys sorted: /layout/micro_batch, /layout/pp, /simulation/network.
  EXPECT_EQ(points[0].id, "layout.micro_batch=1,layout.pp=1,simulation.network=flow");
  EXPECT_EQ(points[1].id, "layout.micro_batch=1,layout.pp=2,simulation.network=flow");
  EXPECT_EQ(points[5].id, "layout.micro_batch=2,layout.pp=4,simulation.network=flow");
  for (std::size_t i = 0; i < points.size(); ++i) {
    EXPECT_EQ(points[i].index, i);
    EXPECT_FALSE(points[i].config.contains("sweep"));
    const Experiment e = experiment_from_json(points[i].config, kData);
    EXPECT_EQ(e.layout.pp, points[i].values[1].get<int>());
    EXPECT_EQ(e.layout.micro_batch, points[i].values[0].get<int>());
    EXPECT_EQ(e.layout.dp * e.layout.tp * e.layout.pp, 16);  // dp "auto" follows pp
  }
  // The same config expands to the same ids: they key resumption.
  EXPECT_EQ(expand_sweep(c, kData), points);
}

TEST(Sweep, BadPointersAndValuesNameTheSweepEntry) {
  const auto sweep_error_path = [](const json& sweep) {
    json c = small_config();
    c["sweep"] = sweep;
    return sweep_error(c).path();
  };
  EXPECT_EQ(sweep_error_path({{"/layout/ppp", {1, 2}}}), "/sweep/~1layout~1ppp/0");     // unknown key
  EXPECT_EQ(sweep_error_path({{"/layuot/pp", {1, 2}}}), "/sweep/~1layuot~1pp");        // no such section
  EXPECT_EQ(sweep_error_path({{"layout/pp", {1, 2}}}), "/sweep/layout~1pp");            // not a pointer
  EXPECT_EQ(sweep_error_path({{"/layout/pp", 2}}), "/sweep/~1layout~1pp");              // not an array
  EXPECT_EQ(sweep_error_path({{"/layout/pp", json::array()}}), "/sweep/~1layout~1pp");  // empty
  EXPECT_EQ(sweep_error_path({{"/layout/pp", {1, "two"}}}), "/sweep/~1layout~1pp/1");   // wrong type
  EXPECT_EQ(sweep_error_path({{"/layout/pp", {2, 2, 4}}}), "/sweep/~1layout~1pp/1");    // twice: one id (fuzz_sweep found it)
  EXPECT_EQ(sweep_error_path({{"/layout", {small_config()["layout"]}}, {"/layout/pp", {1}}}), "/sweep/~1layout~1pp");  // nested
  EXPECT_EQ(sweep_error_path({{"/name", {"a", "b"}}}), "/sweep/~1name");
  EXPECT_EQ(sweep_error_path({{"/sweep/x", {1}}}), "/sweep/~1sweep~1x");
  EXPECT_EQ(sweep_error_path(json::array({1})), "/sweep");
  // An impossible combination is not a sweep error: the point reports it when parsed.
  json c = small_config();
  c["sweep"] = {{"/layout/pp", {2, 3}}};
  const auto points = expand_sweep(c, kData);
  ASSERT_EQ(points.size(), 2u);
  EXPECT_NO_THROW(experiment_from_json(points[0].config, kData));
  EXPECT_THROW(experiment_from_json(points[1].config, kData), ConfigError);
}

// Pointer steps into arrays: json::contains throws on some ("" in particular), which reached the user
// as library text (fuzz_sweep found it); each is now a sweep error naming the entry.
bool contains_text(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(Sweep, StepsIntoArraysMustBeIndices) {
  json c = small_config();
  c["techniques"] = json::parse(R"([{"pass": "lora", "rank": 8}])");
  const auto message = [&](const std::string& pointer) {
    json trial = c;
    trial["sweep"] = {{pointer, {4}}};
    try {
      expand_sweep(trial, kData);
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.path(), json_read::child("/sweep", pointer)) << pointer;
      return std::string(e.what());
    }
    ADD_FAILURE() << "no error for " << pointer;
    return std::string();
  };
  for (const char* pointer : {"/techniques//rank", "/techniques/x/rank", "/techniques/01/rank", "/techniques/1/rank",
                              "/techniques/-/rank", "/techniques//layout/sc0/1,k"}) {
    EXPECT_TRUE(contains_text(message(pointer), "does not point into the config")) << pointer;
  }
  for (const char* pointer : {"/techniques/", "/techniques/1", "/techniques/-", "/techniques/00"}) {
    EXPECT_TRUE(contains_text(message(pointer), "names no element of \"/techniques\", an array of 1")) << pointer;
  }
  // A pointer of 20,000 empty steps is one error, found in one pass (fuzz_sweep ran out of memory on a
  // walk that copied the pointer at every step).
  EXPECT_TRUE(contains_text(message(std::string(20000, '/') + "x"), "does not point into the config"));
  c["sweep"] = {{"/techniques/0/rank", {4, 16}}};
  EXPECT_EQ(expand_sweep(c, kData).size(), 2u);
}

// Point ids key a sweep's resumption, so two points must never share one. Free text reaches them through
// any string field (a description, a model's name, a file path): ',' and '=' inside a value are escaped
// with a backslash (and the backslash itself), and so is what would break a line, as in error text.
TEST(Sweep, PointIdsAreUniqueWhateverTheValues) {
  json c = small_config();
  c["sweep"] = {{"/description", {"c,model.name=a", "c"}}, {"/model/name", {"b", "a,model.name=b"}}};
  const auto points = expand_sweep(c, kData);
  ASSERT_EQ(points.size(), 4u);
  EXPECT_EQ(points[1].id, "description=c\\,model.name\\=a,model.name=a\\,model.name\\=b");
  EXPECT_EQ(points[2].id, "description=c,model.name=b");
  std::set<std::string> ids;
  for (const SweepPoint& p : points) ids.insert(p.id);
  EXPECT_EQ(ids.size(), points.size());
  // A backslash is escaped too, so "\\," (a backslash, then a comma) is not "\\" and then an escaped comma.
  c["sweep"] = {{"/description", {"x\\", "x\\,description=x"}}, {"/model/name", {"a", "b"}}};
  ids.clear();
  for (const SweepPoint& p : expand_sweep(c, kData)) ids.insert(p.id);
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_TRUE(ids.count("description=x\\\\,model.name=a")) << *ids.begin();
  // One line, like every id printed in a sweep's progress.
  c["sweep"] = {{"/description", {"two\nlines", "two\\nlines"}}};
  const auto lines = expand_sweep(c, kData);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].id, "description=two\\nlines");
  EXPECT_EQ(lines[1].id, "description=two\\\\nlines");
}

// Every point holds its whole config (about 4 KB for a small one): a million points took 3.8 GB before
// the first ran. The product is capped at kMaxSweepPoints, checked before any point is built.
TEST(Sweep, AtMostKMaxSweepPointsPoints) {
  ASSERT_EQ(kMaxSweepPoints, 100000u);
  const auto names = [](const char* prefix, int n) {
    json a = json::array();
    for (int i = 0; i < n; ++i) a.push_back(prefix + std::to_string(i));
    return a;
  };
  json c = small_config();
  c["sweep"] = {{"/description", names("d", 400)}, {"/model/name", names("m", 251)}};  // 100,400 points
  const ConfigError too_many = sweep_error(c);
  EXPECT_EQ(too_many.path(), "/sweep");
  EXPECT_EQ(too_many.message(), "400 x 251 points; a sweep has at most 100000 (each point holds its whole config in memory)");
  c["sweep"] = {{"/description", names("d", 400)}, {"/model/name", names("m", 250)}};
  EXPECT_EQ(expand_sweep(c, kData).size(), 100000u);
}

TEST(Sweep, FromFile) {
  const json c = read_config_file(kData / "sweep2.json");
  const auto points = expand_sweep(c, kData);
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[0].id, "layout.pp=1");
  EXPECT_EQ(points[1].id, "layout.pp=2");
  EXPECT_THROW(expand_sweep(read_config_file(kData / "bad_sweep.json"), kData), ConfigError);
}

// A source's NCCL release, modelled or not (validation rows state what their source ran), and the
// modelled release nearest to it: an older release is read with 2.20's tables, a newer one with 2.28's.
TEST(Experiment, AnNcclReleaseIsReadWithTheNearestModelledTables) {
  EXPECT_EQ(parse_nccl_release("2.29.2", "/v"), 29);
  EXPECT_EQ(parse_nccl_release("2.18", "/v"), 18);
  EXPECT_EQ(nearest_modelled_nccl_minor(29), 28);
  EXPECT_EQ(nearest_modelled_nccl_minor(27), 27);
  EXPECT_EQ(nearest_modelled_nccl_minor(28), 28);
  EXPECT_EQ(parse_nccl_version("2.28.3", "/v"), 28);
  EXPECT_EQ(nearest_modelled_nccl_minor(18), 20);
  EXPECT_EQ(nearest_modelled_nccl_minor(23), 23);
  for (const char* bad : {"2.x", "3.20", "2.24.3.1", "", "2."}) {
    try {
      parse_nccl_release(bad, "/v");
      ADD_FAILURE() << "no error for " << bad;
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.path(), "/v");
      EXPECT_NE(e.message().find("\"2.<minor>\" or \"2.<minor>.<patch>\""), std::string::npos) << e.message();
    }
  }
}

}  // namespace
}  // namespace twinbed

namespace twinbed {
namespace {

std::string text_error(const std::string& text) {
  try {
    json_read::parse_json_text(text, "t.json");
  } catch (const ConfigError& e) {
    return e.message();
  }
  return "no error";
}

}  // namespace

TEST(JsonText, BoundedNestingNulBytesAndNumbersNoDoubleHolds) {
  const auto nested = [](int depth) { return std::string(static_cast<std::size_t>(depth), '[') + std::string(static_cast<std::size_t>(depth), ']'); };
  EXPECT_EQ(text_error(nested(json_read::kMaxJsonDepth)), "no error");
  EXPECT_NE(text_error(nested(json_read::kMaxJsonDepth + 1)).find("nested more than 64 levels"), std::string::npos);
  EXPECT_NE(text_error(nested(300000)).find("nested more than 64 levels"), std::string::npos);  // no stack overflow
  EXPECT_NE(text_error(std::string("{}\0x", 4)).find("NUL byte at offset 2"), std::string::npos);
  const std::string overflow = text_error("{\"ranks\": 1e400}");
  EXPECT_NE(overflow.find("number overflow parsing '1e400'"), std::string::npos) << overflow;
  EXPECT_EQ(overflow.find("[json.exception"), std::string::npos) << overflow;  // no library tag
  const std::string malformed = text_error("{\"a\": }");
  EXPECT_EQ(malformed.rfind("malformed JSON: ", 0), 0u) << malformed;
  EXPECT_EQ(malformed.find("[json.exception"), std::string::npos) << malformed;
  EXPECT_NE(text_error("{\"a\": 1, \"a\": 2}").find("\"a\" appears twice"), std::string::npos);
}

TEST(JsonText, QuotedValuesStayOnOneLine) {
  EXPECT_EQ(json_read::quoted("two\nlines \"x\""), "\"two\\nlines \\\"x\\\"\"");
  EXPECT_EQ(json_read::quoted(std::string(100, 'a')).size(), 82u);  // cut at 80 characters, quotes added
  EXPECT_EQ(json_read::quoted(std::string(100, 'a'), std::string::npos).size(), 102u);  // file names: whole
  // A cut never splits a character: after 70 letters, the fourth "é" (2 bytes) would be cut at byte 77.
  std::string accents;
  for (int i = 0; i < 40; ++i) accents += "\u00e9";
  EXPECT_EQ(json_read::quoted(std::string(70, 'a') + accents), "\"" + std::string(70, 'a') + "\u00e9\u00e9\u00e9...\"");
}

// Range texts are written from their constants, in the short form people type.
TEST(JsonText, NumbersAsMessagesWriteThem) {
  EXPECT_EQ(json_read::number_text(1e-6), "1e-6");
  EXPECT_EQ(json_read::number_text(1e9), "1e9");
  EXPECT_EQ(json_read::number_text(0), "0");
  EXPECT_EQ(json_read::number_text(0.5), "0.5");
  EXPECT_EQ(json_read::number_text(1 << 20), "1048576");
  EXPECT_EQ(json_read::number_text(1.0 / 1024), "0.0009765625");
  EXPECT_EQ(json_read::number_range(kMinBandwidthGBps, kMaxBandwidthGBps), "[1e-6, 1e9]");
}

// The one escaping rule of every message main prints: nothing that breaks a line survives (control
// characters, DEL, the Unicode line breaks Python's splitlines honours), invalid UTF-8 is replaced, and
// everything else, quotes included, is kept.
TEST(JsonText, OneLineEscapesWhatBreaksALine) {
  EXPECT_EQ(json_read::one_line("a\nb\rc\td \"q\" \\ \u00e9"), "a\\nb\\rc\\td \"q\" \\ \u00e9");
  EXPECT_EQ(json_read::one_line(std::string("\x01\x1c\x7f", 3)), "\\u0001\\u001c\\u007f");
  EXPECT_EQ(json_read::one_line("x\u0085y\u2028z\u2029"), "x\\u0085y\\u2028z\\u2029");
  EXPECT_EQ(json_read::one_line("bad \xff\xc3 end"), "bad \ufffd\ufffd end");
  EXPECT_EQ(json_read::one_line("\xed\xa0\x80"), "\ufffd\ufffd\ufffd");  // a surrogate is not UTF-8
  EXPECT_EQ(json_read::shown(json::parse(R"(["a\nb", 2])")), "[\"a\\nb\",2]");
  EXPECT_EQ(json_read::shown(json("x\ny")), "\"x\\ny\"");
  EXPECT_EQ(json_read::shown(json(std::vector<int>(100, 1))).size(), 80u);
}

// Sweep errors show the pointer and the value through the same rule (they printed them raw).
TEST(Sweep, ErrorsQuoteThePointerAndTheValue) {
  json c = small_config();
  c["sweep"] = {{"/description", {"two\nlines", "two\nlines"}}};
  const ConfigError repeated = sweep_error(c);
  EXPECT_EQ(repeated.path(), "/sweep/~1description/1");
  EXPECT_EQ(repeated.message(), "\"/description\" = \"two\\nlines\" repeats the value at index 0");
  c["sweep"] = {{"/layout/pp", {1, json::array({"x\ny"})}}};
  const ConfigError wrong = sweep_error(c);
  EXPECT_EQ(wrong.message().rfind("\"/layout/pp\" = [\"x\\ny\"]: ", 0), 0u) << wrong.message();
}

}  // namespace twinbed

namespace twinbed {
namespace {

// A fresh, empty folder of this test's own under the system's temporary folder.
std::filesystem::path scratch_folder(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("twinbed-test-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string file_error(const std::string& file, const std::string& what = "experiment") {
  try {
    json_read::read_json_file(file, what);
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), file);
    return e.message();
  }
  return "no error";
}

}  // namespace

// Only a regular file of at most kMaxInputFileBytes is opened: a FIFO would block the read forever and
// /dev/zero would fill memory (reported as "internal error: std::bad_alloc"). Each is refused, naming
// the file, before it is opened: the FIFO below has no writer, so this test would hang if it were.
TEST(JsonFile, OnlyRegularFilesOfBoundedSizeAreRead) {
  namespace fs = std::filesystem;
  const fs::path dir = scratch_folder("json-file");
  EXPECT_EQ(file_error(dir.string()), "is a folder, not an experiment file");
  EXPECT_EQ(file_error(dir.string(), "topology"), "is a folder, not a topology file");
  EXPECT_EQ(file_error((dir / "nosuch.json").string()), "cannot open the experiment file: it does not exist");
  EXPECT_EQ(file_error("/dev/zero"), "is not a regular file (a device, FIFO or socket), so not an experiment file");
  const fs::path fifo = dir / "fifo.json";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(file_error(fifo.string(), "profile"), "is not a regular file (a device, FIFO or socket), so not a profile file");
  EXPECT_THROW(load_experiment(fifo), ConfigError);
  // A link is followed: a link to a good file reads, one to the FIFO is refused.
  fs::create_symlink(kData / "sweep2.json", dir / "link.json");
  EXPECT_EQ(load_experiment(dir / "link.json").name, "sweep2");
  fs::create_symlink(fifo, dir / "fifo-link.json");
  EXPECT_NE(file_error((dir / "fifo-link.json").string()).find("not a regular file"), std::string::npos);
  // Size: up to the cap is read (a sparse file costs no disk), one byte more is refused unread.
  const fs::path big = dir / "big.json";
  { std::ofstream(big) << "{}"; }
  fs::resize_file(big, json_read::kMaxInputFileBytes + 1);
  EXPECT_EQ(file_error(big.string()), "is 67108865 bytes; an experiment file is at most 64 MiB (67108864 bytes)");
  fs::resize_file(big, json_read::kMaxInputFileBytes);
  EXPECT_NE(file_error(big.string()).find("a NUL byte at offset 2"), std::string::npos);  // read, then parsed
  fs::remove_all(dir);
}

// A file a config names (a profile, a topology) is checked by the same rule, under the config's path.
TEST(JsonFile, FilesNamedInAConfigAreCheckedAlike) {
  const std::filesystem::path dir = scratch_folder("config-files");
  json c = small_config();
  c["cluster"]["profile"] = "/dev/zero";
  std::string message;
  EXPECT_EQ(error_path(c, &message), "/cluster/profile");
  EXPECT_NE(message.find("\"/dev/zero\": is not a regular file"), std::string::npos) << message;
  c["cluster"]["profile"] = dir.string();
  EXPECT_EQ(error_path(c, &message), "/cluster/profile");
  EXPECT_NE(message.find("is a folder, not a measured profile file"), std::string::npos) << message;
  c = small_config();
  c["cluster"] = {{"topology", "/dev/null"}};
  EXPECT_EQ(error_path(c, &message), "/cluster/topology");
  EXPECT_NE(message.find("\"/dev/null\": is not a regular file"), std::string::npos) << message;
  std::filesystem::remove_all(dir);
}

}  // namespace twinbed

namespace twinbed {

// A measured profile's figures are read with the ranges of topology files (topology_json.hpp): a link
// or memory of 1e300 GB/s, a latency of 1e300 us or a rate of 1e308 TFLOP/s were accepted and became
// infinite rates or times beyond the clock downstream (the launch overhead as a library InvalidArgument
// without the profile's path).
TEST(Profile, FiguresHaveTheRangesOfTopologyFiles) {
  const json good = json::parse(R"({"device": "cpu", "gemm_TFLOPs": {"fp32": 0.1}, "memory_bandwidth_GBps": 12.5,
                                    "memory_samples": [{"bytes": 1024, "GBps": 40}], "launch_overhead_us": 4,
                                    "sparse_speedup": 1.25, "link": {"latency_us": 1.2, "bandwidth_GBps": 5}})");
  const MachineProfile p = profile_from_json(good, MachineProfile{}, DeviceSpec{});
  ASSERT_TRUE(p.link.has_value());
  EXPECT_EQ(p.link->latency, Time::ns(1200));
  EXPECT_DOUBLE_EQ(p.link->bandwidth, 5 * GBps);
  const auto error = [&](const std::string& pointer, const json& value) {
    json j = good;
    j[json::json_pointer(pointer)] = value;
    try {
      profile_from_json(j, MachineProfile{}, DeviceSpec{});
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.path(), pointer);
      return e.message();
    }
    ADD_FAILURE() << pointer << " = " << value.dump() << " was accepted";
    return std::string();
  };
  const std::string bandwidth = "expected a number in [1e-6, 1e9] (GB/s, 1 GB/s = 1e9 bytes/s)";
  const std::string latency = "expected a number in [0, 1e9] (microseconds)";
  EXPECT_EQ(error("/link/bandwidth_GBps", 1e300), bandwidth + ", got 1e+300");
  EXPECT_EQ(error("/link/bandwidth_GBps", 1e-300), bandwidth + ", got 1e-300");
  EXPECT_EQ(error("/link/latency_us", 1e300), latency + ", got 1e+300");
  EXPECT_EQ(error("/link/latency_us", -1), latency + ", got -1");
  EXPECT_EQ(error("/memory_bandwidth_GBps", 1e308), bandwidth + ", got 1e+308");
  EXPECT_EQ(error("/memory_samples/0/GBps", 0), bandwidth + ", got 0");
  EXPECT_EQ(error("/launch_overhead_us", 1e20), latency + ", got 1e+20");
  EXPECT_NE(error("/gemm_TFLOPs/fp32", 1e308).find("(0, 1e9] (TFLOP/s)"), std::string::npos);
  json sample = good;
  sample["gemm_samples"] = json::parse(R"([{"m": 8, "n": 8, "k": 8, "dtype": "fp32", "TFLOPs": 1e308}])");
  EXPECT_THROW(profile_from_json(sample, MachineProfile{}, DeviceSpec{}), ConfigError);
  EXPECT_NE(error("/sparse_speedup", 1e308).find("(0, 100]"), std::string::npos);
  EXPECT_EQ(error("/cache_half_life_ms", 0), "expected a number in (0, 1e6] (milliseconds), got 0");
}

// The cache half-life calibrate measures round-trips in milliseconds; a profile without one has none.
TEST(Profile, CacheHalfLifeRoundTrips) {
  MachineProfile p;
  p.device = "cpu-fp32";
  p.memory_bandwidth = 12 * GBps;
  EXPECT_FALSE(profile_to_json(p).contains("cache_half_life_ms"));
  p.cache_half_life = Time::us(12500);
  const json j = profile_to_json(p);
  EXPECT_DOUBLE_EQ(j.at("cache_half_life_ms").get<double>(), 12.5);
  EXPECT_EQ(profile_from_json(j, MachineProfile{}, DeviceSpec{}).cache_half_life, Time::us(12500));
}

}  // namespace twinbed

namespace twinbed {

namespace {

// The ConfigError the profile `j` raises; a failure when it is accepted.
ConfigError profile_error(const json& j) {
  try {
    profile_from_json(j, MachineProfile{}, DeviceSpec{});
  } catch (const ConfigError& e) {
    return e;
  }
  ADD_FAILURE() << "the profile was accepted: " << j.dump();
  return ConfigError("(no error)", "(no error)");
}

}  // namespace

// Technique kernels' measured times and the sparse GEMM rates round-trip, and unknown keys are refused
// naming them and the accepted ones.
TEST(Profile, TechniqueKernelTimesRoundTripAndUnknownKeysAreRefused) {
  const json j = json::parse(R"({"device": "cpu", "memory_bandwidth_GBps": 10, "kernel_ns_per_element": {"tgc.compress.topk": 2.5, "dsa.masked_step": 1},
                                 "sparse_gemm_TFLOPs": {"block": 0.02, "2:4": 0.004}})");
  const MachineProfile p = profile_from_json(j, MachineProfile{}, DeviceSpec{});
  EXPECT_DOUBLE_EQ(p.kernel_seconds_per_element.at("tgc.compress.topk"), 2.5e-9);
  EXPECT_DOUBLE_EQ(p.sparse_gemm_rate.at("2:4"), 4e9);
  EXPECT_EQ(profile_from_json(profile_to_json(p), MachineProfile{}, DeviceSpec{}), p);
  json bad = j;
  bad["kernel_ns_per_element"]["tgc.compres.topk"] = 1;
  const ConfigError unknown_kernel = profile_error(bad);
  EXPECT_EQ(unknown_kernel.path(), "/kernel_ns_per_element/tgc.compres.topk");
  EXPECT_NE(unknown_kernel.message().find("tgc.compress.topk"), std::string::npos) << unknown_kernel.message();
  bad = j;
  bad["sparse_gemm_TFLOPs"]["block"] = 0;
  EXPECT_THROW(profile_from_json(bad, MachineProfile{}, DeviceSpec{}), ConfigError);
  // Every key calibrate measures is one the profile accepts.
  for (const std::string& key : technique_kernel_keys()) {
    json k = j;
    k["kernel_ns_per_element"] = {{key, 1.0}};
    EXPECT_NO_THROW(profile_from_json(k, MachineProfile{}, DeviceSpec{})) << key;
  }
}

}  // namespace twinbed

namespace twinbed {

// How a rank sees its communication finish: independent by default, polled as the CPU backend's
// calibrate writes it; it round-trips, and a misspelt value names the field and the accepted ones.
TEST(Profile, CommunicationProgressRoundTripsAndAnUnknownOneIsRefused) {
  const json j = json::parse(R"({"device": "cpu", "memory_bandwidth_GBps": 10})");
  EXPECT_EQ(profile_from_json(j, MachineProfile{}, DeviceSpec{}).progress, CommProgress::Independent);
  json polled = j;
  polled["progress"] = "polled";
  const MachineProfile p = profile_from_json(polled, MachineProfile{}, DeviceSpec{});
  EXPECT_EQ(p.progress, CommProgress::Polled);
  EXPECT_EQ(profile_to_json(p).at("progress"), "polled");
  EXPECT_EQ(profile_from_json(profile_to_json(p), MachineProfile{}, DeviceSpec{}), p);
  json bad = j;
  bad["progress"] = "poled";
  const ConfigError e = profile_error(bad);
  EXPECT_EQ(e.path(), "/progress");
  EXPECT_NE(e.message().find("independent"), std::string::npos) << e.message();
  EXPECT_NE(e.message().find("polled"), std::string::npos) << e.message();
  bad["progress"] = 1;
  EXPECT_THROW(profile_from_json(bad, MachineProfile{}, DeviceSpec{}), ConfigError);
  EXPECT_EQ(comm_progress_names(), (std::vector<std::string>{"independent", "polled"}));
}

// The cores the calibrating ranks shared round-trip in the provenance; a profile without them (written
// before calibrate recorded them) reads 0, and a count below 1 is refused at its field.
TEST(Profile, TheCoresTheRanksSharedRoundTrip) {
  const json j = json::parse(R"({"device": "cpu", "memory_bandwidth_GBps": 10,
                                 "provenance": {"machine": "vm", "ranks": 4, "cores": 2}})");
  const MachineProfile p = profile_from_json(j, MachineProfile{}, DeviceSpec{});
  ASSERT_TRUE(p.provenance);
  EXPECT_EQ(p.provenance->ranks, 4);
  EXPECT_EQ(p.provenance->cores, 2);
  EXPECT_EQ(profile_to_json(p)["provenance"]["cores"], 2);
  EXPECT_EQ(profile_from_json(profile_to_json(p), MachineProfile{}, DeviceSpec{}), p);
  json older = j;
  older["provenance"].erase("cores");
  const MachineProfile q = profile_from_json(older, MachineProfile{}, DeviceSpec{});
  EXPECT_EQ(q.provenance->cores, 0);
  EXPECT_FALSE(profile_to_json(q)["provenance"].contains("cores"));
  json bad = j;
  bad["provenance"]["cores"] = 0;
  EXPECT_EQ(profile_error(bad).path(), "/provenance/cores");
}

// The sample calibrate and compare time again to see how fast the machine runs at another moment: the
// largest square fp32 one of at most 1024, from a full grid or a quick one; none without such a sample.
TEST(Profile, TheSpeedProbeIsTheLargestSquareFp32SampleUpTo1024) {
  const auto grid = [](std::vector<std::int64_t> dims, DType t) {
    MachineProfile p;
    for (auto m : dims)
      for (auto n : dims)
        for (auto k : dims) p.gemm_samples.push_back({m, n, k, t, 1e9 * static_cast<double>(m + n + k)});
    return p;
  };
  const auto full = speed_probe_sample(grid({64, 256, 1024, 4096}, DType::FP32));
  ASSERT_TRUE(full.has_value());
  EXPECT_EQ(*full, (GemmSample{1024, 1024, 1024, DType::FP32, 3072e9}));
  EXPECT_EQ(speed_probe_sample(grid({128, 512}, DType::FP32))->m, 512);
  EXPECT_FALSE(speed_probe_sample(grid({2048, 4096}, DType::FP32)).has_value());
  EXPECT_FALSE(speed_probe_sample(grid({256, 1024}, DType::BF16)).has_value());
  EXPECT_FALSE(speed_probe_sample(MachineProfile{}).has_value());
  // calibrate picks the same side from its grid's dimensions before measuring them.
  EXPECT_EQ(speed_probe_dim({64, 256, 1024, 4096}), 1024);
  EXPECT_EQ(speed_probe_dim({128, 512}), 512);
  EXPECT_EQ(speed_probe_dim({2048, 4096}), 0);
}

// compare corrects the simulation by the speed probe's ratio: the GEMM rates scale, and only they.
TEST(Profile, WithGemmSpeedScalesEveryGemmRateAndNothingElse) {
  MachineProfile p;
  p.gemm_rate = {{DType::FP32, 100e9}};
  p.gemm_samples = {{512, 512, 512, DType::FP32, 80e9}, {64, 64, 64, DType::FP32, 20e9}};
  p.sparse_gemm_rate = {{"block", 40e9}};
  p.memory_bandwidth = 10e9;
  p.memory_samples = {{1 << 20, 30e9}};
  p.launch_overhead = Time::us(2);
  p.link = LinkProfile{Time::us(1), 5e9};
  p.kernel_seconds_per_element = {{"tgc.compress.topk", 2e-9}};
  const MachineProfile q = with_gemm_speed(p, 0.5);
  EXPECT_DOUBLE_EQ(q.gemm_rate.at(DType::FP32), 50e9);
  EXPECT_DOUBLE_EQ(q.gemm_samples[0].rate, 40e9);
  EXPECT_DOUBLE_EQ(q.gemm_samples[1].rate, 10e9);
  EXPECT_DOUBLE_EQ(q.sparse_gemm_rate.at("block"), 20e9);
  MachineProfile rest = q;
  rest.gemm_rate = p.gemm_rate;
  rest.gemm_samples = p.gemm_samples;
  rest.sparse_gemm_rate = p.sparse_gemm_rate;
  EXPECT_EQ(rest, p);
  EXPECT_THROW(with_gemm_speed(p, 0), InvalidArgument);
  EXPECT_THROW(with_gemm_speed(p, std::nan("")), InvalidArgument);
}

}  // namespace twinbed
