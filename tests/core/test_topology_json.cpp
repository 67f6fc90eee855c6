// Topology JSON: both forms, strict errors that name the JSON path, files, and the shipped examples.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "twinbed/core/error.hpp"
#include "twinbed/core/topology_json.hpp"

namespace twinbed {
namespace {

using nlohmann::json;

const std::string kData = std::string(TWINBED_TEST_DATA_DIR) + "/topologies/";

// The ConfigError `f` throws; a test failure (and a default error) when it throws none.
template <class F>
ConfigError config_error(F f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e;
  }
  ADD_FAILURE() << "expected a ConfigError";
  return ConfigError("", "none thrown");
}

ConfigError json_error(const std::string& text) {
  return config_error([&] { topology_from_json(json::parse(text)); });
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A two-device graph with `link` as its only link.
std::string pair_with_link(const std::string& link) {
  return R"({"devices": [{"name": "a", "host": 0}, {"name": "b", "host": 1}], "links": [)" + link + "]}";
}

// ---- explicit graph ----------------------------------------------------------------------------------

TEST(TopologyJson, ExplicitGraph) {
  const Topology t = topology_from_json(json::parse(R"({
    "devices": [{"name": "g0", "host": 0}, {"name": "g1", "host": 0}, {"name": "g2", "host": 1}],
    "switches": [{"name": "s0"}],
    "links": [
      {"from": "g0", "to": "s0", "bandwidth_GBps": 100, "latency_us": 1},
      {"from": "g1", "to": "s0", "bandwidth_GBps": 100, "latency_us": 1, "duplex": true},
      {"from": "g2", "to": "s0", "bandwidth_GBps": 50, "latency_us": 0.25, "duplex": false},
      {"from": "s0", "to": "g2", "bandwidth_GBps": 50, "latency_us": 0.25, "duplex": false}
    ]})"));
  EXPECT_EQ(t.num_ranks(), 3);
  EXPECT_EQ(t.num_nodes(), 4);
  EXPECT_EQ(t.num_links(), 6);
  EXPECT_EQ(t.num_hosts(), 2);
  EXPECT_EQ(t.uniform_ranks_per_host(), 0);
  EXPECT_EQ(t.device(0).name, "h100");  // the default device
  const Path p = t.route(0, 2);
  EXPECT_EQ(p.size(), 2u);
  EXPECT_EQ(t.path_bandwidth(p), 50e9);
  EXPECT_EQ(t.path_latency(p), Time::us(1.25));
  EXPECT_TRUE(contains(t.description, "3 devices"));
}

TEST(TopologyJson, ExplicitGraphFromFile) {
  const Topology t = load_topology(kData + "two_hosts.json");
  EXPECT_EQ(t.num_ranks(), 4);
  EXPECT_EQ(t.num_hosts(), 2);
  EXPECT_EQ(t.uniform_ranks_per_host(), 2);
  EXPECT_EQ(t.num_links(), 16);
  EXPECT_EQ(t.description, "two hosts of two GPUs, one IB switch");
  EXPECT_EQ(t.device(0).name, "a100");
  EXPECT_EQ(t.device(2).name, "h100");                   // per-device override
  EXPECT_EQ(t.path_bandwidth(t.route(0, 1)), 300e9);      // same host: NVSwitch, not the 25 GB/s NIC
  EXPECT_EQ(t.path_bandwidth(t.route(0, 3)), 25e9);
}

// ---- preset form ------------------------------------------------------------------------------------------

TEST(TopologyJson, PresetForm) {
  const Topology t = load_topology(kData + "fat_tree_preset.json");
  EXPECT_EQ(t.num_ranks(), 64);
  EXPECT_EQ(t.num_hosts(), 8);
  EXPECT_EQ(t.device(0).name, "a100");
  const Path across = t.route(0, 63);
  EXPECT_EQ(t.path_bandwidth(across), 25e9);
  EXPECT_EQ(t.path_latency(across), Time::us(6));  // 4 scale-out hops of 1.5 us

  const Topology r = topology_from_json(json::parse(R"({"preset": "ring", "description": "mine"})"));
  EXPECT_EQ(r.num_ranks(), 8);
  EXPECT_EQ(r.description, "mine");
  const Topology tor = topology_from_json(json::parse(R"({"preset": "torus", "dims": [2, 3, 4]})"));
  EXPECT_EQ(tor.num_ranks(), 24);
  const Topology nv =
      topology_from_json(json::parse(R"({"preset": "nvswitch-node", "ranks": 4, "intra_bandwidth_GBps": 900})"));
  EXPECT_EQ(nv.path_bandwidth(nv.route(0, 3)), 900e9);
}

TEST(TopologyJson, PresetErrorsNameThePath) {
  ConfigError e = json_error(R"({"preset": "fat_tree"})");
  EXPECT_EQ(e.path(), "/preset");
  EXPECT_TRUE(contains(e.what(), "fat-tree")) << e.what();  // lists the known presets

  e = json_error(R"({"preset": "ring", "ranks": "8"})");
  EXPECT_EQ(e.path(), "/ranks");
  EXPECT_TRUE(contains(e.what(), "expected an integer in 1..")) << e.what();

  e = json_error(R"({"preset": "ring", "ranks": 8.5})");
  EXPECT_EQ(e.path(), "/ranks");
  e = json_error(R"({"preset": "ring", "ranks": 0})");
  EXPECT_EQ(e.path(), "/ranks");
  e = json_error(R"({"preset": "ring", "ranks": 18446744073709551615})");
  EXPECT_EQ(e.path(), "/ranks");

  e = json_error(R"({"preset": "switch", "bandwidth_GBps": 0})");
  EXPECT_EQ(e.path(), "/bandwidth_GBps");
  EXPECT_TRUE(contains(e.what(), "in [1e-6, 1e9] (GB/s")) << e.what();

  e = json_error(R"({"preset": "switch", "latency_us": -2})");
  EXPECT_EQ(e.path(), "/latency_us");
  EXPECT_TRUE(contains(e.what(), "in [0, 1e9] (microseconds)")) << e.what();

  e = json_error(R"({"preset": "fat-tree", "oversubscription": 0.5})");
  EXPECT_EQ(e.path(), "/oversubscription");

  e = json_error(R"({"preset": "torus", "dims": [4, -1]})");
  EXPECT_EQ(e.path(), "/dims/1");
  e = json_error(R"({"preset": "torus", "dims": 16})");
  EXPECT_EQ(e.path(), "/dims");

  e = json_error(R"({"preset": "switch", "device": "v100"})");
  EXPECT_EQ(e.path(), "/device");
  EXPECT_TRUE(contains(e.what(), "a100, h100, h200")) << e.what();

  e = json_error(R"({"preset": "switch", "rank": 8})");
  EXPECT_EQ(e.path(), "/rank");
  EXPECT_TRUE(contains(e.what(), "accepted keys here: preset")) << e.what();

  // A combination the preset itself rejects.
  e = json_error(R"({"preset": "fat-tree", "ranks": 12})");
  EXPECT_EQ(e.path(), "/preset");
  EXPECT_TRUE(contains(e.what(), "ranks must be a multiple of gpus_per_node")) << e.what();
  // A key the preset does not take: at that key, naming the keys it takes as a file spells them.
  e = json_error(R"({"preset": "ring", "dims": [4, 4]})");
  EXPECT_EQ(e.path(), "/dims");
  EXPECT_TRUE(contains(e.what(), "it takes: ranks, bandwidth_GBps, latency_us, device")) << e.what();
  e = json_error(R"({"preset": "switch", "intra_latency_us": 1})");
  EXPECT_EQ(e.path(), "/intra_latency_us");

  e = json_error(R"({"preset": 3})");
  EXPECT_EQ(e.path(), "/preset");
  e = json_error(R"({"preset": "ring", "description": 5})");
  EXPECT_EQ(e.path(), "/description");
}

// ---- explicit graph errors -------------------------------------------------------------------------------

TEST(TopologyJson, GraphErrorsNameThePath) {
  ConfigError e = json_error(R"([1, 2])");
  EXPECT_EQ(e.path(), "/");
  EXPECT_TRUE(contains(e.what(), "expected a JSON object")) << e.what();

  e = json_error(R"({"links": []})");
  EXPECT_EQ(e.path(), "/devices");
  EXPECT_TRUE(contains(e.what(), "missing")) << e.what();
  e = json_error(R"({"devices": [], "links": []})");
  EXPECT_EQ(e.path(), "/devices");
  e = json_error(R"({"devices": [{"name": "a", "host": 0}]})");
  EXPECT_EQ(e.path(), "/links");

  e = json_error(R"({"devices": [{"name": "a"}], "links": []})");
  EXPECT_EQ(e.path(), "/devices/0/host");
  e = json_error(R"({"devices": [{"name": "a", "host": -1}], "links": []})");
  EXPECT_EQ(e.path(), "/devices/0/host");
  e = json_error(R"({"devices": [{"name": "", "host": 0}], "links": []})");
  EXPECT_EQ(e.path(), "/devices/0/name");
  e = json_error(R"({"devices": [{"name": "a", "host": 0, "gpu": "h100"}], "links": []})");
  EXPECT_EQ(e.path(), "/devices/0/gpu");
  e = json_error(R"({"devices": [{"name": "a", "host": 0, "device": "b200"}], "links": []})");
  EXPECT_EQ(e.path(), "/devices/0/device");
  e = json_error(R"({"devices": ["a"], "links": []})");
  EXPECT_EQ(e.path(), "/devices/0");

  e = json_error(R"({"devices": [{"name": "a", "host": 0}], "switches": [{"name": "a"}], "links": []})");
  EXPECT_EQ(e.path(), "/switches/0/name");
  EXPECT_TRUE(contains(e.what(), "duplicate name 'a'")) << e.what();

  e = json_error(R"({"ranks": 8, "devices": [{"name": "a", "host": 0}], "links": []})");
  EXPECT_EQ(e.path(), "/ranks");
  EXPECT_TRUE(contains(e.what(), "\"preset\"")) << e.what();

  e = json_error(pair_with_link(R"({"from": "a", "to": "c", "bandwidth_GBps": 1, "latency_us": 1})"));
  EXPECT_EQ(e.path(), "/links/0/to");
  EXPECT_TRUE(contains(e.what(), "unknown node 'c'")) << e.what();
  e = json_error(pair_with_link(R"({"from": "a", "to": "a", "bandwidth_GBps": 1, "latency_us": 1})"));
  EXPECT_EQ(e.path(), "/links/0/to");
  e = json_error(pair_with_link(R"({"from": "a", "to": "b", "bandwidth_GBps": -5, "latency_us": 1})"));
  EXPECT_EQ(e.path(), "/links/0/bandwidth_GBps");
  EXPECT_TRUE(contains(e.what(), "got -5")) << e.what();
  e = json_error(pair_with_link(R"({"from": "a", "to": "b", "bandwidth_GBps": "100", "latency_us": 1})"));
  EXPECT_EQ(e.path(), "/links/0/bandwidth_GBps");
  e = json_error(pair_with_link(R"({"from": "a", "to": "b", "bandwidth_GBps": 1})"));
  EXPECT_EQ(e.path(), "/links/0/latency_us");
  e = json_error(pair_with_link(R"({"from": "a", "to": "b", "bandwidth_GBps": 1, "latency_ns": 1})"));
  EXPECT_EQ(e.path(), "/links/0/latency_ns");
  EXPECT_TRUE(contains(e.what(), "latency_us")) << e.what();  // the accepted keys are listed
  e = json_error(pair_with_link(R"({"from": "a", "to": "b", "bandwidth_GBps": 1, "latency_us": 1, "duplex": 1})"));
  EXPECT_EQ(e.path(), "/links/0/duplex");

  // Keys with '/' and '~' are escaped as JSON Pointer requires.
  e = json_error(R"({"devices": [{"name": "a", "host": 0}], "links": [], "a/b~c": 1})");
  EXPECT_EQ(e.path(), "/a~1b~0c");

  // Connected one way only, so not every rank reaches every other.
  e = json_error(pair_with_link(R"({"from": "a", "to": "b", "bandwidth_GBps": 1, "latency_us": 1, "duplex": false})"));
  EXPECT_EQ(e.path(), "/links");
  EXPECT_TRUE(contains(e.what(), "disconnected")) << e.what();
}

// ---- files ------------------------------------------------------------------------------------------------------

TEST(TopologyJson, FileErrorsNameTheFile) {
  const std::string missing = kData + "no_such_file.json";
  ConfigError e = config_error([&] { load_topology(missing); });
  EXPECT_EQ(e.path(), missing);
  EXPECT_TRUE(contains(e.what(), "cannot open")) << e.what();

  const std::string malformed = kData + "malformed.json";
  e = config_error([&] { load_topology(malformed); });
  EXPECT_EQ(e.path(), malformed);
  EXPECT_TRUE(contains(e.what(), "malformed JSON")) << e.what();
  EXPECT_TRUE(contains(e.what(), "line 4")) << e.what();  // nlohmann's position

  e = config_error([&] { load_topology(kData + "duplicate_key.json"); });
  EXPECT_TRUE(contains(e.what(), "\"ranks\" appears twice")) << e.what();

  // Errors inside a file keep the JSON path and name the file in the message.
  e = config_error([&] { load_topology(kData + "unknown_key.json"); });
  EXPECT_EQ(e.path(), "/links/0/bandwith_GBps");
  EXPECT_TRUE(contains(e.what(), "unknown_key.json")) << e.what();
  EXPECT_TRUE(contains(e.what(), "bandwidth_GBps")) << e.what();

  e = config_error([&] { load_topology(kData + "bad_units.json"); });
  EXPECT_EQ(e.path(), "/bandwidth_Gbps");
}

// Every example shipped in experiments/topologies loads and validates, so the examples never rot.
TEST(TopologyJson, ShippedExamplesLoad) {
  const std::filesystem::path dir = std::filesystem::path(TWINBED_SOURCE_DIR) / "experiments" / "topologies";
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().string());
    const Topology t = load_topology(entry.path().string());
    EXPECT_NO_THROW(t.validate());
    EXPECT_FALSE(t.description.empty());
    EXPECT_GT(t.uniform_ranks_per_host(), 0);
    ++loaded;
  }
  EXPECT_GE(loaded, 2);
}

}  // namespace
}  // namespace twinbed
