#include "twinbed/sim/nccl_model.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include "twinbed/core/error.hpp"

namespace twinbed::sim {

namespace {

// ---- NCCL's tables. Unless said otherwise: NVIDIA/nccl v2.20.3, src/graph/tuning.cc (b6475625). ----
// Indices: [algorithm: Tree, Ring, NVLS, NVLSTree, PAT][protocol: LL, LL128, Simple]; latencies in us.
// PAT came in 2.23 (see kPat* below); v2.20.3 has no such algorithm, and its rows here are zero.
//
// Later releases changed some of them; NcclFabric::nccl_minor says which release is modelled. Read
// from src/graph/tuning.cc of each release (NVIDIA/nccl 2.21.5 ab2b89c4, 2.22.3 178b6b75, 2.23.4
// a6979c9f, 2.24.3 6aae3792, 2.25.1 80f6bda4, 2.26.2 f44ac759; each release's makefiles/version.mk at
// the same commit):
//   2.21: NVLS's and NVLSTree's NVLink latency 25 (was 23); the ring's LL at half the bandwidth for
//         every op (was a quarter, or a third for a single node's all-gather and broadcast); the LL
//         cap of one Hopper node 141 GB/s (was Ampere's 87.7);
//   2.23: the tree's Simple hop 4.0 us on NVLink and PCI and 14 on the network (were 28: "the latency
//         a 256kB chunk" as 2.20 comments it, a figure 2.23 drops), its base latency 8.4 (was 0); the
//         ring's LL128 at 0.92 whatever the GPUs per node (was 0.7 at one per node); a ring
//         all-reduce's network steps 2 (nodes - 1) (were 2 nodes); at one GPU per node every network
//         hop at the tree's network latency ("With ppn=1 latencies are fully exposed"); NVLS's
//         all-gather and reduce-scatter bandwidth not converted by 5/6 (only the ring's is); PAT on;
//   2.24: PAT's bus bandwidth at 0.75 of the graph's (0.85 in 2.23);
//   2.28: NVLS's and NVLSTree's bandwidth priced on the NVLink side with the Hopper efficiency and
//         channels - 1 of the graph's channels (nvls_tuner_bw), their all-reduce's bus bandwidth
//         converted as the ring's (ranks / steps, was 5/6). Read from 2.28.3's src/graph/tuning.cc as a
//         public copy holds it (github.com/zhanglin496/nccl-2.28.3-1 @850a18f5, annotated, its code
//         NVIDIA's), and checked against the tables NCCL 2.29.2 printed for 2, 4 and 6 H100 GPUs (the
//         test TunerTablesMatchNccl229sOnAnH100Server): they match to their printed 0.1.
// 2.22, 2.25, 2.26 and 2.27 change none of the modelled terms; a patch release is taken as its minor's.
// 2.27 as NVIDIA/nccl stores its tuning.cc at 72d24320: the commit's src/init.cc has 2.27's window
// registration (NCCL_WIN_ENABLE, symmetricSupport), and its tuner has neither 2.28's tunerConstants
// nor its NVLS efficiency (NVLS still min(bwIntra, bwInter) and 5/6; tables as 2.26.2's). Its
// makefiles/version.mk is not stored at that commit, so the patch release is not known.

// baseLat: the fixed cost of a collective of that kind (kernel launch and setup); NVLS and NVLSTree
// have none of their own (their hardware latencies below stand for everything).
constexpr double kBaseLat[kNcclAlgos][kNcclProtos] = {{6.8, 14.0, 0}, {6.6, 14.0, 8.4}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
constexpr double kTreeSimpleBaseLat2_23 = 8.4;

// hwLat: the latency of one hop of the algorithm, per kind of hop.
enum Hw { kNvlink = 0, kPci = 1, kNet = 2 };
constexpr double kHwLat[3][kNcclAlgos][kNcclProtos] = {
    /* NVLink */ {{.6, 1.25, 28}, {.6, 1.9, 3.4}, {0, 0, 23}, {0, 0, 23}, {0, 0, 0}},
    /* PCI */ {{1.0, 1.9, 28}, {1.0, 2.5, 5.7}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}},
    /* NET */ {{5.0, 8.5, 28}, {2.7, 4.0, 14.0}, {0, 0, 18}, {0, 0, 14}, {0, 0, 0}}};
constexpr double kNvlsNvlinkLat2_21 = 25;
constexpr double kTreeSimpleHwLat2_23[3] = {4.0, 4.0, 14};

// PAT (Parallel Aggregated Trees, NCCL 2.23+): all-gather and reduce-scatter as a Bruck-style pattern
// of log2(n) rounds, Simple only, enabled by default (NCCL_PAT_ENABLE) only where every rank of the
// communicator is on its own node (ncclPatEnable: nNodes == nRanks) and the network is not offloaded.
// Source: src/graph/tuning.cc of 2.23.4 to 2.26.2 (above), whose terms NVIDIA/nccl's later
// src/tuning/pat.cc (12df1a11) keeps: PAT runs on the tree graph's channels (graphs[NCCL_ALGO_PAT] =
// treeGraph); the tuner takes its bus bandwidth at 0.85 (2.23) or 0.75 (2.24 on) of the graph's
// ("busBw *= .75") and does not convert it to algorithm bandwidth (for all-gather and reduce-scatter
// only the ring's is converted); and it prices its latency as
//     8 + log2i(nodes) x interLat / 3.5 + ranks x 2.8  us
// ("Still a linear part; hopefully we'll manage to remove it at some point"), with interLat the tree's
// network latency (at one rank per node every algorithm takes it, above).
constexpr double kPatBusEfficiency2_23 = 0.85;
constexpr double kPatBusEfficiency2_24 = 0.75;
constexpr double kPatBaseUs = 8.0;
constexpr double kPatLogLatencyDivisor = 3.5;
constexpr double kPatPerRankUs = 2.8;

// Per-channel (or, for LL, total) bandwidth caps, measured by NVIDIA per GPU generation, indexed by
// nodes: 1, 2, more. llMaxBws: single node by GPU generation; across nodes by CPU vendor, where we
// assume Intel (the first row).
constexpr double kLlMaxBwIntel[3] = {39.0, 39.0, 20.4};
constexpr double kLlMaxBw[2][3] = {/* Ampere */ {87.7, 22.5, 19.0}, /* Hopper */ {87.7, 22.5, 19.0}};
constexpr double kLlMaxBwHopperOneNode2_21 = 141.0;
constexpr double kPerChMaxRingLL128Bw[2][3] = {{20.0, 20.0, 20.0}, {36.7, 36.7, 36.7}};
constexpr double kPerChMaxTreeLL128Bw[2][3] = {{20.0, 20.0, 20.0}, {36.7, 36.7, 29.0}};
constexpr double kPerChMaxTreeBw[2][3] = {{24.0, 23.6, 17.8}, {38.7, 41.4, 36.0}};

// The cost of posting a network operation (getNetOverhead: 1 us on Intel CPUs), paid on every ring
// step once the ring leaves the node, three times for Simple.
constexpr double kNetOverheadUs = 1.0;

// The tree's algorithm bandwidth is half its bus bandwidth: every byte goes up the tree and down.
constexpr double kTreeAlgorithmShare = 0.5;

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

// ---- What NCCL's kernels run: sizes and counts. Unless said otherwise: NVIDIA/nccl v2.20.3. ----
// NCCL_STEPS (src/include/device.h): buffer slots per connection; each protocol's buffer is cut into
// this many steps.
constexpr int kNcclSteps = 8;
// Per-connection buffers (src/init.cc): LL: NCCL_LL_LINES_PER_THREAD (8) x NCCL_LL_MAX_NTHREADS (512)
// x NCCL_STEPS x 16-byte lines; LL128: NCCL_LL128_ELEMS_PER_THREAD (120) x NCCL_LL128_MAX_NTHREADS (640)
// x NCCL_STEPS x 8 bytes; Simple: DEFAULT_BUFFSIZE, 4 MiB.
constexpr Bytes kBuffSize[kNcclProtos] = {8 * 512 * kNcclSteps * 16, 120 * 640 * kNcclSteps * 8, Bytes{1} << 22};
// Ring all-reduce, all-gather and reduce-scatter with Simple send a chunk of CHUNKSTEPS = NCCL_STEPS/2
// steps in slices of SLICESTEPS = NCCL_STEPS/4 (src/include/collectives.h); broadcast and reduce one
// step; other algorithms and protocols one step (enqueue.cc computeColl).
constexpr int kRingChunkSteps = kNcclSteps / 2;
constexpr int kRingSliceSteps = kNcclSteps / 4;
// A slice of Simple is at least 1/32 of a nominal slice and a multiple of 16 elements
// (src/device/prims_simple.h: sliceSize = max(divUp(nelem, 16*SlicePerChunk)*16, sliceSize/32)).
// Elements are taken as 4 bytes (nccl-tests' default float); the alignment moves times by < 0.1%.
constexpr Bytes kSimpleSliceAlign = 16 * 4;
constexpr int kSimpleMinSliceDivisor = 32;
// LL lines carry 8 data bytes in 16; LL128 lines 120 in 128 (NCCL_LL128_DATAELEMS / LINEELEMS = 15/16).
constexpr Bytes kLlChunkDivisor = 2;
constexpr Bytes kLl128DataElems = 15, kLl128LineElems = 16;
// Channels: ncclTopoPostset (src/graph/connect.cc) doubles the graph's channels, up to MAXCHANNELS (32,
// src/include/device.h); the communicator's channels are those of its ring and tree graphs, the fewer
// (src/init.cc). NVLS runs NCCL_NVLS_NCHANNELS, 16 by default (src/transport/nvls.cc).
constexpr int kMaxChannels = 32;
constexpr int kNvlsChannels = 16;
// Channel trimming (src/enqueue.cc, topoGetAlgoInfo): an op keeps channels while
// bytes >= channels x threads x threadThreshold; threads per protocol NCCL_LL_MAX_NTHREADS 512,
// NCCL_LL128_MAX_NTHREADS 640, NCCL_SIMPLE_MAX_NTHREADS 512 (src/include/device.h); thresholds
// NCCL_LL_THREAD_THRESHOLD 8, NCCL_LL128_THREAD_THRESHOLD 8, NCCL_SIMPLE_THREAD_THRESHOLD 64
// (src/include/comm.h), the ring's LL one times the ranks (tuning.cc). NVLS keeps all its channels.
constexpr int kMaxThreads[kNcclProtos] = {512, 640, 512};
constexpr int kThreadThreshold[kNcclProtos] = {8, 8, 64};
// NVLS efficiency on Hopper (nvlsEfficiency, src/tuning/nvls.cc, NVIDIA/nccl 1fc949c5; also
// src/tuning/model.h at 53947894): the fraction of the graph's NVLink bandwidth NVLS reaches. Later
// NCCL prices NVLS's bus bandwidth as channels x bw x efficiency x (channels - 1) / channels, x 2 for
// all-reduce (the switch reduces, so each byte crosses a GPU's link once each way) or x (ppn-1)/ppn
// for all-gather and reduce-scatter. v2.20.3's tuner (5/6 and no efficiency, above) still decides.
constexpr double kNvlsEfficiencyHopper = 0.85;
// NVIDIA's efficiency multiplies the speed its search lists, 40 GB/s for each of a DGX H100's 8 NVLS
// channels (nccl_graph); the kernels move the link's share, 370.8 / 9 = 41.2 GB/s a channel
// (nvls_bus_GBps). The same price as a share of the link: 0.85 x 40 / 41.2 = 0.825, which keeps NVIDIA's
// figure on the node its constants describe.
constexpr double kNvlsReferenceSpeed = 40.0;
constexpr double kNvlsReferenceLinkShare = 18 * kNcclNvlinkGBps[1] / 9;  // a DGX H100 GPU: 18 links
constexpr double kNvlsLinkEfficiencyHopper = kNvlsEfficiencyHopper * kNvlsReferenceSpeed / kNvlsReferenceLinkShare;
// NVLSTree: the network side carries twice the graph's speed on two nodes (each node sends and receives
// its half of the tree at once), and NVIDIA caps a Hopper channel at perChMaxNVLSTreeBws {-, 57.7, 45.5}
// GB/s for 1, 2, more nodes (src/tuning/nvls.cc and cost_model.cc, NVIDIA/nccl 1fc949c5).
constexpr double kPerChMaxNvlsTreeBwHopper[3] = {0.0, 57.7, 45.5};
// The pipeline model's latency convention (src/tuning/pipeline_model/pipeline_model.cc, 623aa029): a
// hop costs half the tuner's per-hop latency (the tables hold round trips).
constexpr double kPipelineHopLatencyShare = 0.5;

// NCCL's loop order (tuning.cc), which its choice keeps on ties.
constexpr NcclAlgo kAllAlgos[] = {NcclAlgo::Tree, NcclAlgo::Ring, NcclAlgo::Nvls, NcclAlgo::NvlsTree, NcclAlgo::Pat};

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

// The modelled release's tables (see "Later releases" above).
bool from(const NcclFabric& f, int minor) { return f.nccl_minor >= minor; }

double base_lat(const NcclFabric& f, NcclAlgo a, NcclProto p) {
  if (a == NcclAlgo::Tree && p == NcclProto::Simple && from(f, 23)) return kTreeSimpleBaseLat2_23;
  return kBaseLat[idx(a)][idx(p)];
}

double hw_lat(const NcclFabric& f, Hw hw, NcclAlgo a, NcclProto p) {
  if (a == NcclAlgo::Tree && p == NcclProto::Simple && from(f, 23)) return kTreeSimpleHwLat2_23[hw];
  if ((a == NcclAlgo::Nvls || a == NcclAlgo::NvlsTree) && hw == kNvlink && from(f, 21)) return kNvlsNvlinkLat2_21;
  return kHwLat[hw][idx(a)][idx(p)];
}

// A network hop's latency: the algorithm's own, or from 2.23 with one GPU per node the tree's.
double net_lat(const NcclFabric& f, NcclAlgo a, NcclProto p) {
  return hw_lat(f, kNet, f.ranks == f.nodes && from(f, 23) ? NcclAlgo::Tree : a, p);
}

// LL's cap: a single node's by GPU generation, across nodes by CPU vendor (Intel assumed).
double ll_max_bw(const NcclFabric& f) {
  if (f.nodes > 1) return kLlMaxBwIntel[nodes_index(f.nodes)];
  if (f.arch == GpuArch::Hopper && from(f, 21)) return kLlMaxBwHopperOneNode2_21;
  return kLlMaxBw[arch_index(f.arch)][0];
}

bool pat_enabled(const NcclFabric& f) { return from(f, 23) && f.nodes == f.ranks; }

bool nvls_family(NcclAlgo a) { return a == NcclAlgo::Nvls || a == NcclAlgo::NvlsTree; }

// The per-channel bandwidth NCCL's tuner gives NVLS and NVLSTree (tuning.cc). Until 2.26 the graph's
// speed, the lesser of its two (NVLSTree's network side at half its speed beyond two nodes). From 2.28
// the NVLink side carries the Hopper efficiency and one channel fewer than the graph has, twice for
// all-reduce (the switch reduces: a byte crosses a GPU's link once each way) or (ppn - 1)/ppn for
// all-gather and reduce-scatter, against bwInter (NVLSTree's doubled on two nodes) and, for NVLSTree,
// NVIDIA's per-channel cap; a graph of fewer than 2 channels gets none.
double nvls_tuner_bw(const NcclFabric& f, CollectiveOp op, NcclAlgo a, const NcclGraph& g) {
  if (!from(f, 28)) return std::min(g.bw_intra, a == NcclAlgo::Nvls || f.nodes <= 2 ? g.bw_inter : g.bw_inter / 2);
  if (g.channels < 2) return 0;
  const double ppn = static_cast<double>(f.ranks) / f.nodes;
  const double intra = g.bw_intra * kNvlsEfficiencyHopper * (g.channels - 1) / g.channels *
                       (op == CollectiveOp::AllReduce ? 2.0 : (ppn - 1) / ppn);
  const double inter = g.bw_inter * (a == NcclAlgo::NvlsTree && f.nodes <= 2 ? 2 : 1);
  const double bw = std::min(intra, inter);
  return a == NcclAlgo::NvlsTree ? std::min(bw, kPerChMaxNvlsTreeBwHopper[nodes_index(f.nodes)]) : bw;
}

// The ring's bus bandwidth under protocol `p` when its channels move `raw` GB/s on the links
// (tuning.cc): LL at a quarter of it (a third for a single-node all-gather or broadcast; half from
// 2.21) up to the LL cap, LL128 at 0.92 (0.7 with one GPU per node before 2.23) up to the per-channel
// cap, Simple all of it.
double ring_bus(double raw, NcclProto p, CollectiveOp op, const NcclFabric& f, int channels) {
  const int ai = arch_index(f.arch);
  const int ni = nodes_index(f.nodes);
  if (p == NcclProto::LL) {
    const bool quarter = f.nodes > 1 || op == CollectiveOp::AllReduce || op == CollectiveOp::Reduce;
    const double share = from(f, 21) ? 1.0 / 2.0 : quarter ? 1.0 / 4.0 : 1.0 / 3.0;
    return std::min(ll_max_bw(f), raw * share);
  }
  if (p == NcclProto::LL128) {
    const bool one_per_node = f.ranks / f.nodes < 2 && !from(f, 23);
    return std::min(raw * (one_per_node ? 0.7 : 0.92), channels * kPerChMaxRingLL128Bw[ai][ni]);
  }
  return raw;
}

}  // namespace

std::string to_string(NcclAlgo a) {
  switch (a) {
    case NcclAlgo::Tree: return "tree";
    case NcclAlgo::Ring: return "ring";
    case NcclAlgo::Nvls: return "nvls";
    case NcclAlgo::NvlsTree: return "nvlstree";
    case NcclAlgo::Pat: return "pat";
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
  // NICs: only a communicator across hosts sees them, at the rate of the path to another host. NCCL
  // drops the NICs from the system of a communicator whose ranks are all on one host
  // (ncclTopoTrimSystem, src/graph/paths.cc, v2.20.3: "if (system->nodes[GPU].count == comm->nRanks)"
  // every NET node is removed), so it searches that one with its intra-node speed list.
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
  if (algo == NcclAlgo::Pat) algo = NcclAlgo::Tree;  // PAT runs on the tree's graph (see kPatBaseUs)
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
    // nodes it is NVLSTree, below). The search starts from the fastest speed whose channels fit
    // n/(n-1) of a GPU's link (search.cc: totalBw *= ngpus/(ngpus-1)), then checks the links
    // (ncclTopoSearchTryNvls): every channel takes its speed on each GPU's link to the switch, and
    // twice on its head GPU's, so a GPU's link carries (n + 1) x speed. The first speed that fits is
    // kept. (DGX H100, 18 x 20.6 = 370.8 GB/s: 9 x 40 fits, 9 x 50 does not: 8 channels at 40, as NCCL
    // logs it: "Pattern 5, crossNic 0, nChannels 8, bw 40.000000/..." in NVIDIA/nccl#1197.)
    // The search's second pass then raises bwInter alone, a listed speed at a time while it is below
    // twice bwIntra (search.cc, v2.20.3: "pattern == NCCL_TOPO_PATTERN_NVLS && ... tmpGraph.bwInter <
    // tmpGraph.bwIntra*2"); inside one node nothing books it, so it climbs to the first speed at or past
    // twice bwIntra, or the top of the list (NCCL logs 8 x 40/60 on DGX H100, NVIDIA/nccl#1197). Only
    // NCCL 2.28's tuner reads it (nccl_table).
    if (!hopper || !f.nvswitch || !f.nvlink || f.nodes != 1 || f.ranks < 2) return g;
    const double total = f.nvlink_GBps * f.ranks / (f.ranks - 1);
    for (auto it = speeds.begin(); it != speeds.end(); ++it) {
      const double s = *it;
      if (s * f.ranks <= total && s * (f.ranks + 1) <= f.nvlink_GBps + 1e-9) {
        double inter = s;
        while (it != speeds.begin() && inter < 2 * s) inter = *--it;
        g = {f.ranks, s, inter};
        break;
      }
    }
    return g;
  }
  if (algo == NcclAlgo::NvlsTree) {
    // NVLSTree: NVLS inside each node, a tree of the nodes across the network. The same NVLS search
    // with the network in it: a channel per head GPU, each head reaching the network through its own
    // NIC, so a channel's speed fits the NIC (network speed list) and, as inside a node, (ppn + 1) of
    // them fit a GPU's NVLink. DGX H100 (NICs 50 GB/s): 48, 45, 42 do not fit 370.8 nine times, 40
    // does. One channel per NIC: as many as the node's GPUs (one NIC per GPU here).
    if (!hopper || !f.nvswitch || !f.nvlink || !f.has_nics || f.nodes < 2 || ppn < 2) return g;
    for (double s : kSm90SpeedInter) {
      if (s <= f.nic_GBps && s * (ppn + 1) <= f.nvlink_GBps + 1e-9) {
        g = {ppn, s, s};
        break;
      }
    }
    return g;
  }
  double per_channel_limit = f.nvlink_GBps;  // what one channel may take (maxBw)
  double total = f.nvlink_GBps;              // what all channels together may take (totalBw)
  // Across nodes a ring enters a node at one GPU from the network and leaves it at another to the
  // network (search.cc books each hop's path: the last GPU's goes to its NIC, not over NVLink), and a
  // tree's chain in a node ends at a GPU that sends to no other; with the channels' exits spread over
  // the GPUs each GPU's NVLink carries (ppn - 1)/ppn of them: together they may take ppn/(ppn - 1) of
  // a link.
  if (f.nodes > 1) total *= static_cast<double>(ppn) / std::max(ppn - 1, 1);
  const double nvlink_total = total;  // the NVLink side's share, before the NICs cap it
  if (f.nodes > 1) {
    per_channel_limit = std::min(per_channel_limit, f.nic_GBps);
    total = std::min(total, f.nic_GBps * ppn);
  }
  const auto nic_channels = [&](double v) {  // a channel per NIC and per speed that fits it
    return ppn * std::max(1, static_cast<int>(std::floor(f.nic_GBps / v + 1e-9)));
  };
  if (algo == NcclAlgo::Tree) {
    // The tree takes exactly the ring's channels (init.cc: treeGraph->minChannels = maxChannels =
    // ringGraph->nChannels, the ring's after its duplication, so the tree's own cannot double them),
    // at the fastest listed speed at which they fit. Inside one node the search gives every channel the
    // same chain (sameChannels) and the middle GPUs' links carry all of them, except on two GPUs, where
    // it alternates 0->1 and 1->0 and each link carries half. NCCL 2.29.2's tuner tables on an H100
    // server bear this out: 12 channels a tree on 2, 4 and 6 GPUs, the 2-GPU one at 60 GB/s and the
    // others at 30 (see the test "TunerTablesMatchNccl229sOnAnH100Server").
    const int channels = nccl_graph(f, NcclAlgo::Ring).channels;
    const auto fits_node = [&](double v) {
      return (f.nodes == 1 && f.ranks == 2 ? (channels + 1) / 2 : channels) * v <= f.nvlink_GBps + 1e-9;
    };
    const auto fits = [&](double v) {
      if (f.nodes == 1) return fits_node(v);
      return v <= per_channel_limit && channels * v <= total + 1e-9 && channels <= nic_channels(v);
    };
    double s = speeds.back();
    for (double v : speeds) {
      if (fits(v)) {
        s = v;
        break;
      }
    }
    // The search's second pass ("See if we can increase bwIntra for trees (2 nodes or collnet)"): the
    // speed inside the node rises one listed speed at a time, while it is below twice the network's
    // and the same channels still fit the NVLink at it. The tuner prices a tree of one or two nodes at
    // that speed (tuning.cc: bwIntra where nNodes <= 2).
    double intra = s;
    for (auto it = std::find(speeds.begin(), speeds.end(), s); it != speeds.begin() && intra < 2 * s;) {
      const double faster = *--it;
      const bool fit =
          f.nodes == 1 ? fits_node(faster) : faster <= f.nvlink_GBps && channels * faster <= nvlink_total + 1e-9;
      if (!fit) break;
      intra = faster;
    }
    return {channels, intra, s};
  }
  // The ring: from the fastest listed speed a channel may take, as many channels as fit at each speed;
  // the search keeps the most bandwidth (channels x speed; a tie keeps the faster), stops once that
  // reaches a GPU's whole link ("Optimal solution, stop here") and goes down the list only while the
  // next speed is above 0.49 of the kept one ("Decrease bw until we find a solution").
  const auto ring_channels = [&](double v) {
    int c = static_cast<int>(std::floor(total / v + 1e-9));
    if (f.nodes > 1) c = std::min(c, nic_channels(v));
    return std::min(c, 16);  // MAXCHANNELS/2 before duplication (NCCL 2.20: 32 channels)
  };
  double s = 0;
  int channels = 0;
  for (auto it = speeds.begin(); it != speeds.end(); ++it) {
    if (*it > per_channel_limit || *it > total) continue;
    if (ring_channels(*it) * *it > channels * s) {
      channels = ring_channels(*it);
      s = *it;
    }
    const bool optimal = channels * s >= f.nvlink_GBps - 1e-9;
    if (optimal || std::next(it) == speeds.end() || (s > 0 && *std::next(it) / s <= 0.49)) break;
  }
  if (channels == 0) {  // slower than the slowest listed speed: one channel at it
    channels = 1;
    s = speeds.back();
  }
  // ncclTopoDupChannels: double the channels at half the speeds, unless the speed is below 25 GB/s, or
  // below 50 GB/s with more than 4 channels on Hopper.
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
  const int ar_inter_steps = nodes == 1 ? 0 : from(f, 23) ? 2 * (nodes - 1) : 2 * nodes;
  const int inter_steps = ar ? ar_inter_steps : rs_ag ? nodes - 1 : nodes;
  const double ll_max = ll_max_bw(f);
  const Hw intra_hw = f.nvlink ? kNvlink : kPci;
  const Hw hw = nodes == 1 ? intra_hw : kNet;

  for (NcclAlgo a : kAllAlgos) {
    // Which algorithms serve which op: tree and NVLSTree only all-reduce; NVLS all-reduce,
    // reduce-scatter, all-gather. NVLSTree is off on one node, NVLS across nodes (it would need
    // CollNet): nccl_graph gives them no channels there. PAT: all-gather and reduce-scatter where the
    // fabric enables it and every rank is on its own node.
    if ((a == NcclAlgo::Tree || a == NcclAlgo::NvlsTree) && !ar) continue;
    if (a == NcclAlgo::Nvls && root_op) continue;
    if (a == NcclAlgo::Pat && !(rs_ag && pat_enabled(f))) continue;
    const NcclGraph g = nccl_graph(f, a);
    t.channels[idx(a)] = g.channels;
    if (g.channels == 0) continue;
    for (NcclProto p : {NcclProto::LL, NcclProto::LL128, NcclProto::Simple}) {
      if ((a == NcclAlgo::Nvls || a == NcclAlgo::NvlsTree || a == NcclAlgo::Pat) && p != NcclProto::Simple) continue;  // Simple only
      // LL128 is on by default only over NVLink (Volta, Ampere, Hopper).
      if (p == NcclProto::LL128 && !f.nvlink) continue;
      double bw = nodes <= 2 ? g.bw_intra : g.bw_inter;
      if (nvls_family(a)) bw = nvls_tuner_bw(f, op, a, g);
      double bus = g.channels * bw;
      // The protocol's efficiency and NVIDIA's measured caps.
      if (a == NcclAlgo::Ring) bus = ring_bus(bus, p, op, f, g.channels);
      if (a == NcclAlgo::Tree) bus = std::min(bus * 0.92, g.channels * kPerChMaxTreeBw[ai][ni]);
      if (a == NcclAlgo::Tree && p == NcclProto::LL) bus = std::min(bus / 3.8, ll_max);
      if (a == NcclAlgo::Tree && p == NcclProto::LL128) {
        bus = std::min(bus * (nodes == 1 ? 7.0 / 9.0 : 120.0 / 128.0), g.channels * kPerChMaxTreeLL128Bw[ai][ni]);
      }
      if (a == NcclAlgo::Pat) {  // PAT: its own bandwidth and latency (kPat*), nothing converted
        t.bandwidth_GBps[idx(a)][idx(p)] = bus * (from(f, 24) ? kPatBusEfficiency2_24 : kPatBusEfficiency2_23);
        t.latency_us[idx(a)][idx(p)] = kPatBaseUs + log2i(nodes) * net_lat(f, a, p) / kPatLogLatencyDivisor + n * kPatPerRankUs;
        continue;
      }
      // Bus bandwidth to algorithm bandwidth (from 2.23 only the ring's all-gather and reduce-scatter;
      // NVLS's and NVLSTree's all-reduce at 5/6 until 2.28, then as the ring's).
      const double ring_ratio = static_cast<double>(n) / nsteps;
      const double ratio = a == NcclAlgo::Ring               ? ring_ratio
                           : rs_ag && from(f, 23)            ? 1.0
                           : nvls_family(a) && from(f, 28) ? ring_ratio
                           : nvls_family(a)                  ? 5.0 / 6.0
                                                             : kTreeAlgorithmShare;
      t.bandwidth_GBps[idx(a)][idx(p)] = bus * ratio;

      // Latency: the base, then the protocol's latency per hop of the algorithm.
      double lat = base_lat(f, a, p);
      double intra = hw_lat(f, intra_hw, a, p);
      const double inter = net_lat(f, a, p);
      if (a == NcclAlgo::Ring) {
        if (root_op) {
          lat += hw_lat(f, hw, a, p);  // one pipelined pass (graphs with the same channels)
        } else {
          const double overhead = nodes > 1 ? kNetOverheadUs * (p == NcclProto::Simple ? 3 : 1) : 0;
          intra = std::max(intra, overhead);
          lat += (nsteps - inter_steps) * intra + inter_steps * inter;
        }
      } else if (a == NcclAlgo::Tree) {
        lat += 2 * ((ppn - 1) * intra + log2i(nodes) * inter);
      } else if (a == NcclAlgo::Nvls) {
        lat = intra + (nodes > 1 ? inter : 0);
      } else {
        lat += intra + 2 * log2i(nodes) * inter;  // NVLS in the node, up and down the tree of nodes
      }
      t.latency_us[idx(a)][idx(p)] = lat;
    }
  }
  return t;
}

std::optional<Time> nccl_tuner_time(const NcclTable& t, const NcclFabric& f, CollectiveOp op, Bytes bytes, NcclAlgo a,
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

namespace {

// Broadcast and reduce run the ring as a pipelined chain from or to the root.
bool chain_op(CollectiveOp op) { return op == CollectiveOp::Broadcast || op == CollectiveOp::Reduce; }

// The steps of the ring for `op` (tuning.cc nsteps): 2(n-1) for all-reduce, n-1 for all-gather and
// reduce-scatter, n for the pipelined broadcast and reduce.
int ring_steps(CollectiveOp op, int n) {
  if (op == CollectiveOp::AllReduce) return 2 * (n - 1);
  if (op == CollectiveOp::AllGather || op == CollectiveOp::ReduceScatter) return n - 1;
  return n;
}

Bytes ceil_div(Bytes a, Bytes b) { return (a + b - 1) / b; }

// NVLS's and NVLSTree's bus bandwidth as later NCCL prices it (src/tuning/nvls.cc, 1fc949c5), GB/s;
// 0 without them. NVLS inside one node has no network to cap it; NVLSTree is the lesser of its
// NVLink side (nvls_link_bus_per_channel, per graph channel) and its network's. A channel's speed on
// NVLink is the link's share, not the speed the search listed: the search books each of the ppn
// channels ppn + 1 times on a head's link (nccl_graph), which is the traffic NVLS's kernel puts on
// every GPU's link — all its data out to the switch's reductions and all the results back, and its
// own head's 1/ppn share both ways (src/device/all_reduce.h @0e35f5d3, RunWorkElement<ncclFuncAllReduce,
// ..., NCCL_ALGO_NVLS, ...>:
// scatter into the heads' buffers, multimem reduce and store through the switch, gather; NVIDIA's S.
// Jeaugey, NVIDIA/nccl issue #1083, 2023-11-21: for size S on N GPUs NVLS's reduce-scatter must "Send S,
// Receive S/N" and its all-gather "Send S/N, Receive S", so the all-reduce, one then the other, sends and
// receives S + S/N) — and the kernels copy as fast as the link lets them, as the ring's do (nccl_time).
// So a channel moves link / (ppn + 1) at kNvlsLinkEfficiencyHopper, and NVLS's all-reduce in one node
// runs at 0.825 x link x n / (n + 1) of algorithm bandwidth: on 5, 6, 7 and 8 GPUs of an H100 node 255,
// 262, 268 and 272 GB/s, where NVIDIA/nccl issue #1455 measured "258" and "about 265, 270, and 273" (2-4
// GiB, NCCL_ALGO=NVLS) and the listed speeds (60, 50, 40, 40) would give 255, 255, 238 and 272.
double nvls_link_bus_per_channel(const NcclFabric& f, CollectiveOp op, const NcclGraph& g) {
  const int ppn = f.ranks / f.nodes;
  const double per_channel = f.nvlink_GBps / (ppn + 1) * kNvlsLinkEfficiencyHopper * (g.channels - 1) / g.channels;
  return per_channel * (op == CollectiveOp::AllReduce ? 2.0 : static_cast<double>(ppn - 1) / ppn);
}

double nvls_bus_GBps(const NcclFabric& f, CollectiveOp op, NcclAlgo a) {
  const NcclGraph g = nccl_graph(f, a);
  if (g.channels < 2) return 0;
  double per_channel = nvls_link_bus_per_channel(f, op, g);
  if (a == NcclAlgo::NvlsTree) {
    per_channel = std::min({per_channel, g.bw_inter * (f.nodes <= 2 ? 2 : 1),
                            kPerChMaxNvlsTreeBwHopper[nodes_index(f.nodes)]});
  }
  return per_channel * g.channels;
}

// A network hop's rate for one CTA of algorithm `a`, bytes/us: the NIC's speed as NCCL's search booked
// it for the graph's channels, split among the CTAs that run them, times the share of the protocol's
// lines that is data (NVIDIA's interBw = ncclTuningProtoBWFactor(proto) x bwInter / nCtasPerChannel in
// src/tuning/pipeline_model/tree.cc and nvls.cc @53947894; the factor, src/tuning/model.h: LL 1/2,
// LL128 120/128, Simple 1). The first slice pays its time at this rate on every network hop, whatever
// the protocol: the proxy hands a step to the network only once the GPU has posted all of it
// (src/transport/net.cc sendProxyProgress: a step goes out when the GPU's tail has passed it, or for LL
// when every line's flag is in), so the hop stores and forwards whole steps.
double network_hop_Bpus(const NcclFabric& f, NcclAlgo a, NcclProto p) {
  const NcclGraph g = nccl_graph(f, a);
  const double data_share = p == NcclProto::LL ? 1.0 / kLlChunkDivisor
                            : p == NcclProto::LL128 ? static_cast<double>(kLl128DataElems) / kLl128LineElems
                                                    : 1.0;
  return data_share * g.bw_inter * g.channels * 1000.0 / nccl_channels(f, a);
}

}  // namespace

int nccl_channels(const NcclFabric& f, NcclAlgo a) {
  if (nvls_family(a)) return nccl_graph(f, a).channels > 0 ? kNvlsChannels : 0;
  if (a == NcclAlgo::Pat && !pat_enabled(f)) return 0;
  const int graphs = std::min(nccl_graph(f, NcclAlgo::Ring).channels, nccl_graph(f, NcclAlgo::Tree).channels);
  return std::min(kMaxChannels, 2 * graphs);
}

NcclPipeline nccl_pipeline(const NcclFabric& f, CollectiveOp op, Bytes bytes, NcclAlgo a, NcclProto p) {
  if (a == NcclAlgo::Pat) throw InvalidArgument("nccl_pipeline: PAT's pipeline is not modelled");
  if (op == CollectiveOp::AllToAll) {
    throw InvalidArgument("NCCL has no tuned all-to-all (it runs point-to-point sends)");
  }
  const int comm_channels = nccl_channels(f, a);
  if (comm_channels == 0 || (nvls_family(a) && (p != NcclProto::Simple || chain_op(op))) ||
      ((a == NcclAlgo::NvlsTree || a == NcclAlgo::Tree) && op != CollectiveOp::AllReduce)) {
    throw InvalidArgument("nccl_pipeline: " + to_string(a) + "/" + to_string(p) + " is not available here");
  }
  NcclPipeline out;
  const Bytes step_size = kBuffSize[idx(p)] / kNcclSteps;
  if (nvls_family(a)) {
    // NVLS keeps its channels; a channel's data goes through in slices of one step (512 KiB), each
    // reduced into the switch and multicast back (pipeline_model/nvls.cc: 2 steps for all-reduce);
    // NVLSTree adds the tree of nodes, up and down: 2 log2(nodes) network steps. The kernels move
    // smaller chunks (src/enqueue.cc calcCollChunking: 128 KiB, down to 16 KiB as the op shrinks), each
    // synchronised with the switch and the peers at a cost no public source prices; NVIDIA's pipeline
    // model keeps the step, and so does this one. Tried: the kernels' chunks without a per-chunk cost
    // read 13-49 % fast on one 8x H100 node at 2-256 MiB (h100-8gpu-nvswitch), so that cost is real.
    out.channels = kNvlsChannels;
    out.channel_bytes = ceil_div(std::max<Bytes>(bytes, 1), out.channels);
    out.slice = std::min(step_size, out.channel_bytes);
    out.slices = ceil_div(out.channel_bytes, out.slice);
    out.steps = op == CollectiveOp::AllReduce ? 2 : 1;
    if (a == NcclAlgo::NvlsTree) out.steps += 2 * log2i(f.nodes);
    return out;
  }
  // Ring and tree. Trim the channels of small ops (enqueue.cc): drop one while the op is smaller than
  // channels x threads x threshold (the ring's LL threshold times the ranks).
  const int n = f.ranks;
  const bool ring = a == NcclAlgo::Ring;
  const Bytes threshold = static_cast<Bytes>(kThreadThreshold[idx(p)]) * (ring && p == NcclProto::LL ? n : 1);
  int nc = comm_channels;
  while (nc >= 2 && bytes < static_cast<Bytes>(nc) * kMaxThreads[idx(p)] * threshold) --nc;
  out.channels = nc;
  out.channel_bytes = ceil_div(std::max<Bytes>(bytes, 1), nc);
  // The chunk a step moves (enqueue.cc computeColl, as src/include/coll_sizes.h ncclGetChunkSize).
  const bool sliced = ring && p == NcclProto::Simple && !chain_op(op);
  Bytes chunk = step_size * (sliced ? kRingChunkSteps : 1);
  if (p == NcclProto::LL) chunk /= kLlChunkDivisor;
  if (p == NcclProto::LL128) chunk = chunk / kLl128LineElems * kLl128DataElems;
  if (!ring) {
    // Tree (pipeline_model/tree.cc, 623aa029): chains through the node's GPUs and a tree of the nodes,
    // up to reduce and down to broadcast: 2 (ppn - 1) NVLink or PCI steps and 2 log2(nodes) network
    // steps. A slice is one chunk (one step of the buffer: chunk and slice steps are 1 off the ring)
    // or the channel's data if less, and every tree link carries each slice twice, up and down, less
    // the ghost slice NCCL's model takes off.
    out.steps = 2 * (f.ranks / f.nodes - 1) + 2 * log2i(f.nodes);
    out.slice = std::min(chunk, out.channel_bytes);
    out.slices = std::max<std::int64_t>(2 * ceil_div(out.channel_bytes, out.slice) - 1, 1);
    return out;
  }
  out.steps = ring_steps(op, n);
  // The kernel loops over the channel's data a chunk per rank at a time (all_reduce.h runRing: loopSize
  // = nChannels x nranks x chunkSize); the last loop's chunk shrinks to the rank's share of what is left,
  // realChunkSize = min(chunkSize, divUp(size - gridOffset, nChannels*nranks)), so every loop sends the
  // same number of slices and the data exactly (nccl_time charges the bytes, not whole slices). A
  // channel smaller than a loop has one loop of the rank's share. Broadcast and reduce pass the channel's
  // data down the chain a chunk at a time.
  const Bytes per_step = std::min(chunk, chain_op(op) ? out.channel_bytes : ceil_div(out.channel_bytes, n));
  // Simple sends a chunk in CHUNKSTEPS/SLICESTEPS slices, none smaller than 1/32 of a nominal slice;
  // LL and LL128 send it whole.
  out.slice = per_step;
  if (p == NcclProto::Simple) {
    const int slices_per_chunk = sliced ? kRingChunkSteps / kRingSliceSteps : 1;
    const Bytes nominal = step_size * (sliced ? kRingSliceSteps : 1);
    const Bytes aligned = ceil_div(per_step, kSimpleSliceAlign * slices_per_chunk) * kSimpleSliceAlign;
    out.slice = std::min(per_step, std::max(aligned, nominal / kSimpleMinSliceDivisor));
  }
  // Every link carries one chunk on each of a loop's steps (pipeline_model/ring.cc: the busiest link
  // carries the channel's data steps/n times over); the pipelined broadcast and reduce pass each chunk
  // once down every link.
  const std::int64_t loops = ceil_div(out.channel_bytes, per_step * (chain_op(op) ? 1 : n));
  const std::int64_t slices_per_step = ceil_div(per_step, out.slice);
  out.slices = loops * slices_per_step * (chain_op(op) ? 1 : out.steps);
  out.slices = std::max<std::int64_t>(out.slices, out.steps);
  return out;
}

std::optional<Time> nccl_time(const NcclTable& t, const NcclFabric& f, CollectiveOp op, Bytes bytes, NcclAlgo a,
                              NcclProto p) {
  if (t.bandwidth_GBps[idx(a)][idx(p)] <= 0) return std::nullopt;
  if (a == NcclAlgo::Pat) return nccl_tuner_time(t, f, op, bytes, a, p);
  const NcclPipeline pl = nccl_pipeline(f, op, bytes, a, p);
  const int n = f.ranks;
  const double base = base_lat(f, a, p);
  if (a == NcclAlgo::Tree) {
    // NVIDIA's pipeline model (pipeline_model.cc) for a linear pipeline: the first slice goes through
    // every step (the step's latency, then the slice), the rest follow one per slice time at the
    // channel's bandwidth on a tree link: its share of the tuner's bus bandwidth for the pair (the
    // tuner's algorithm bandwidth is half of it: every byte goes up and down), so a long pipeline
    // reaches the tuner's bandwidth. NVLink or PCI hops in the node, network hops across. What the
    // first slice pays on a hop depends on how the hop forwards it:
    //   NVLink or PCI, Simple: a slice once its flag says the whole slice is in, so the first slice
    //     pays its time on every such hop, as NVIDIA's model has it;
    //   NVLink or PCI, LL and LL128: each 16- or 128-byte line as it arrives, flag and all
    //     (prims_ll.h, prims_ll128.h), so the hops pay only their latency and the first slice its
    //     time twice: up and down through the busiest GPU's link, which carries every slice both ways;
    //   network, every protocol: a step once the GPU has posted all of it (network_hop_Bpus), so the
    //     first slice pays its time on every network hop, at the NIC's rate.
    // A step's latency is the tuner's figure for the hop, as the ring takes it, except for Simple before
    // 2.23: that tuning.cc prices a tree hop with Simple as "the latency a 256kB chunk, which is ~ base
    // lat + 256k/12GB/s (+ 256k/12GB/s for the network)", a chunk's transfer the pipeline charges
    // itself, so Simple takes half the figure, as NVIDIA's pipeline model takes every hop
    // (kPipelineHopLatencyShare). 2.23's figure (4 us) holds no transfer, nor do LL's and LL128's (0.6
    // and 1.25 us on NVLink, 5 and 8.5 on the network).
    const double channel_Bpus = t.bandwidth_GBps[idx(a)][idx(p)] / kTreeAlgorithmShare * 1000.0 / nccl_channels(f, a);
    const int net_steps = 2 * log2i(f.nodes);
    const int node_steps = pl.steps - net_steps;
    const double slice = static_cast<double>(pl.slice);
    const double steps_latency = node_steps * hw_lat(f, f.nvlink ? kNvlink : kPci, a, p) + net_steps * net_lat(f, a, p);
    const int node_slices = p == NcclProto::Simple ? node_steps : 2;
    const double latency_share = p == NcclProto::Simple && !from(f, 23) ? kPipelineHopLatencyShare : 1.0;
    const double first = latency_share * steps_latency + node_slices * slice / channel_Bpus +
                         net_steps * slice / network_hop_Bpus(f, a, p);
    // The rest of the channel's data, up and down (the last chunk is what is left, enqueue's nelem =
    // min(chunkSize, size - offset), so the bytes are exact, not whole slices).
    const double rest = std::max(2.0 * static_cast<double>(pl.channel_bytes) - 2 * slice, 0.0);
    return Time::us(base + first + rest / channel_Bpus);
  }
  if (nvls_family(a)) {
    // The linear pipeline through NVLS's stages, as NVIDIA's pipelineModel (pipeline_model.cc) has it:
    // the first slice through every stage, each at its own stage's rate (the NVLink's for NVLS's
    // stages, the network's for NVLSTree's tree of nodes), then the rest at the slowest's rate.
    // A channel's end-to-end rate is its share of NVLS's (algorithm) bandwidth, so a long pipeline
    // reaches exactly that. (NCCL's own model gives each channel the graph's NVLink speed, twice the
    // share, and caps the sum with a soft minimum; the share is what the channels can carry together.)
    //   NVLS stage: the node's NVLS share, as on one node (NVLS alone: the channel's share itself).
    //   Network hop: network_hop_Bpus, the NIC's speed as the search booked it for the graph's
    //     channels, split among the CTAs (as NVIDIA's computeNVLSMaxBusBw, src/tuning/pipeline_model/
    //     nvls.cc @53947894, has it). A tree link carries each slice twice, up and down, so across
    //     more than two nodes NVLSTree's throughput (its bus bandwidth, the delay) is about half that
    //     rate; one slice crossing one hop moves at the full rate.
    // Across 4 nodes of 8 H100 this takes 8 to 64 MiB from 19-39 % slow to within 3.3 % of the
    // measurement in NVIDIA/nccl-tests issue #309 (h100-4node-nccltests309-xe9680-vm); the same sizes
    // of a second cluster's sweep, added after, read within 5.8 % (h100-4node-voltage-park-ib).
    const NcclGraph g = nccl_graph(f, a);
    const int ppn = f.ranks / f.nodes;
    const double channel_Bpus = nvls_bus_GBps(f, op, a) * n / ring_steps(op, n) * 1000.0 / pl.channels;  // bytes/us
    const double node_Bpus = nvls_link_bus_per_channel(f, op, g) * g.channels * ppn / ring_steps(op, ppn) * 1000.0 / pl.channels;
    const double hop_Bpus = network_hop_Bpus(f, a, p);
    const int net_steps = a == NcclAlgo::NvlsTree ? 2 * log2i(f.nodes) : 0;
    const double slice = static_cast<double>(pl.slice);
    const double first_lat =
        (pl.steps - net_steps) * hw_lat(f, kNvlink, a, p) + net_steps * net_lat(f, a, p);
    const double first = kPipelineHopLatencyShare * first_lat + (pl.steps - net_steps) * slice / node_Bpus +
                         net_steps * slice / hop_Bpus;
    // Then the rest of the channel's data at the slowest stage's rate (the last slice is what is left).
    const double slowest_Bpus = std::min({channel_Bpus, node_Bpus, net_steps > 0 ? hop_Bpus : node_Bpus});
    return Time::us(base + first + static_cast<double>(pl.channel_bytes - pl.slice) / slowest_Bpus);
  }
  // Ring. A channel's bandwidth is its share of the tuner's bus bandwidth for the pair (whose
  // channels are the graph's, run twice over). Inside one NVLink node the channels are not held to
  // what the search booked for them: the search books a listed speed per channel, as many channels as
  // fit under the link, a discrete choice for finding paths (H100: 12 x 30 = 360 GB/s of the GPU's
  // 370.8); the kernels copy as fast as the link lets them, and the link's usable rate is NCCL's own per-link
  // figure times the links (topo.h SM90_NVLINK_BW 20.6 x 18 = 370.8; A100 20.0 x 12 = 240, which its
  // search books whole). NVIDIA describes the same figure: "With the protocol overhead (~20%) NCCL can
  // get an effective NVLink bandwidth of 370GB/s, which you can observe as BusBw when running
  // non-allreduce operations, or when running with NCCL_ALGO=RING" (S. Jeaugey, NVIDIA/nccl-tests
  // issue #212, 2024-05-06). So the ring's bus bandwidth there is the link's, under the protocol's
  // efficiency and caps. The tuner still chooses by its own table.
  double bus_GBps = t.bandwidth_GBps[idx(a)][idx(p)] * ring_steps(op, n) / n;
  if (f.nodes == 1 && f.nvlink) {
    bus_GBps = std::max(bus_GBps, ring_bus(f.nvlink_GBps, p, op, f, t.channels[idx(a)]));
  }
  const double channel_Bpus = bus_GBps * 1000.0 / nccl_channels(f, a);
  // The busiest link's bytes: the channel's data steps/n times over (all of it down a chain), no less
  // than one slice on every step (a chain's data shorter than its steps still crosses each of them).
  const double cb = static_cast<double>(pl.channel_bytes);
  const double link_bytes =
      std::max(chain_op(op) ? cb : cb * pl.steps / n, static_cast<double>(pl.steps) * static_cast<double>(pl.slice));
  // Latencies per hop, as the tuner has them: NVLink or PCI inside a node, at least the cost of
  // posting a network operation once the ring leaves the node; network hops 2 (nodes - 1) of the
  // all-reduce's steps (pipeline_model/ring.cc), nodes - 1 of the others'.
  const Hw intra_hw = f.nvlink ? kNvlink : kPci;
  double intra = hw_lat(f, intra_hw, a, p);
  if (f.nodes > 1) intra = std::max(intra, kNetOverheadUs * (p == NcclProto::Simple ? 3 : 1));
  const double inter = net_lat(f, a, p);
  const int inter_steps = f.nodes == 1 ? 0 : op == CollectiveOp::AllReduce ? 2 * (f.nodes - 1) : f.nodes - 1;
  // The first slice pays every hop's latency on its way round (the tuner's latency); every further
  // slice the busiest link carries pays that link's hop latency again: Simple and LL128 synchronise
  // each slice with the next rank (wait for its flag, copy, fence, post), which the slice's data
  // does not hide. Network hops overlap further slices (the proxy keeps NCCL_STEPS in flight), so
  // the per-slice cost is the GPU's side of the hop, the intra latency. (This form is ours. NCCL's
  // pipeline model has the first slice carry its data through every step before the rest follow,
  // which is a linear pipeline's fill; a ring's links all carry data from the first step, so only
  // the latency is fill here. At one slice per step it is the tuner's estimate exactly.)
  const double first_lat = (pl.steps - inter_steps) * intra + inter_steps * inter;
  const double later_lat = static_cast<double>(pl.slices - pl.steps) * intra;
  return Time::us(base + first_lat + later_lat + link_bytes / channel_Bpus);
}

NcclChoice nccl_choose(const CollectiveRequest& request, const NcclFabric& fabric, std::optional<NcclAlgo> only) {
  NcclChoice best;
  if (request.ranks <= 1) return best;
  const NcclTable t = nccl_table(request.op, fabric);
  bool found = false;
  for (NcclAlgo a : kAllAlgos) {
    if (only && a != *only) continue;
    for (NcclProto p : {NcclProto::LL, NcclProto::LL128, NcclProto::Simple}) {
      const auto estimate = nccl_tuner_time(t, fabric, request.op, request.bytes, a, p);
      if (!estimate || (found && !(*estimate < best.tuner_time))) continue;
      best.algo = a;
      best.proto = p;
      best.tuner_time = *estimate;
      found = true;
    }
  }
  if (!found) {
    throw InvalidArgument("NCCL's model has no " + (only ? to_string(*only) : std::string("algorithm")) + " for op '" +
                          to_string(request.op) + "' here");
  }
  best.time = *nccl_time(t, fabric, request.op, request.bytes, best.algo, best.proto);
  // PAT's pipeline is not modelled: its channels are its graph's.
  best.channels = best.algo == NcclAlgo::Pat ? t.channels[idx(best.algo)]
                                             : nccl_pipeline(fabric, request.op, request.bytes, best.algo, best.proto).channels;
  return best;
}

}  // namespace twinbed::sim
