#include "twinbed/core/topology_json.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/topology_builders.hpp"

namespace twinbed {

namespace {

using nlohmann::json;
using namespace json_read;

// The top-level object has no pointer text of its own; errors about it say "/" (json_read::fail).

// An int-sized field (ranks, degrees): json_read::read_int with bounds that fit an int.
int read_int32(const json& v, const std::string& path, std::int64_t min, std::int64_t max) {
  return static_cast<int>(read_int(v, path, min, max));
}

DeviceSpec read_device(const json& v, const std::string& path) {
  const std::string name = read_string(v, path);
  try {
    return device_preset(name);
  } catch (const UnknownName& e) {
    fail(path, e.what());
  }
}

std::string read_description(const json& j) {
  auto it = j.find("description");
  return it == j.end() ? std::string() : read_string(*it, "/description");
}

// {"preset": "fat-tree", "ranks": 64, ...}: the registry's preset with the given overrides.
Topology from_preset(const json& j) {
  std::vector<std::string> accepted = {"preset", "description"};
  for (const std::string& key : preset_override_keys()) accepted.push_back(key);
  check_keys(j, "", accepted);
  const Registry<topo::PresetFactory> presets = topo::topology_presets();
  const std::string name = read_string(j.at("preset"), "/preset");
  const topo::PresetFactory* factory = presets.find(name);
  if (!factory) fail("/preset", "unknown topology preset '" + name + "'; known: " + join(presets.names()));
  const topo::PresetParams p = preset_params_from_json(j, "");

  Topology t;
  try {
    t = (*factory)(p);
  } catch (const topo::UnsupportedPresetParam& e) {
    fail_unsupported(e, "");
  } catch (const InvalidArgument& e) {
    // A combination the preset rejects (ranks not a multiple of gpus_per_node): the message names it.
    fail("/preset", e.what());
  }
  if (std::string d = read_description(j); !d.empty()) t.description = d;
  return t;
}

// {"devices": [...], "switches": [...], "links": [...]}: an explicit graph.
Topology from_graph(const json& j) {
  check_keys(j, "", {"description", "device", "devices", "switches", "links"},
             " (or add \"preset\" to use the preset form)");
  const DeviceSpec default_device = j.contains("device") ? read_device(j["device"], "/device") : device_preset("h100");

  Topology t;
  std::map<std::string, NodeId> by_name;
  const auto name_node = [&](const std::string& name, NodeId id, const std::string& path) {
    if (!by_name.emplace(name, id).second) {
      fail(path, "duplicate name '" + name + "' (device and switch names must be unique together)");
    }
  };

  const json& devices = required(j, "", "devices");
  if (!devices.is_array() || devices.empty()) {
    fail("/devices", "expected a non-empty array of {\"name\", \"host\"[, \"device\"]}, got " + got(devices));
  }
  for (std::size_t i = 0; i < devices.size(); ++i) {
    const std::string path = child("/devices", i);
    const json& d = devices[i];
    require_object(d, path);
    check_keys(d, path, {"name", "host", "device"});
    const std::string name = read_name(required(d, path, "name"), child(path, "name"));
    const int host = read_int32(required(d, path, "host"), child(path, "host"), 0, kMaxCount);
    const DeviceSpec spec = d.contains("device") ? read_device(d["device"], child(path, "device")) : default_device;
    name_node(name, t.add_device(name, host, spec), child(path, "name"));
  }

  if (j.contains("switches")) {
    const json& switches = j["switches"];
    if (!switches.is_array()) fail("/switches", "expected an array of {\"name\"}, got " + got(switches));
    for (std::size_t i = 0; i < switches.size(); ++i) {
      const std::string path = child("/switches", i);
      require_object(switches[i], path);
      check_keys(switches[i], path, {"name"});
      const std::string name = read_name(required(switches[i], path, "name"), child(path, "name"));
      name_node(name, t.add_switch(name), child(path, "name"));
    }
  }

  const json& links = required(j, "", "links");
  if (!links.is_array()) fail("/links", "expected an array of links, got " + got(links));
  for (std::size_t i = 0; i < links.size(); ++i) {
    const std::string path = child("/links", i);
    const json& l = links[i];
    require_object(l, path);
    check_keys(l, path, {"from", "to", "bandwidth_GBps", "latency_us", "duplex"});
    const auto endpoint = [&](const char* key) {
      const std::string p = child(path, key);
      const std::string name = read_string(required(l, path, key), p);
      auto it = by_name.find(name);
      if (it == by_name.end()) fail(p, "unknown node '" + name + "'; links join names declared in /devices or /switches");
      return it->second;
    };
    const NodeId from = endpoint("from");
    const NodeId to = endpoint("to");
    if (from == to) fail(child(path, "to"), "a link must join two different nodes");
    const BytesPerSec bw = read_bandwidth_GBps(required(l, path, "bandwidth_GBps"), child(path, "bandwidth_GBps"));
    const Time latency = read_latency_us(required(l, path, "latency_us"), child(path, "latency_us"));
    bool duplex = true;
    if (l.contains("duplex")) {
      if (!l["duplex"].is_boolean()) fail(child(path, "duplex"), "expected true or false, got " + got(l["duplex"]));
      duplex = l["duplex"].get<bool>();
    }
    if (duplex) t.add_duplex(from, to, bw, latency);
    else t.add_link(from, to, bw, latency);
  }

  try {
    t.validate();
  } catch (const InvalidArgument& e) {
    fail("/links", e.what());
  }
  const int switch_count = t.num_nodes() - t.num_ranks();
  t.description = read_description(j);
  if (t.description.empty()) {
    t.description = "graph: " + std::to_string(t.num_ranks()) + " devices on " + std::to_string(t.num_hosts()) +
                    " hosts, " + std::to_string(switch_count) + " switches, " + std::to_string(t.num_links()) +
                    " directed links";
  }
  return t;
}

}  // namespace

BytesPerSec read_bandwidth_GBps(const json& v, const std::string& path) {
  const std::string range = "a number in " + number_range(kMinBandwidthGBps, kMaxBandwidthGBps) + " (GB/s, 1 GB/s = " +
                            number_text(GBps) + " bytes/s)";
  const double gb = read_number(v, path, range);
  if (!(gb >= kMinBandwidthGBps && gb <= kMaxBandwidthGBps)) fail(path, "expected " + range + ", got " + got(v));
  return gb * GBps;
}

Time read_latency_us(const json& v, const std::string& path) {
  const std::string range = "a number in " + number_range(0, kMaxLatencyUs) + " (microseconds)";
  const double us = read_number(v, path, range);
  if (!(us >= 0 && us <= kMaxLatencyUs)) fail(path, "expected " + range + ", got " + got(v));
  return Time::us(us);
}

namespace {
// PresetParams' fields and their keys, in JSON units.
constexpr std::pair<const char*, const char*> kOverrideKeys[] = {
    {"ranks", "ranks"},
    {"gpus_per_node", "gpus_per_node"},
    {"bandwidth", "bandwidth_GBps"},
    {"latency", "latency_us"},
    {"intra_bandwidth", "intra_bandwidth_GBps"},
    {"intra_latency", "intra_latency_us"},
    {"oversubscription", "oversubscription"},
    {"dims", "dims"},
    {"device", "device"},
};
}  // namespace

std::vector<std::string> preset_override_keys() {
  std::vector<std::string> keys;
  for (const auto& [param, key] : kOverrideKeys) keys.emplace_back(key);
  return keys;
}

std::string preset_override_key(const std::string& param) {
  for (const auto& [name, key] : kOverrideKeys) {
    if (param == name) return key;
  }
  throw InvalidArgument("no preset parameter '" + param + "'");
}

void fail_unsupported(const topo::UnsupportedPresetParam& e, const std::string& path) {
  std::vector<std::string> keys;
  for (const std::string& param : e.accepted) keys.push_back(preset_override_key(param));
  fail(child(path, preset_override_key(e.param)),
       "topology preset '" + e.preset + "' does not take this key; it takes: " + join(keys));
}

topo::PresetParams preset_params_from_json(const json& j, const std::string& path) {
  topo::PresetParams p;
  const auto at = [&](const char* key) { return child(path, key); };
  if (j.contains("ranks")) p.ranks = read_int32(j["ranks"], at("ranks"), 1, kMaxCount);
  if (j.contains("gpus_per_node")) p.gpus_per_node = read_int32(j["gpus_per_node"], at("gpus_per_node"), 1, kMaxCount);
  if (j.contains("bandwidth_GBps")) p.bandwidth = read_bandwidth_GBps(j["bandwidth_GBps"], at("bandwidth_GBps"));
  if (j.contains("latency_us")) p.latency = read_latency_us(j["latency_us"], at("latency_us"));
  if (j.contains("intra_bandwidth_GBps")) {
    p.intra_bandwidth = read_bandwidth_GBps(j["intra_bandwidth_GBps"], at("intra_bandwidth_GBps"));
  }
  if (j.contains("intra_latency_us")) p.intra_latency = read_latency_us(j["intra_latency_us"], at("intra_latency_us"));
  if (j.contains("oversubscription")) {
    const std::string range = "a number in " + number_range(1, kMaxOversubscription) + " (leaf downlink:uplink bandwidth)";
    const double o = read_number(j["oversubscription"], at("oversubscription"), range);
    if (!(o >= 1 && o <= kMaxOversubscription)) fail(at("oversubscription"), "expected " + range + ", got " + got(j["oversubscription"]));
    p.oversubscription = o;
  }
  if (j.contains("dims")) {
    const json& dims = j["dims"];
    if (!dims.is_array() || dims.empty()) fail(at("dims"), "expected a non-empty array of sizes, got " + got(dims));
    std::vector<int> sizes;
    for (std::size_t i = 0; i < dims.size(); ++i) sizes.push_back(read_int32(dims[i], child(at("dims"), i), 1, kMaxCount));
    p.dims = sizes;
  }
  if (j.contains("device")) {
    read_device(j["device"], at("device"));  // checks the name here, where the path is known
    p.device = j["device"].get<std::string>();
  }
  return p;
}

json preset_params_to_json(const topo::PresetParams& p) {
  json j = json::object();
  if (p.ranks) j["ranks"] = *p.ranks;
  if (p.gpus_per_node) j["gpus_per_node"] = *p.gpus_per_node;
  if (p.bandwidth) j["bandwidth_GBps"] = *p.bandwidth / GBps;
  if (p.latency) j["latency_us"] = p.latency->microseconds();
  if (p.intra_bandwidth) j["intra_bandwidth_GBps"] = *p.intra_bandwidth / GBps;
  if (p.intra_latency) j["intra_latency_us"] = p.intra_latency->microseconds();
  if (p.oversubscription) j["oversubscription"] = *p.oversubscription;
  if (p.dims) j["dims"] = *p.dims;
  if (p.device) j["device"] = *p.device;
  return j;
}

Topology topology_from_json(const nlohmann::json& j) {
  require_object(j, "");
  return j.contains("preset") ? from_preset(j) : from_graph(j);
}

Topology load_topology(const std::string& path) {
  const json j = read_json_file(path, "topology");
  try {
    return topology_from_json(j);
  } catch (const ConfigError& e) {
    // Keep the JSON path as the error's path; name the file in the message.
    throw ConfigError(e.path(), e.message() + " (in " + path + ")");
  }
}

}  // namespace twinbed
