#include "twinbed/core/topology_builders.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <utility>

#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"

namespace twinbed::topo {

namespace {

// Upper bound on ranks for every builder: far above any cluster we model, low enough that node and
// link counts stay in `int` and a typo (an extra zero or two) fails fast instead of exhausting memory.
constexpr std::int64_t kMaxRanks = 1 << 20;

// Link figures of the DGX presets (../shared/REFERENCE.md): NVLink per GPU per direction, 300 GB/s
// (A100, NVLink 3) and 450 GB/s (H100, NVLink 4); one NIC per GPU, HDR 200 Gb/s = 25e9 bytes/s and
// NDR 400 Gb/s = 50e9 bytes/s.
constexpr BytesPerSec kNvlinkA100 = 300e9;
constexpr BytesPerSec kNvlinkH100 = 450e9;
constexpr BytesPerSec kNicHdr = 25e9;
constexpr BytesPerSec kNicNdr = 50e9;
// Latencies are assumptions, not datasheet figures. A GPU <-> NVSwitch hop is taken as 0.5 us, so a
// GPU-to-GPU NVLink transfer costs ~1 us, the order of small-message peer-to-peer latency measured
// through NVSwitch. A scale-out hop (GPU -> NIC -> switch, or switch -> switch) is taken as 1 us, which
// puts a same-rail RDMA message at ~2 us and a cross-spine one at ~4 us, bracketing reported
// GPUDirect RDMA small-message latencies over InfiniBand.
constexpr Time kNvlinkHop = Time::us(0.5);
constexpr Time kNicHop = Time::us(1);
// Direct-link presets (switch, ring, torus, multi-dim's outer dims): a generic 100 GB/s, 1 us link.
constexpr BytesPerSec kGenericBandwidth = 100e9;
constexpr Time kGenericLatency = Time::us(1);

std::string num(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}
std::string gbps(BytesPerSec bw) { return num(bw / GBps) + " GB/s"; }
std::string usec(Time t) { return num(t.microseconds()) + " us"; }
std::string link_text(const LinkSpec& l) { return gbps(l.bandwidth) + ", " + usec(l.latency); }

[[noreturn]] void bad(const std::string& where, const std::string& param, const std::string& range,
                      const std::string& got) {
  throw InvalidArgument(where + ": " + param + " must be " + range + ", got " + got);
}

void check_count(const std::string& where, const std::string& param, std::int64_t v, std::int64_t min = 1) {
  if (v < min || v > kMaxRanks) {
    bad(where, param, "in " + std::to_string(min) + ".." + std::to_string(kMaxRanks), std::to_string(v));
  }
}

void check_bandwidth(const std::string& where, const std::string& param, BytesPerSec bw) {
  if (!(bw > 0) || !std::isfinite(bw)) bad(where, param, "finite and > 0 (bytes/s)", num(bw));
}
void check_latency(const std::string& where, const std::string& param, Time t) {
  if (t < Time{}) bad(where, param, ">= 0", usec(t));
}
void check_link(const std::string& where, const std::string& param, const LinkSpec& l) {
  check_bandwidth(where, param + ".bandwidth", l.bandwidth);
  check_latency(where, param + ".latency", l.latency);
}

std::string dims_text(const std::vector<int>& dims) {
  std::string s;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i) s += "x";
    s += std::to_string(dims[i]);
  }
  return s;
}

// Mixed-radix size of `dims`, checked against kMaxRanks (dims entries already >= 1).
std::int64_t product(const std::string& where, const std::string& param, const std::vector<int>& dims) {
  std::int64_t n = 1;
  for (int d : dims) {
    n *= d;
    if (n > kMaxRanks) bad(where, param, "sizes whose product is <= " + std::to_string(kMaxRanks), dims_text(dims));
  }
  return n;
}

// Bidirectional ring over `members`: 2 members share one duplex link, not two parallel ones.
void connect_ring(Topology& t, const std::vector<NodeId>& members, const LinkSpec& l) {
  const std::size_t k = members.size();
  if (k < 2) return;
  if (k == 2) {
    t.add_duplex(members[0], members[1], l.bandwidth, l.latency);
    return;
  }
  for (std::size_t i = 0; i < k; ++i) t.add_duplex(members[i], members[(i + 1) % k], l.bandwidth, l.latency);
}

// `nodes` servers of `gpus_per_node` GPUs, each server's GPUs on its own NVSwitch (a one-GPU server has
// none). Ranks are numbered server by server; host = server index. Returns the GPU node ids by rank.
std::vector<NodeId> add_servers(Topology& t, int nodes, int gpus_per_node, const LinkSpec& nvlink,
                                const DeviceSpec& device) {
  std::vector<NodeId> gpus;
  gpus.reserve(static_cast<std::size_t>(nodes) * static_cast<std::size_t>(gpus_per_node));
  for (int h = 0; h < nodes; ++h) {
    const std::string prefix = "node" + std::to_string(h) + "/";
    const std::size_t first = gpus.size();
    for (int g = 0; g < gpus_per_node; ++g) gpus.push_back(t.add_device(prefix + "gpu" + std::to_string(g), h, device));
    if (gpus_per_node > 1) {
      const NodeId nvswitch = t.add_switch(prefix + "nvswitch");
      for (std::size_t i = first; i < gpus.size(); ++i) t.add_duplex(gpus[i], nvswitch, nvlink.bandwidth, nvlink.latency);
    }
  }
  return gpus;
}

void check_fat_tree_spec(const std::string& where, const FatTreeSpec& s, bool uses_nodes_per_leaf) {
  check_count(where, "nodes", s.nodes);
  check_count(where, "gpus_per_node", s.gpus_per_node);
  check_count(where, "nodes * gpus_per_node", static_cast<std::int64_t>(s.nodes) * s.gpus_per_node);
  if (uses_nodes_per_leaf) {
    check_count(where, "nodes_per_leaf", s.nodes_per_leaf);
    if (s.nodes % s.nodes_per_leaf != 0) {
      bad(where, "nodes_per_leaf", "a divisor of nodes (" + std::to_string(s.nodes) + ")",
          std::to_string(s.nodes_per_leaf));
    }
  }
  check_count(where, "spines", s.spines);
  if (!(s.oversubscription >= 1) || !std::isfinite(s.oversubscription)) {
    bad(where, "oversubscription", "finite and >= 1 (leaf downlink:uplink bandwidth)", num(s.oversubscription));
  }
  check_link(where, "nvlink", s.nvlink);
  check_link(where, "nic", s.nic);
}

std::string oversub_text(double o) { return num(o) + ":1"; }

}  // namespace

namespace {

// `count` devices on one host, each with one duplex link to one switch: a switch and an NVSwitch
// server are the same graph. `where`, `count_name` and `link_name` name the caller's parameters in
// errors.
Topology star(const std::string& where, const std::string& count_name, int count, const std::string& link_name,
              LinkSpec link, const DeviceSpec& device, const std::string& switch_name) {
  check_count(where, count_name, count);
  check_link(where, link_name, link);
  Topology t;
  const NodeId sw = t.add_switch(switch_name);
  for (int r = 0; r < count; ++r) {
    t.add_duplex(t.add_device("gpu" + std::to_string(r), 0, device), sw, link.bandwidth, link.latency);
  }
  t.validate();
  return t;
}

}  // namespace

Topology single_switch(int ranks, LinkSpec link, const DeviceSpec& device) {
  Topology t = star("single_switch", "ranks", ranks, "link", link, device, "switch");
  t.description = "switch: " + std::to_string(ranks) + " ranks (" + device.name + "), " + link_text(link);
  return t;
}

Topology this_machine(const MachineProfile& profile, int ranks) {
  if (!profile.link) {
    throw InvalidArgument("this_machine: the profile has no link figures (calibrate with at least 2 ranks)");
  }
  DeviceSpec device;
  device.name = profile.device;
  for (const auto& [dtype, rate] : profile.gemm_rate) device.peak_fp32 = std::max(device.peak_fp32, rate);
  device.memory_bandwidth = profile.memory_bandwidth;
  device.launch_overhead = profile.launch_overhead;
  LinkSpec link{profile.link->bandwidth, Time::ps(profile.link->latency.picoseconds() / 2)};
  Topology t = single_switch(ranks, link, device);
  t.description = "this machine (" + std::string(profile.provenance ? profile.provenance->machine : "profile") +
                  "): " + std::to_string(ranks) + " ranks, " + link_text(link);
  return t;
}

Topology nvswitch_node(int gpus, LinkSpec nvlink, const DeviceSpec& device) {
  Topology t = star("nvswitch_node", "gpus", gpus, "nvlink", nvlink, device, "nvswitch");
  t.description = "nvswitch-node: " + std::to_string(gpus) + " GPUs (" + device.name + "), NVLink " + link_text(nvlink);
  return t;
}

Topology fat_tree(const FatTreeSpec& spec) {
  const std::string where = "fat_tree";
  check_fat_tree_spec(where, spec, true);
  Topology t;
  const std::vector<NodeId> gpus = add_servers(t, spec.nodes, spec.gpus_per_node, spec.nvlink, spec.device);
  const int leaves = spec.nodes / spec.nodes_per_leaf;
  const int gpus_per_leaf = spec.nodes_per_leaf * spec.gpus_per_node;
  std::vector<NodeId> leaf(static_cast<std::size_t>(leaves));
  for (int l = 0; l < leaves; ++l) leaf[static_cast<std::size_t>(l)] = t.add_switch("leaf" + std::to_string(l));
  for (std::size_t r = 0; r < gpus.size(); ++r) {
    t.add_duplex(gpus[r], leaf[r / static_cast<std::size_t>(gpus_per_leaf)], spec.nic.bandwidth, spec.nic.latency);
  }
  // Each leaf's uplink capacity is its downlink sum over the oversubscription, split evenly over one
  // link to every spine (so ECMP over the spines sees equal-cost, equal-width choices).
  const BytesPerSec uplink = gpus_per_leaf * spec.nic.bandwidth / spec.oversubscription / spec.spines;
  for (int s = 0; s < spec.spines; ++s) {
    const NodeId spine = t.add_switch("spine" + std::to_string(s));
    for (NodeId l : leaf) t.add_duplex(l, spine, uplink, spec.nic.latency);
  }
  t.description = "fat-tree: " + std::to_string(spec.nodes) + " nodes x " + std::to_string(spec.gpus_per_node) +
                  " GPUs (" + spec.device.name + "), " + std::to_string(leaves) + " leaves, " +
                  std::to_string(spec.spines) + " spines, " + oversub_text(spec.oversubscription) + "; NIC " +
                  link_text(spec.nic) + ", NVLink " + link_text(spec.nvlink);
  t.validate();
  return t;
}

Topology rail_optimized(const FatTreeSpec& spec) {
  const std::string where = "rail_optimized";
  check_fat_tree_spec(where, spec, false);
  Topology t;
  const std::vector<NodeId> gpus = add_servers(t, spec.nodes, spec.gpus_per_node, spec.nvlink, spec.device);
  const auto rails = static_cast<std::size_t>(spec.gpus_per_node);
  std::vector<NodeId> rail(rails);
  for (std::size_t i = 0; i < rails; ++i) rail[i] = t.add_switch("rail" + std::to_string(i));
  // NIC i of every server goes to rail switch i.
  for (std::size_t r = 0; r < gpus.size(); ++r) t.add_duplex(gpus[r], rail[r % rails], spec.nic.bandwidth, spec.nic.latency);
  const BytesPerSec uplink = spec.nodes * spec.nic.bandwidth / spec.oversubscription / spec.spines;
  for (int s = 0; s < spec.spines; ++s) {
    const NodeId spine = t.add_switch("spine" + std::to_string(s));
    for (NodeId r : rail) t.add_duplex(r, spine, uplink, spec.nic.latency);
  }
  t.description = "rail: " + std::to_string(spec.nodes) + " nodes x " + std::to_string(spec.gpus_per_node) + " GPUs (" +
                  spec.device.name + "), " + std::to_string(rails) + " rails, " + std::to_string(spec.spines) +
                  " spines, " + oversub_text(spec.oversubscription) + "; NIC " + link_text(spec.nic) + ", NVLink " +
                  link_text(spec.nvlink);
  t.validate();
  return t;
}

Topology ring(int ranks, LinkSpec link, const DeviceSpec& device) {
  const std::string where = "ring";
  check_count(where, "ranks", ranks);
  check_link(where, "link", link);
  Topology t;
  std::vector<NodeId> members;
  for (int r = 0; r < ranks; ++r) members.push_back(t.add_device("gpu" + std::to_string(r), r, device));
  connect_ring(t, members, link);
  t.description = "ring: " + std::to_string(ranks) + " ranks (" + device.name + "), " + link_text(link);
  t.validate();
  return t;
}

Topology torus(const std::vector<int>& dims, LinkSpec link, const DeviceSpec& device) {
  const std::string where = "torus";
  if (dims.size() != 2 && dims.size() != 3) {
    bad(where, "dims", "2 or 3 sizes", std::to_string(dims.size()) + " (" + dims_text(dims) + ")");
  }
  for (std::size_t d = 0; d < dims.size(); ++d) check_count(where, "dims[" + std::to_string(d) + "]", dims[d]);
  const int n = static_cast<int>(product(where, "dims", dims));
  check_link(where, "link", link);
  Topology t;
  std::vector<NodeId> node(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) node[static_cast<std::size_t>(r)] = t.add_device("gpu" + std::to_string(r), r, device);
  // Rank = mixed-radix coordinate, dimension 0 fastest; each line along dimension d is a ring.
  int stride = 1;
  for (int size : dims) {
    for (int r = 0; r < n; ++r) {
      if ((r / stride) % size != 0) continue;  // r starts a line
      std::vector<NodeId> line;
      for (int i = 0; i < size; ++i) line.push_back(node[static_cast<std::size_t>(r + i * stride)]);
      connect_ring(t, line, link);
    }
    stride *= size;
  }
  t.description = "torus: " + dims_text(dims) + " (" + device.name + "), " + link_text(link);
  t.validate();
  return t;
}

Topology multi_dim(const std::vector<DimSpec>& dims, const DeviceSpec& device) {
  const std::string where = "multi_dim";
  if (dims.empty()) bad(where, "dims", "at least one dimension", "none");
  std::vector<int> sizes;
  for (std::size_t d = 0; d < dims.size(); ++d) {
    const std::string param = "dims[" + std::to_string(d) + "]";
    const std::string& kind = dims[d].kind;
    if (kind != "ring" && kind != "switch" && kind != "fully_connected") {
      bad(where, param + ".kind", "one of ring, switch, fully_connected", "'" + kind + "'");
    }
    check_count(where, param + ".size", dims[d].size);
    check_link(where, param + ".link", dims[d].link);
    sizes.push_back(dims[d].size);
  }
  const int n = static_cast<int>(product(where, "dims", sizes));
  Topology t;
  std::vector<NodeId> node(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) {
    node[static_cast<std::size_t>(r)] = t.add_device("gpu" + std::to_string(r), r / sizes[0], device);
  }
  int stride = 1;
  std::string summary;
  for (std::size_t d = 0; d < dims.size(); ++d) {
    const DimSpec& dim = dims[d];
    int group = 0;
    for (int r = 0; r < n; ++r) {
      if ((r / stride) % dim.size != 0) continue;  // r is the first member of its group along d
      std::vector<NodeId> members;
      for (int i = 0; i < dim.size; ++i) members.push_back(node[static_cast<std::size_t>(r + i * stride)]);
      if (members.size() < 2) continue;
      if (dim.kind == "ring") {
        connect_ring(t, members, dim.link);
      } else if (dim.kind == "switch") {
        const NodeId sw = t.add_switch("dim" + std::to_string(d) + "/switch" + std::to_string(group));
        for (NodeId m : members) t.add_duplex(m, sw, dim.link.bandwidth, dim.link.latency);
      } else {
        for (std::size_t i = 0; i < members.size(); ++i) {
          for (std::size_t j = i + 1; j < members.size(); ++j) {
            t.add_duplex(members[i], members[j], dim.link.bandwidth, dim.link.latency);
          }
        }
      }
      ++group;
    }
    stride *= dim.size;
    if (d) summary += " x ";
    summary += dim.kind + "(" + std::to_string(dim.size) + ", " + link_text(dim.link) + ")";
  }
  t.description = "multi-dim: " + summary + " (" + device.name + ")";
  t.validate();
  return t;
}

namespace {

struct DgxFigures {
  const char* label;  // "dgx-a100"
  const char* device;
  BytesPerSec nvlink;
  BytesPerSec nic;
};

// DGX cluster: a non-blocking rail-optimised fabric, 8 GPUs per node. Four spines: the count only
// sets how many equal-cost paths cross-rail traffic has, since the uplink capacity is held equal to
// the downlink capacity.
constexpr int kDgxGpusPerNode = 8;
constexpr int kDgxSpines = 4;

Topology dgx(const DgxFigures& f, int nodes, int gpus_per_node, LinkSpec nic, LinkSpec nvlink, double oversubscription,
             const DeviceSpec& device) {
  check_count(f.label, "nodes", nodes);
  FatTreeSpec spec{.nodes = nodes,
                   .gpus_per_node = gpus_per_node,
                   .nodes_per_leaf = 1,
                   .spines = kDgxSpines,
                   .oversubscription = oversubscription,
                   .nvlink = nvlink,
                   .nic = nic,
                   .device = device};
  Topology t = rail_optimized(spec);
  t.description = std::string(f.label) + ": " + t.description.substr(t.description.find(": ") + 2);
  return t;
}

constexpr DgxFigures kDgxA100{"dgx-a100", "a100", kNvlinkA100, kNicHdr};
constexpr DgxFigures kDgxH100{"dgx-h100", "h100", kNvlinkH100, kNicNdr};

}  // namespace

Topology dgx_a100_cluster(int nodes) {
  return dgx(kDgxA100, nodes, kDgxGpusPerNode, {kNicHdr, kNicHop}, {kNvlinkA100, kNvlinkHop}, 1.0,
             device_preset("a100"));
}

Topology dgx_h100_cluster(int nodes) {
  return dgx(kDgxH100, nodes, kDgxGpusPerNode, {kNicNdr, kNicHop}, {kNvlinkH100, kNvlinkHop}, 1.0,
             device_preset("h100"));
}

// ---- presets ---------------------------------------------------------------------------------------

UnsupportedPresetParam::UnsupportedPresetParam(std::string preset_name, std::string param_name, std::vector<std::string> accepted_params)
    : InvalidArgument("topology preset '" + preset_name + "' does not take '" + param_name + "' (it takes: " + json_read::join(accepted_params) + ")"),
      preset(std::move(preset_name)),
      param(std::move(param_name)),
      accepted(std::move(accepted_params)) {}

namespace {

// The PresetParams fields a preset was given, by their parameter names.
std::vector<std::string> given(const PresetParams& p) {
  std::vector<std::string> out;
  if (p.ranks) out.push_back("ranks");
  if (p.gpus_per_node) out.push_back("gpus_per_node");
  if (p.bandwidth) out.push_back("bandwidth");
  if (p.latency) out.push_back("latency");
  if (p.intra_bandwidth) out.push_back("intra_bandwidth");
  if (p.intra_latency) out.push_back("intra_latency");
  if (p.oversubscription) out.push_back("oversubscription");
  if (p.dims) out.push_back("dims");
  if (p.device) out.push_back("device");
  return out;
}

// Validates what a preset was given: a parameter it does not take is an error (a silently ignored
// override would make an experiment other than the one asked for), and so is a value out of range.
void check_params(const std::string& preset, const PresetParams& p, const std::vector<std::string>& accepted) {
  const std::string where = "topology preset '" + preset + "'";
  for (const std::string& name : given(p)) {
    if (std::find(accepted.begin(), accepted.end(), name) == accepted.end()) throw UnsupportedPresetParam(preset, name, accepted);
  }
  if (p.ranks) check_count(where, "ranks", *p.ranks);
  if (p.gpus_per_node) check_count(where, "gpus_per_node", *p.gpus_per_node);
  if (p.bandwidth) check_bandwidth(where, "bandwidth", *p.bandwidth);
  if (p.latency) check_latency(where, "latency", *p.latency);
  if (p.intra_bandwidth) check_bandwidth(where, "intra_bandwidth", *p.intra_bandwidth);
  if (p.intra_latency) check_latency(where, "intra_latency", *p.intra_latency);
  if (p.oversubscription && (!(*p.oversubscription >= 1) || !std::isfinite(*p.oversubscription))) {
    bad(where, "oversubscription", "finite and >= 1", num(*p.oversubscription));
  }
  if (p.dims) {
    if (p.dims->empty()) bad(where, "dims", "a non-empty list of sizes", "[]");
    for (std::size_t d = 0; d < p.dims->size(); ++d) check_count(where, "dims[" + std::to_string(d) + "]", (*p.dims)[d]);
  }
}

DeviceSpec device_of(const PresetParams& p, const char* fallback) { return device_preset(p.device.value_or(fallback)); }

// Multi-node presets: ranks must fill whole nodes.
int nodes_of(const std::string& preset, int ranks, int gpus_per_node) {
  if (ranks % gpus_per_node != 0) {
    throw InvalidArgument("topology preset '" + preset + "': ranks must be a multiple of gpus_per_node (" +
                          std::to_string(gpus_per_node) + "), got " + std::to_string(ranks));
  }
  return ranks / gpus_per_node;
}

// Two names for one setting (nvswitch-node: its injection link is its NVLink): both given must agree.
template <class T>
std::optional<T> either(const std::string& preset, const std::optional<T>& a, const char* a_name,
                        const std::optional<T>& b, const char* b_name) {
  if (a && b && !(*a == *b)) {
    throw InvalidArgument("topology preset '" + preset + "': " + a_name + " and " + b_name +
                          " name the same setting here and must agree when both are given");
  }
  return a ? a : b;
}

constexpr int kDefaultNodes = 4;
constexpr int kDefaultGpusPerNode = 8;

Topology switch_preset(const PresetParams& p) {
  check_params("switch", p, {"ranks", "bandwidth", "latency", "device"});
  return single_switch(p.ranks.value_or(8), {p.bandwidth.value_or(kGenericBandwidth), p.latency.value_or(kGenericLatency)},
                       device_of(p, "h100"));
}

Topology nvswitch_preset(const PresetParams& p) {
  const std::string name = "nvswitch-node";
  check_params(name, p, {"ranks", "gpus_per_node", "bandwidth", "latency", "intra_bandwidth", "intra_latency", "device"});
  const int gpus = either(name, p.ranks, "ranks", p.gpus_per_node, "gpus_per_node").value_or(kDefaultGpusPerNode);
  const BytesPerSec bw = either(name, p.bandwidth, "bandwidth", p.intra_bandwidth, "intra_bandwidth").value_or(kNvlinkH100);
  const Time lat = either(name, p.latency, "latency", p.intra_latency, "intra_latency").value_or(kNvlinkHop);
  return nvswitch_node(gpus, {bw, lat}, device_of(p, "h100"));
}

FatTreeSpec multi_node_spec(const std::string& name, const PresetParams& p, BytesPerSec nic, BytesPerSec nvlink,
                            const char* device) {
  FatTreeSpec s;
  s.gpus_per_node = p.gpus_per_node.value_or(kDefaultGpusPerNode);
  s.nodes = nodes_of(name, p.ranks.value_or(kDefaultNodes * s.gpus_per_node), s.gpus_per_node);
  s.oversubscription = p.oversubscription.value_or(1.0);
  s.nic = {p.bandwidth.value_or(nic), p.latency.value_or(kNicHop)};
  s.nvlink = {p.intra_bandwidth.value_or(nvlink), p.intra_latency.value_or(kNvlinkHop)};
  s.device = device_of(p, device);
  return s;
}

std::vector<std::string> multi_node_params() {
  return {"ranks", "gpus_per_node", "bandwidth", "latency", "intra_bandwidth", "intra_latency", "oversubscription",
          "device"};
}

Topology fat_tree_preset(const PresetParams& p) {
  check_params("fat-tree", p, multi_node_params());
  FatTreeSpec s = multi_node_spec("fat-tree", p, kNicNdr, kNvlinkH100, "h100");
  s.nodes_per_leaf = s.nodes % 2 == 0 ? 2 : 1;
  s.spines = 2;
  return fat_tree(s);
}

Topology rail_preset(const PresetParams& p) {
  check_params("rail", p, multi_node_params());
  FatTreeSpec s = multi_node_spec("rail", p, kNicNdr, kNvlinkH100, "h100");
  s.spines = 4;
  return rail_optimized(s);
}

Topology ring_preset(const PresetParams& p) {
  check_params("ring", p, {"ranks", "bandwidth", "latency", "device"});
  return ring(p.ranks.value_or(8), {p.bandwidth.value_or(kGenericBandwidth), p.latency.value_or(kGenericLatency)},
              device_of(p, "h100"));
}

// The most nearly square a x b = n, a <= b (a prime n gives 1 x n, a ring).
std::vector<int> near_square(int n) {
  int a = static_cast<int>(std::sqrt(static_cast<double>(n)));
  while (a > 1 && n % a != 0) --a;
  return {a, n / a};
}

Topology torus_preset(const PresetParams& p) {
  const std::string name = "torus";
  check_params(name, p, {"ranks", "dims", "bandwidth", "latency", "device"});
  std::vector<int> dims = p.dims ? *p.dims : (p.ranks ? near_square(*p.ranks) : std::vector<int>{4, 4});
  if (p.ranks && p.dims && product(name, "dims", dims) != *p.ranks) {
    throw InvalidArgument("topology preset 'torus': ranks (" + std::to_string(*p.ranks) +
                          ") must equal the product of dims (" + dims_text(dims) + ")");
  }
  return torus(dims, {p.bandwidth.value_or(kGenericBandwidth), p.latency.value_or(kGenericLatency)},
               device_of(p, "h100"));
}

Topology multi_dim_preset(const PresetParams& p) {
  const std::string name = "multi-dim";
  check_params(name, p, {"ranks", "gpus_per_node", "dims", "bandwidth", "latency", "intra_bandwidth", "intra_latency",
                         "device"});
  std::vector<int> sizes;
  if (p.dims) {
    sizes = *p.dims;
    if (sizes.size() > 3) bad("topology preset 'multi-dim'", "dims", "1 to 3 sizes", dims_text(sizes));
    if (p.gpus_per_node && *p.gpus_per_node != sizes[0]) {
      throw InvalidArgument("topology preset 'multi-dim': gpus_per_node (" + std::to_string(*p.gpus_per_node) +
                            ") must equal dims[0] (" + std::to_string(sizes[0]) + ")");
    }
    if (p.ranks && product(name, "dims", sizes) != *p.ranks) {
      throw InvalidArgument("topology preset 'multi-dim': ranks (" + std::to_string(*p.ranks) +
                            ") must equal the product of dims (" + dims_text(sizes) + ")");
    }
  } else {
    const int gpn = p.gpus_per_node.value_or(kDefaultGpusPerNode);
    sizes = {gpn, nodes_of(name, p.ranks.value_or(kDefaultNodes * gpn), gpn)};
  }
  const LinkSpec intra{p.intra_bandwidth.value_or(kNvlinkH100), p.intra_latency.value_or(kNvlinkHop)};
  const LinkSpec inter{p.bandwidth.value_or(kNicNdr), p.latency.value_or(kNicHop)};
  std::vector<DimSpec> dims;
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    dims.push_back(d == 0 ? DimSpec{"switch", sizes[d], intra} : DimSpec{"ring", sizes[d], inter});
  }
  return multi_dim(dims, device_of(p, "h100"));
}

Topology dgx_preset(const DgxFigures& f, const PresetParams& p) {
  check_params(f.label, p, multi_node_params());
  const FatTreeSpec s = multi_node_spec(f.label, p, f.nic, f.nvlink, f.device);
  return dgx(f, s.nodes, s.gpus_per_node, s.nic, s.nvlink, s.oversubscription, s.device);
}

}  // namespace

Registry<PresetFactory> topology_presets() {
  Registry<PresetFactory> r("topology preset");
  r.add("switch", "ranks on one switch, a duplex link each; default 8 ranks, 100 GB/s, 1 us, h100", switch_preset);
  r.add("nvswitch-node", "one server, GPUs on an NVSwitch; default 8 GPUs, NVLink 450 GB/s, 0.5 us, h100",
        nvswitch_preset);
  r.add("fat-tree",
        "leaf-spine, a NIC per GPU to its leaf; default 4 nodes x 8 GPUs, 2 nodes per leaf (1 if the node count is "
        "odd), 2 spines, 1:1, NIC 50 GB/s 1 us, NVLink 450 GB/s 0.5 us, h100",
        fat_tree_preset);
  r.add("rail",
        "rail-optimised, NIC i of every node on rail switch i, 4 spines; default 4 nodes x 8 GPUs, 1:1, NIC 50 GB/s "
        "1 us, NVLink 450 GB/s 0.5 us, h100",
        rail_preset);
  r.add("ring", "bidirectional ring of direct links; default 8 ranks, 100 GB/s, 1 us, h100", ring_preset);
  r.add("torus",
        "2-D/3-D torus of direct links; default dims 4x4 (ranks alone: the most nearly square 2-D), 100 GB/s, 1 us, "
        "h100",
        torus_preset);
  r.add("multi-dim",
        "ASTRA-sim-like: dim 0 a switch (NVLink 450 GB/s, 0.5 us), further dims rings (50 GB/s, 1 us); default "
        "dims 8x4, h100",
        multi_dim_preset);
  r.add("dgx-a100",
        "DGX A100 cluster, rail-optimised non-blocking; default 4 nodes x 8 A100, NVLink 300 GB/s 0.5 us, HDR "
        "25 GB/s 1 us, 4 spines",
        [](const PresetParams& p) { return dgx_preset(kDgxA100, p); });
  r.add("dgx-h100",
        "DGX H100 cluster, rail-optimised non-blocking; default 4 nodes x 8 H100, NVLink 450 GB/s 0.5 us, NDR "
        "50 GB/s 1 us, 4 spines",
        [](const PresetParams& p) { return dgx_preset(kDgxH100, p); });
  return r;
}

}  // namespace twinbed::topo
