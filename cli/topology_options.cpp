#include "topology_options.hpp"

#include <algorithm>
#include <filesystem>

#include "validators.hpp"

#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"
#include "twinbed/core/profile.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/core/topology_json.hpp"

namespace twinbed::cli {

void TopologyOptions::add_to(CLI::App& app) {
  app.add_option("--topology", topology,
                 "Preset name (see `twinbed list`) or a topology JSON file")
      ->capture_default_str();
  app.add_option("--ranks", ranks, "Number of ranks (devices); overrides the preset's")->transform(in_range(1, kMaxCount, true));
  app.add_option("--gpus-per-node", gpus_per_node, "GPUs per node on multi-node presets")->transform(in_range(1, kMaxCount, true));
  app.add_option("--bandwidth-GBps", bandwidth_GBps,
                 "Per-rank injection link bandwidth per direction, GB/s (the NIC on multi-node presets)")
      ->transform(in_range(kMinBandwidthGBps, kMaxBandwidthGBps));
  app.add_option("--latency-us", latency_us, "Latency per hop of those links, microseconds")
      ->transform(in_range(0, kMaxLatencyUs));
  app.add_option("--intra-bandwidth-GBps", intra_bandwidth_GBps, "NVLink tier bandwidth per direction, GB/s")
      ->transform(in_range(kMinBandwidthGBps, kMaxBandwidthGBps));
  app.add_option("--intra-latency-us", intra_latency_us, "NVLink tier latency per hop, microseconds")
      ->transform(in_range(0, kMaxLatencyUs));
  app.add_option("--oversubscription", oversubscription, "Fat-tree leaf down:up bandwidth ratio (>= 1)")
      ->transform(in_range(1, kMaxOversubscription));
  app.add_option("--dims", dims, "Torus / multi-dim sizes, e.g. 4x4 or 4x4x2");
  app.add_option("--device", device, "Device preset: a100, h100, h200");
  app.add_option("--profile", profile,
                 "Simulate this machine from a profile written by `twinbed calibrate` (--ranks defaults to the "
                 "profile's rank count when above 1, else 2)");
}

namespace {

// A preset's parameter (PresetParams' field name) as the flag that sets it: its JSON key
// (core/topology_json.hpp), '_' as '-', the units' case kept ("--bandwidth-GBps").
std::string preset_flag(const std::string& param) {
  std::string flag = "--" + preset_override_key(param);
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

std::vector<int> parse_dims(const std::string& text) {
  std::vector<int> dims;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t x = text.find('x', start);
    std::string part = text.substr(start, x == std::string::npos ? std::string::npos : x - start);
    try {
      std::size_t used = 0;
      int v = std::stoi(part, &used);
      if (used != part.size() || v < 1) throw std::invalid_argument(part);
      dims.push_back(v);
    } catch (const std::exception&) {
      throw ConfigError("--dims", json_read::quoted(text) + " is not a list of positive sizes like 4x4 or 4x4x2");
    }
    if (x == std::string::npos) break;
    start = x + 1;
  }
  return dims;
}

}  // namespace

Topology TopologyOptions::build() const {
  const bool preset_flags = gpus_per_node || bandwidth_GBps || latency_us || intra_bandwidth_GBps || intra_latency_us ||
                            oversubscription || dims || device;
  if (profile) {
    if (topology != "switch" || preset_flags) {
      throw ConfigError("--profile", "describes this machine; it cannot be combined with --topology or its parameters");
    }
    MachineProfile p = load_profile(*profile, MachineProfile{}, DeviceSpec{});
    const int n = ranks.value_or(p.provenance && p.provenance->ranks > 1 ? p.provenance->ranks : 2);
    try {
      return topo::this_machine(p, n);
    } catch (const InvalidArgument& e) {
      throw ConfigError("--profile", e.what());
    }
  }
  auto presets = topo::topology_presets();
  if (const topo::PresetFactory* preset = presets.find(topology)) {
    topo::PresetParams p;
    p.ranks = ranks;
    p.gpus_per_node = gpus_per_node;
    if (bandwidth_GBps) p.bandwidth = *bandwidth_GBps * GBps;
    if (latency_us) p.latency = Time::us(*latency_us);
    if (intra_bandwidth_GBps) p.intra_bandwidth = *intra_bandwidth_GBps * GBps;
    if (intra_latency_us) p.intra_latency = Time::us(*intra_latency_us);
    p.oversubscription = oversubscription;
    if (dims) p.dims = parse_dims(*dims);
    p.device = device;
    try {
      return (*preset)(p);
    } catch (const topo::UnsupportedPresetParam& e) {
      std::string flags;
      for (const std::string& param : e.accepted) flags += (flags.empty() ? "" : ", ") + preset_flag(param);
      throw ConfigError(preset_flag(e.param), "topology preset '" + topology + "' does not take this flag; it takes: " + flags);
    } catch (const InvalidArgument& e) {
      throw ConfigError("--topology " + topology, e.what());
    }
  }
  if (!std::filesystem::exists(topology)) {
    std::string known;
    for (const auto& n : presets.names()) known += (known.empty() ? "" : ", ") + n;
    throw ConfigError("--topology", json_read::quoted(topology) + " is neither a preset (known: " + known + ") nor a file");
  }
  for (auto [set, flag] : {std::pair{gpus_per_node.has_value(), "--gpus-per-node"},
                           {bandwidth_GBps.has_value(), "--bandwidth-GBps"},
                           {latency_us.has_value(), "--latency-us"},
                           {intra_bandwidth_GBps.has_value(), "--intra-bandwidth-GBps"},
                           {intra_latency_us.has_value(), "--intra-latency-us"},
                           {oversubscription.has_value(), "--oversubscription"},
                           {dims.has_value(), "--dims"},
                           {device.has_value(), "--device"}}) {
    if (set) throw ConfigError(flag, "applies to presets only; edit the topology file instead");
  }
  Topology t = load_topology(topology);
  if (ranks && *ranks != t.num_ranks()) {
    throw ConfigError("--ranks", std::to_string(*ranks) + " given, but " + topology + " has " +
                                     std::to_string(t.num_ranks()) + " ranks");
  }
  return t;
}

}  // namespace twinbed::cli
