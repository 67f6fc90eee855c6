#include "twinbed/sim/nccl_model.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include "twinbed/core/error.hpp"

namespace twinbed::sim {

namespace {

// ---- NCCL's tables. Unless said otherwise: NVIDIA/nccl v2.20.3, src/graph/tuning.cc. ----
// Indices: [algorithm: Tree, Ring, NVLS][protocol: LL, LL128, Simple]; latencies in us.

// baseLat: the fixed cost of a collective of that kind (kernel launch and setup); NVLS has none of its
// own (its hardware latency below stands for everything).
constexpr double kBaseLat[kNcclAlgos][kNcclProtos] = {{6.8, 14.0, 0}, {6.6, 14.0, 8.4}, {0, 0, 0}};

// hwLat: the latency of one hop of the algorithm, per kind of hop.
enum Hw { kNvlink = 0, kPci = 1, kNet = 2 };
constexpr double kHwLat[3][kNcclAlgos][kNcclProtos] = {
    /* NVLink */ {{.6, 1.25, 28}, {.6, 1.9, 3.4}, {0, 0, 23}},
    /* PCI */ {{1.0, 1.9, 28}, {1.0, 2.5, 5.7}, {0, 0, 0}},
    /* NET */ {{5.0, 8.5, 28}, {2.7, 4.0, 14.0}, {0, 0, 18}}};

// Per-channel (or, for LL, total) bandwidth caps, measured by NVIDIA per GPU generation, indexed by
// nodes: 1, 2, more. llMaxBws: single node by GPU generation; across nodes by CPU vendor, where we
// assume Intel (the first row).
constexpr double kLlMaxBwIntel[3] = {39.0, 39.0, 20.4};
constexpr double kLlMaxBw[2][3] = {/* Ampere */ {87.7, 22.5, 19.0}, /* Hopper */ {87.7, 22.5, 19.0}};
constexpr double kPerChMaxRingLL128Bw[2][3] = {{20.0, 20.0, 20.0}, {36.7, 36.7, 36.7}};
constexpr double kPerChMaxTreeLL128Bw[2][3] = {{20.0, 20.0, 20.0}, {36.7, 36.7, 29.0}};
constexpr double kPerChMaxTreeBw[2][3] = {{24.0, 23.6, 17.8}, {38.7, 41.4, 36.0}};

// The cost of posting a network operation (getNetOverhead: 1 us on Intel CPUs), paid on every ring
// step once the ring leaves the node, three times for Simple.
constexpr double kNetOverheadUs = 1.0;

// treeCorrectionFactor: NCCL's correction of tree bandwidth for medium sizes, by log2(bytes / 64).
constexpr double kTreeCorrection[kNcclProtos][23] = {
    {1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5, .4, .4, .5, .6, .7, .8, .9, 1.0, 1.0, 1.0, 1.0},
    {1.0, 1.0, 1.0, 1.0, 1.0, .9, .8, .8, .8, .7, .6, .6, .6, .6, .6, .6, .8, .9, .9, .9, .9, 1.0, 1.0},
    {.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5, .5, .5, .5, .6, .7, .8, .7, .7, .8, .9, .9}};

// ncclTopoGetAlgoTime: a multi-node ring all-reduce with Simple pays 1.4x its latency (Ampere and
// later) once each rank's share of a channel reaches 64 bytes ("plateau effect of ring").
constexpr double kRingPlateau = 1.4;

// ---- Link figures NCCL assumes: src/graph/topo.h, v2.20.3. ----
// Per NVLink link and direction: SM80_NVLINK_BW 20.0, SM90_NVLINK_BW 20.6 GB/s — NCCL's usable rate
// of a link whose line rate is 25 GB/s per direction (NVLink 3 and 4: 50 GB/s bidirectional per link;
// A100 12 links = 600 GB/s, H100 18 links = 900 GB/s, NVIDIA datasheets). The topology gives the line
// rate; NCCL's figure is that times 20.0/25 (A100) or 20.6/25 (H100, H200).
constexpr double kNvlinkLineGBps = 25.0;
constexpr double kNcclNvlinkGBps[2] = {20.0, 20.6};

// ---- Channel search speeds: src/graph/search.cc, v2.20.3 (speedArrayIntra/Inter, sm90*). ----
const std::vector<double> kSpeedIntra = {40.0, 30.0, 20.0, 18.0, 15.0, 12.0, 10.0, 9.0, 7.0, 6.0, 5.0, 4.0, 3.0};
const std::vector<double> kSpeedInter = {48.0, 30.0, 28.0, 24.0, 20.0, 18.0, 15.0, 12.0, 10.0, 9.0,
                                         7.0,  6.0,  5.0,  4.0,  3.0,  2.4,  1.2,  0.24, 0.12};
const std::vector<double> kSm90SpeedIntra = {60.0, 50.0, 40.0, 30.0, 24.0, 20.0, 15.0, 12.0, 6.0, 3.0};
const std::vector<double> kSm90SpeedInter = {48.0, 45.0, 42.0, 40.0, 30.0, 24.0, 22.0, 20.0, 17.5,
                                             15.0, 12.0, 6.0,  3.0,  2.4,  1.2,  0.24, 0.12};

int idx(NcclAlgo a) { return static_cast<int>(a); }
int idx(NcclProto p) { return static_cast<int>(p); }
int arch_index(GpuArch a) { return a == GpuArch::Hopper ? 1 : 0; }
int nodes_index(int nodes) { return nodes <= 2 ? nodes - 1 : 2; }

int log2i(double x) {
  int r = 0;
  while (x >= 2) {
    x /= 2;
    ++r;
  }
  return r;
}

}  // namespace

std::string to_string(NcclAlgo a) {
  switch (a) {
    case NcclAlgo::Tree: return "tree";
    case NcclAlgo::Ring: return "ring";
    case NcclAlgo::Nvls: return "nvls";
  }
  return "?";
}

std::string to_string(NcclProto p) {
  switch (p) {
    case NcclProto::LL: return "LL";
    case NcclProto::LL128: return "LL128";
    case NcclProto::Simple: return "Simple";
  }
  return "?";
}

std::string NcclChoice::name() const { return to_string(algo) + "/" + to_string(proto); }

std::optional<NcclFabric> nccl_fabric(const Topology& topology, const std::vector<int>& ranks) {
  if (ranks.empty()) return std::nullopt;
  const DeviceSpec& device = topology.device(ranks.front());
  NcclFabric f;
  if (device.name == "a100") {
    f.arch = GpuArch::Ampere;
  } else if (device.name == "h100" || device.name == "h200") {
    f.arch = GpuArch::Hopper;
  } else {
    return std::nullopt;
  }
  std::vector<int> hosts;
  for (int r : ranks) {
    if (!(topology.device(r) == device)) return std::nullopt;
    hosts.push_back(topology.host_of_rank(r));
  }
  std::set<int> distinct(hosts.begin(), hosts.end());
  f.ranks = static_cast<int>(ranks.size());
  f.nodes = static_cast<int>(distinct.size());
  if (f.ranks % f.nodes != 0) return std::nullopt;
  for (int h : distinct) {
    if (std::count(hosts.begin(), hosts.end(), h) != f.ranks / f.nodes) return std::nullopt;
  }
  Router router(topology);
  const int first = ranks.front();
  // The NVLink tier: between two ranks of the first rank's host, else the rank's widest link.
  double nvlink_line = 0;
  for (int r : ranks) {
    if (r == first || topology.host_of_rank(r) != topology.host_of_rank(first)) continue;
    const Path path = router.route(first, r);
    nvlink_line = topology.path_bandwidth(path);
    f.nvswitch = path.size() == 2 && topology.node(topology.link(path[0]).dst).kind == Node::Kind::Switch;
    break;
  }
  const NodeId self = topology.node_of_rank(first);
  if (nvlink_line == 0) {
    for (LinkId l : topology.out_links(self)) nvlink_line = std::max(nvlink_line, topology.link(l).bandwidth);
  }
  // NICs: the node has a link other than its NVLink tier; the NIC's rate is the path to another host.
  for (LinkId l : topology.out_links(self)) f.has_nics |= topology.link(l).bandwidth < nvlink_line;
  for (int r : ranks) {
    if (topology.host_of_rank(r) == topology.host_of_rank(first)) continue;
    f.nic_GBps = topology.path_bandwidth(router.route(first, r)) / GBps;
    f.has_nics = true;
    break;
  }
  f.nvlink_GBps = nvlink_line / GBps / kNvlinkLineGBps * kNcclNvlinkGBps[arch_index(f.arch)];
  return f;
}

NcclGraph nccl_graph(const NcclFabric& f, NcclAlgo algo) {
  // NCCL's search (search.cc, ncclTopoCompute) tries the speeds of its list from the fastest, each
  // channel taking that bandwidth out of every GPU's links, and keeps the first that fits; then it
  // doubles the channels at half the speed where the speed is high (ncclTopoDupChannels). We take the
  // solution it settles on in the symmetric case: the fastest listed speed s that the link allows,
  // and as many channels at s as the link holds. Inside a node the link is the GPU's NVLink; across
  // nodes, a channel per NIC (one NIC per GPU) at the NIC's speed.
  const bool hopper = f.arch == GpuArch::Hopper;
  const auto& speeds = f.has_nics ? (hopper ? kSm90SpeedInter : kSpeedInter) : (hopper ? kSm90SpeedIntra : kSpeedIntra);
  const int ppn = f.ranks / f.nodes;
  NcclGraph g;
  if (algo == NcclAlgo::Nvls) {
    // NVLS: Hopper NVSwitch nodes only, one channel per GPU (the NVLS heads), inside one node (across
    // nodes it needs SHARP switches, NVLSTree: not modelled). Non-ring patterns may use n/(n-1) of the
    // link (search.cc: totalBw *= ngpus/(ngpus-1)).
    if (!hopper || !f.nvswitch || !f.nvlink || f.nodes != 1 || f.ranks < 2) return g;
    const double total = f.nvlink_GBps * f.ranks / (f.ranks - 1);
    for (double s : speeds) {
      if (s * f.ranks <= total) {
        g = {f.ranks, s, s};
        break;
      }
    }
    return g;
  }
  double per_channel_limit = f.nvlink_GBps;  // what one channel may take (maxBw)
  double total = f.nvlink_GBps;              // what all channels together may take (totalBw)
  if (algo == NcclAlgo::Tree && f.ranks > 1) total *= static_cast<double>(ppn) / std::max(ppn - 1, 1);
  if (f.nodes > 1) {
    per_channel_limit = std::min(per_channel_limit, f.nic_GBps);
    total = std::min(total, f.nic_GBps * ppn);
  }
  double s = speeds.back();
  for (double v : speeds) {
    if (v <= per_channel_limit && v <= total) {
      s = v;
      break;
    }
  }
  int channels = std::max(1, static_cast<int>(std::floor(total / s + 1e-9)));
  if (f.nodes > 1) channels = std::min(channels, ppn * std::max(1, static_cast<int>(std::floor(f.nic_GBps / s + 1e-9))));
  channels = std::min(channels, 16);  // MAXCHANNELS/2 before duplication (NCCL 2.20: 32 channels)
  // ncclTopoDupChannels: double the channels at half the speed, unless the speed is below 25 GB/s,
  // or below 50 GB/s with more than 4 channels on Hopper.
  if (!(s < 25.0) && !(hopper && s < 50.0 && channels > 4)) {
    channels *= 2;
    s /= 2;
  }
  g = {channels, s, s};
  return g;
}

NcclTable nccl_table(CollectiveOp op, const NcclFabric& f) {
  if (op == CollectiveOp::AllToAll) {
    throw InvalidArgument("NCCL has no tuned all-to-all (it runs point-to-point sends)");
  }
  NcclTable t;
  const int n = f.ranks;
  const int nodes = f.nodes;
  const int ppn = n / nodes;
  const int ai = arch_index(f.arch);
  const int ni = nodes_index(nodes);
  const bool ar = op == CollectiveOp::AllReduce;
  const bool rs_ag = op == CollectiveOp::ReduceScatter || op == CollectiveOp::AllGather;
  const bool root_op = op == CollectiveOp::Broadcast || op == CollectiveOp::Reduce;
  const int nsteps = ar ? 2 * (n - 1) : rs_ag ? n - 1 : n;
  const int inter_steps = ar ? (nodes > 1 ? 2 * nodes : 0) : rs_ag ? nodes - 1 : nodes;
  const double ll_max = nodes == 1 ? kLlMaxBw[ai][ni] : kLlMaxBwIntel[ni];
  const Hw intra_hw = f.nvlink ? kNvlink : kPci;
  const Hw hw = nodes == 1 ? intra_hw : kNet;

  for (NcclAlgo a : {NcclAlgo::Tree, NcclAlgo::Ring, NcclAlgo::Nvls}) {
    // Which algorithms serve which op: tree only all-reduce; NVLS all-reduce, reduce-scatter, all-gather.
    if (a == NcclAlgo::Tree && !ar) continue;
    if (a == NcclAlgo::Nvls && root_op) continue;
    const NcclGraph g = nccl_graph(f, a);
    t.channels[idx(a)] = g.channels;
    if (g.channels == 0) continue;
    for (NcclProto p : {NcclProto::LL, NcclProto::LL128, NcclProto::Simple}) {
      if (a == NcclAlgo::Nvls && p != NcclProto::Simple) continue;  // NVLS runs Simple only
      // LL128 is on by default only over NVLink (Volta, Ampere, Hopper).
      if (p == NcclProto::LL128 && !f.nvlink) continue;
      double bw = nodes <= 2 ? g.bw_intra : g.bw_inter;
      if (a == NcclAlgo::Nvls) bw = std::min(g.bw_intra, g.bw_inter);
      double bus = g.channels * bw;
      // The protocol's efficiency and NVIDIA's measured caps.
      if (a == NcclAlgo::Ring && p == NcclProto::LL) {
        bus = std::min(ll_max, bus * ((nodes > 1 || ar || op == CollectiveOp::Reduce) ? 1.0 / 4.0 : 1.0 / 3.0));
      }
      if (a == NcclAlgo::Ring && p == NcclProto::LL128) {
        bus = std::min(bus * (ppn < 2 ? 0.7 : 0.92), g.channels * kPerChMaxRingLL128Bw[ai][ni]);
      }
      if (a == NcclAlgo::Tree) bus = std::min(bus * 0.92, g.channels * kPerChMaxTreeBw[ai][ni]);
      if (a == NcclAlgo::Tree && p == NcclProto::LL) bus = std::min(bus / 3.8, ll_max);
      if (a == NcclAlgo::Tree && p == NcclProto::LL128) {
        bus = std::min(bus * (nodes == 1 ? 7.0 / 9.0 : 120.0 / 128.0), g.channels * kPerChMaxTreeLL128Bw[ai][ni]);
      }
      // Bus bandwidth to algorithm bandwidth.
      const double ratio = a == NcclAlgo::Ring ? static_cast<double>(n) / nsteps : a == NcclAlgo::Nvls ? 5.0 / 6.0 : 0.5;
      t.bandwidth_GBps[idx(a)][idx(p)] = bus * ratio;

      // Latency: the base, then the protocol's latency per hop of the algorithm.
      double lat = kBaseLat[idx(a)][idx(p)];
      double intra = kHwLat[intra_hw][idx(a)][idx(p)];
      const double inter = kHwLat[kNet][idx(a)][idx(p)];
      if (a == NcclAlgo::Ring) {
        if (root_op) {
          lat += kHwLat[hw][idx(a)][idx(p)];  // one pipelined pass (graphs with the same channels)
        } else {
          const double overhead = nodes > 1 ? kNetOverheadUs * (p == NcclProto::Simple ? 3 : 1) : 0;
          intra = std::max(intra, overhead);
          lat += (nsteps - inter_steps) * intra + inter_steps * inter;
        }
      } else if (a == NcclAlgo::Tree) {
        lat += 2 * ((ppn - 1) * intra + log2i(nodes) * inter);
      } else {
        lat = intra + (nodes > 1 ? inter : 0);
      }
      t.latency_us[idx(a)][idx(p)] = lat;
    }
  }
  return t;
}

std::optional<Time> nccl_time(const NcclTable& t, const NcclFabric& f, CollectiveOp op, Bytes bytes, NcclAlgo a,
                              NcclProto p) {
  double bw = t.bandwidth_GBps[idx(a)][idx(p)];
  double lat = t.latency_us[idx(a)][idx(p)];
  if (bw <= 0) return std::nullopt;
  const int log_size = log2i(static_cast<double>(bytes >> 6));
  if (a == NcclAlgo::Tree && log_size < 23) bw *= kTreeCorrection[idx(p)][log_size];
  const int channels = t.channels[idx(a)];
  if (a == NcclAlgo::Ring && p == NcclProto::Simple && f.nodes > 1 && op == CollectiveOp::AllReduce &&
      static_cast<double>(bytes) / (static_cast<double>(channels) * f.ranks) >= 64) {
    lat *= kRingPlateau;
  }
  // us + bytes / (1e3 B/us per GB/s)
  return Time::us(lat + static_cast<double>(bytes) / (1000.0 * bw));
}

NcclChoice nccl_choose(const CollectiveRequest& request, const NcclFabric& fabric) {
  NcclChoice best;
  if (request.ranks <= 1) return best;
  const NcclTable t = nccl_table(request.op, fabric);
  bool found = false;
  for (NcclAlgo a : {NcclAlgo::Tree, NcclAlgo::Ring, NcclAlgo::Nvls}) {
    for (NcclProto p : {NcclProto::LL, NcclProto::LL128, NcclProto::Simple}) {
      const auto time = nccl_time(t, fabric, request.op, request.bytes, a, p);
      if (!time || (found && !(*time < best.time))) continue;
      best = {a, p, t.channels[idx(a)], *time};
      found = true;
    }
  }
  if (!found) throw InvalidArgument("NCCL's model has no algorithm for op '" + to_string(request.op) + "'");
  return best;
}

}  // namespace twinbed::sim
