// Topologies from JSON, strictly: unknown keys, wrong types and out-of-range values are ConfigErrors
// naming the JSON path. Units are in the key names (bandwidth_GBps, latency_us). Format: README.md,
// section "Topology files".
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "twinbed/core/topology.hpp"

namespace twinbed {

Topology topology_from_json(const nlohmann::json& j);
// Reads and parses a file; a missing file or malformed JSON is a ConfigError naming the file.
Topology load_topology(const std::string& path);

}  // namespace twinbed
