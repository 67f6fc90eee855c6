// --topology and the flags that override a preset's parameters, shared by every subcommand that
// needs a cluster.
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "twinbed/core/topology.hpp"

namespace twinbed::cli {

struct TopologyOptions {
  std::string topology = "switch";  // preset name or JSON file
  std::optional<int> ranks;
  std::optional<int> gpus_per_node;
  std::optional<double> bandwidth_GBps;
  std::optional<double> latency_us;
  std::optional<double> intra_bandwidth_GBps;
  std::optional<double> intra_latency_us;
  std::optional<double> oversubscription;
  std::optional<std::string> dims;  // "4x4x2"
  std::optional<std::string> device;
  std::optional<std::string> profile;  // a calibrated profile: simulate this machine

  void add_to(CLI::App& app);
  // A preset with the flags applied, a topology file (then only --ranks may be given, and must
  // match), or this machine from --profile (--ranks, default the profile's rank count when above 1, else 2). Throws ConfigError naming
  // the flag, UnknownName listing presets.
  Topology build() const;
};

}  // namespace twinbed::cli
