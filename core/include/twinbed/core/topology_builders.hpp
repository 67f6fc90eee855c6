// Builders for the topologies people run, and named presets whose parameters flags may override.
//
// Link figures: `bandwidth` bytes/s per direction, `latency` per hop. Every builder validates its
// arguments (throws InvalidArgument naming the parameter) and returns a validated Topology.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "twinbed/core/error.hpp"
#include "twinbed/core/profile.hpp"
#include "twinbed/core/registry.hpp"
#include "twinbed/core/topology.hpp"

namespace twinbed::topo {

struct LinkSpec {
  BytesPerSec bandwidth = 0;
  Time latency;
};

// n ranks, each with one full-duplex link to one switch. One host.
Topology single_switch(int ranks, LinkSpec link, const DeviceSpec& device);

// One server: `gpus` GPUs on an NVSwitch (each GPU one full-duplex NVLink bundle to the switch).
Topology nvswitch_node(int gpus, LinkSpec nvlink, const DeviceSpec& device);

// Multi-node two-level fat-tree (leaf-spine). Each node has `gpus_per_node` GPUs on an NVSwitch and one
// NIC per GPU to a leaf switch; `nodes_per_leaf` nodes share a leaf. Leaf uplinks to the spines carry
// (downlink bandwidth sum) / oversubscription in total, spread over `spines` links.
struct FatTreeSpec {
  int nodes = 4;
  int gpus_per_node = 8;
  int nodes_per_leaf = 4;
  int spines = 4;
  double oversubscription = 1.0;  // leaf down:up bandwidth ratio, >= 1
  LinkSpec nvlink;                // GPU <-> NVSwitch
  LinkSpec nic;                   // GPU NIC <-> leaf, and the leaf-spine hops' latency
  DeviceSpec device;
};
Topology fat_tree(const FatTreeSpec& spec);

// Rail-optimised multi-node: NIC i of every node goes to rail switch i; rail switches join through
// spines. Same fields as the fat-tree (nodes_per_leaf unused).
Topology rail_optimized(const FatTreeSpec& spec);

// A bidirectional ring of devices with direct links (each rank its own host).
Topology ring(int ranks, LinkSpec link, const DeviceSpec& device);

// A 2-D or 3-D torus (wrap-around in each dimension; dims of size 2 get one link, not two).
Topology torus(const std::vector<int>& dims, LinkSpec link, const DeviceSpec& device);

// Multi-dimensional stack like ASTRA-sim's: rank = mixed-radix coordinate (dimension 0 fastest);
// dimension d connects ranks that differ only in coordinate d, as a "ring", a "switch" or a
// "fully_connected" set. Host = the dimension-0 group.
struct DimSpec {
  std::string kind;  // ring | switch | fully_connected
  int size = 2;
  LinkSpec link;
};
Topology multi_dim(const std::vector<DimSpec>& dims, const DeviceSpec& device);

// DGX clusters from ../shared/REFERENCE.md: 8 GPUs per node on NVSwitch, 8 NICs per node on a
// non-blocking rail-optimised fabric. A100: NVLink 300 GB/s, HDR 200 Gb/s; H100: NVLink 450 GB/s,
// NDR 400 Gb/s.
Topology dgx_a100_cluster(int nodes);
Topology dgx_h100_cluster(int nodes);

// This machine, from a measured profile (core/profile.hpp): `ranks` processes on one host joined by a
// switch, each with one duplex link whose latency per hop is half the profile's point-to-point latency
// (two hops make one message) and whose bandwidth is the profile's; devices run at the profile's
// measured rates (fp32 peak = the best measured GEMM rate, memory bandwidth, launch overhead).
// Throws InvalidArgument when the profile has no link figures (calibrated on one rank).
Topology this_machine(const MachineProfile& profile, int ranks);

// Parameters a preset may take; unset fields keep the preset's defaults. `bandwidth`/`latency` are
// the per-rank injection link (the scale-out NIC on multi-node presets); `intra_*` the NVLink tier.
struct PresetParams {
  std::optional<int> ranks;
  std::optional<int> gpus_per_node;
  std::optional<BytesPerSec> bandwidth;
  std::optional<Time> latency;
  std::optional<BytesPerSec> intra_bandwidth;
  std::optional<Time> intra_latency;
  std::optional<double> oversubscription;
  std::optional<std::vector<int>> dims;
  std::optional<std::string> device;  // device preset name
  bool operator==(const PresetParams&) const = default;
};

// What a preset throws when given a parameter it does not take (a silently ignored override would
// simulate another machine than the one asked for). `param` and `accepted` are PresetParams' field
// names ("bandwidth", "intra_latency"); each edge words them as its user wrote them (JSON keys, flags).
class UnsupportedPresetParam : public InvalidArgument {
 public:
  UnsupportedPresetParam(std::string preset, std::string param, std::vector<std::string> accepted);
  std::string preset, param;
  std::vector<std::string> accepted;
};

using PresetFactory = std::function<Topology(const PresetParams&)>;
// switch, nvswitch-node, fat-tree, rail, ring, torus, multi-dim, dgx-a100, dgx-h100.
Registry<PresetFactory> topology_presets();

}  // namespace twinbed::topo
