// Topologies from JSON, strictly: unknown keys, wrong types and out-of-range values are ConfigErrors
// naming the JSON path. Units are in the key names (bandwidth_GBps, latency_us). Format: README.md,
// section "Topology files".
#pragma once

#include <string>

#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "twinbed/core/topology.hpp"
#include "twinbed/core/topology_builders.hpp"

namespace twinbed {

// The accepted ranges of link and preset parameters, the same for files, experiment configs, measured
// profiles and CLI flags: 1 kB/s to 1 EB/s per link, latencies up to 1,000 s, oversubscription up to
// 10^6, counts (ranks, GPUs per node, hosts, a dimension's size; CLI repeat counts) up to 2^20. Wider
// values are typing errors, and would overflow the simulator's picosecond clock.
inline constexpr double kMinBandwidthGBps = 1e-6;
inline constexpr double kMaxBandwidthGBps = 1e9;
inline constexpr double kMaxLatencyUs = 1e9;
inline constexpr double kMaxOversubscription = 1e6;
inline constexpr int kMaxCount = 1 << 20;

// A bandwidth in GB/s and a latency in microseconds (a link's, a memory's, a kernel launch's), read with
// the ranges above: a ConfigError at `path` saying what is accepted ("expected a number in [1e-6, 1e9]
// (GB/s, 1 GB/s = 1e9 bytes/s), got 0"), the range written from the constants.
BytesPerSec read_bandwidth_GBps(const nlohmann::json& v, const std::string& path);
Time read_latency_us(const nlohmann::json& v, const std::string& path);

Topology topology_from_json(const nlohmann::json& j);
// Reads and parses a file; a missing file or malformed JSON is a ConfigError naming the file.
Topology load_topology(const std::string& path);

// The keys that override a preset's parameters, in JSON units: ranks, gpus_per_node, bandwidth_GBps,
// latency_us, intra_bandwidth_GBps, intra_latency_us, oversubscription, dims, device. Shared by
// topology files and experiment configs ("cluster").
std::vector<std::string> preset_override_keys();
// A preset's parameter (PresetParams' field name, "bandwidth") as its key there ("bandwidth_GBps").
std::string preset_override_key(const std::string& param);
// The ConfigError for a preset given a key it does not take: at `path`/<that key>, naming the keys the
// preset takes.
[[noreturn]] void fail_unsupported(const topo::UnsupportedPresetParam& e, const std::string& path);
// Reads those keys of `obj` (others are the caller's business), errors naming `path`/key.
topo::PresetParams preset_params_from_json(const nlohmann::json& obj, const std::string& path);
// The inverse: only the parameters that are set.
nlohmann::json preset_params_to_json(const topo::PresetParams& p);

}  // namespace twinbed
