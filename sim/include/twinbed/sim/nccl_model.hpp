// Collectives as NCCL runs them: its algorithms (ring, tree, NVLS, NVLSTree, PAT), protocols (LL, LL128,
// Simple) and channels, its choice among them (the cost model of NCCL's own tuner), and the time the chosen
// collective takes (a model of how NCCL's kernels pipeline the data through their channels).
//
// Two costs, kept apart on purpose:
//
// * The tuner's estimate, which decides (`nccl_tuner_time`, `nccl_choose`). Source: NVIDIA/nccl
//   v2.20.3, src/graph/tuning.cc (ncclTopoTuneModel, ncclTopoGetAlgoTime), with the link figures of
//   src/graph/topo.h and the channel search of src/graph/search.cc, or the tables of a later release
//   (2.21 to 2.28) where NcclFabric::nccl_minor names one (what changed is listed in nccl_model.cpp).
//   NCCL times an (algorithm, protocol)
//   pair as
//       time = latency + bytes / bandwidth            (us, and GB/s of algorithm bandwidth)
//   where latency = a base launch latency + the protocol's per-hop latency on each hop of the algorithm
//   (NVLink, PCI or network hops), and bandwidth = channels x per-channel bandwidth, cut by the
//   protocol's efficiency (LL moves 8-byte lines of which 4 are data and waits on flags; LL128
//   128-byte lines of which 120 are data; Simple moves whole buffers), and converted from bus to
//   algorithm bandwidth (ring: ranks / steps; tree: 1/2; NVLS and NVLSTree: 5/6, from 2.28 as the
//   ring's, and from 2.23 none for NVLS's all-gather and reduce-scatter; PAT: none). NCCL runs the pair
//   of least time; so does `nccl_choose`.
//
// * The time the pair takes (`nccl_time`, the time `nccl_choose` reports). NCCL's tuner charges
//   bytes at peak bandwidth from the first byte; NCCL's kernels do not run that way. Each channel
//   (one CTA) moves its share of the data in slices through a pipeline of steps, NCCL_STEPS buffer
//   slots deep; a channel only runs when the op is large enough for it (enqueue.cc trims the
//   channels of small ops). `nccl_pipeline` says how a given op is cut up (active channels, bytes per
//   channel, slice size, slices on the busiest link, steps), and `nccl_time` prices it:
//     ring:  base + the first slice's latency on every step + every further slice's hop latency
//            + the busiest link's bytes at the channel's bandwidth (inside one NVLink node the
//            link's usable rate, NCCL's per-link figure x links, not the search's booking: see .cpp).
//            The kernel loops a chunk per rank at a time and shrinks the last loop's chunks to what
//            is left: every loop pays its slices' latencies, the bytes are the data's exactly
//     NVLS:  base + the first slice through both steps (reduce into the switch, multicast back)
//            + the rest of the channel's data at the slowest stage's rate (NVIDIA's pipeline
//            model, see .cpp); NVLSTree the same with the tree of nodes' network steps added
//            (2 log2 nodes), each stage at its own rate (NVLink or NIC)
//     tree:  base + the first slice up and down every hop (the hop's latency, half of it for
//            Simple before 2.23, whose figure holds a chunk's transfer; then the slice: on every
//            hop for Simple, twice in the nodes for LL and LL128, which forward line by line there,
//            and on every network hop, which forwards whole steps) + the rest of the channel's
//            data at the slice rate, a link carrying it twice (NVIDIA's pipeline model,
//            pipeline_model/tree.cc)
//     PAT:   the tuner's estimate (its pipeline is not modelled).
//   NVLS and NVLSTree bandwidth carry NCCL's Hopper NVLS efficiency (0.85, src/tuning/nvls.cc in
//   later NCCL) and, for NVLSTree, NVIDIA's per-channel cap.
//   At large sizes the ring's time comes within a few percent of the tuner's bandwidth, or inside one
//   NVLink node of the link's (the slices' synchronisation), the tree's reaches the tuner's bandwidth (without the tuner's tree correction
//   factors, NVIDIA's fit of its own estimate to medium sizes, which still decide) and NVLS's its
//   efficiency-carrying bandwidth; at small and mid sizes
//   they differ from the tuner by the pipeline's fill, the slicing and the trimmed channels.
//
// What is NCCL's own and what is ours: every table value and size is NCCL's (cited in
// nccl_model.cpp, with version or commit). The inputs NCCL learns by probing the machine (its
// channel search) are derived from the Topology by `nccl_fabric` and `nccl_graph`, with the
// simplifications said there. How the pieces combine into a time is ours, following NCCL's pipeline
// model (src/tuning/pipeline_model/, NVIDIA/nccl 623aa029) where it describes the kernels.
// NVLSTree (NVLS inside each node, a tree of the nodes across the network) is on for any multi-node
// Hopper NVSwitch communicator with NICs, as every modelled release enables it: it needs no SHARP
// switch (NVLS across nodes without the tree would: CollNet, not modelled). PAT (all-gather and
// reduce-scatter in log2(n) rounds where each rank has a node of its own) is on from 2.23, as NCCL's
// NCCL_PAT_ENABLE default has it; its time is the tuner's estimate. Not modelled: the CPU vendor
// (Intel assumed), NCCL_PROTO (NCCL_ALGO is `nccl_choose`'s `only`), PAT's pipeline, the tree's
// LL128 chunk halving for small ops, the tree pattern's 0.85 (NCCL_TOPO_PATTERN_TREE; the balanced
// tree is taken), the net plugin's latencyInter (0 on InfiniBand).
//
// The shared schedules (core/schedule.hpp) stay what the real backend executes; this model is how the
// simulator costs NCCL's own collective (`auto`). NVLS has no shared schedule (the NVSwitch reduces in
// the fabric): it exists only here, analytically; NVLSTree's groups of one kind share links as the tree
// schedule does (time_nccl); in the plan simulator's link sharing across collectives and messages, NVLS,
// NVLSTree and PAT carry the ring's footprint.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "twinbed/core/experiment.hpp"
#include "twinbed/core/schedule.hpp"
#include "twinbed/core/topology.hpp"

namespace twinbed::sim {

enum class NcclAlgo { Tree, Ring, Nvls, NvlsTree, Pat };
enum class NcclProto { LL, LL128, Simple };
inline constexpr int kNcclAlgos = 5;
inline constexpr int kNcclProtos = 3;
// "tree", "ring", "nvls", "nvlstree", "pat" (tree and ring are also the names of the shared schedules they correspond to);
// "LL", "LL128", "Simple" as NCCL spells them.
std::string to_string(NcclAlgo a);
std::string to_string(NcclProto p);

enum class GpuArch { Ampere, Hopper };  // NCCL's compute-capability classes 80 and 90

// What NCCL learns of the machine, for one communicator. Bandwidths in GB/s (1e9 B/s), as NCCL keeps them.
struct NcclFabric {
  GpuArch arch = GpuArch::Hopper;
  int ranks = 8;
  int nodes = 1;           // hosts the communicator spans; ranks per node = ranks / nodes
  bool nvlink = true;      // GPUs of a node talk over NVLink (else PCI)
  bool nvswitch = false;   // ... through an NVSwitch (NVLS needs it, and Hopper)
  bool has_nics = false;   // NCCL sees NICs: the communicator spans hosts (then its network speed list)
  double nvlink_GBps = 0;  // one GPU's NVLink bandwidth per direction as NCCL counts it (links x its per-link figure)
  double nic_GBps = 0;     // one NIC's line rate; one NIC per GPU
  // The NCCL release modelled, 2.<nccl_minor>: not something NCCL learns of the machine but of its own
  // version. 20 (the default) runs v2.20.3's tables; 21 to 28 those releases' (nccl_model.cpp),
  // PAT among them from 23. The experiment's "simulation": {"nccl_version": "2.24"} sets it.
  int nccl_minor = kNcclOldestMinor;
  bool operator==(const NcclFabric&) const = default;
};

// NCCL's facts for the communicator `ranks` (topology ranks) of `topology`, or nullopt when NCCL's
// model does not apply: a device that is not an NVIDIA GPU preset ("a100", "h100", "h200"), mixed
// devices, or hosts holding unequal numbers of the ranks. Derivation: the NVLink tier is the path
// between two ranks of one host (an NVSwitch when it crosses a switch), or the rank's widest link when
// the communicator has one rank per host; the NIC is the bottleneck of the path to a rank of another
// host; NCCL's NVLink figure is that line rate scaled by NCCL's per-link figure over the line rate of
// a link (see nccl_model.cpp).
std::optional<NcclFabric> nccl_fabric(const Topology& topology, const std::vector<int>& ranks);

// One of NCCL's graphs (a set of channels): how many, and each one's bandwidth inside a node and
// across nodes (GB/s).
struct NcclGraph {
  int channels = 0;
  double bw_intra = 0;
  double bw_inter = 0;
  bool operator==(const NcclGraph&) const = default;
};
// The graph NCCL's search settles on for `algo` (channels 0: none, as NVLS off Hopper NVSwitch nodes).
// Bandwidths are per channel, as NCCL's search books them on the links.
NcclGraph nccl_graph(const NcclFabric& fabric, NcclAlgo algo);

// NCCL's tuner table for one op: latency (us) and algorithm bandwidth (GB/s) per (algorithm,
// protocol); bandwidth 0 where NCCL has no such pair for the op (or disables it).
struct NcclTable {
  std::array<std::array<double, kNcclProtos>, kNcclAlgos> latency_us{};
  std::array<std::array<double, kNcclProtos>, kNcclAlgos> bandwidth_GBps{};
  std::array<int, kNcclAlgos> channels{};
};
// Throws InvalidArgument for all-to-all, which NCCL runs as point-to-point sends, not a tuned collective.
NcclTable nccl_table(CollectiveOp op, const NcclFabric& fabric);

// The time NCCL's tuner gives one (algorithm, protocol) for `bytes` (twinbed's size convention, which
// is NCCL's nBytes), with its size-dependent corrections (tree correction factors, the ring plateau);
// nullopt when the pair is unavailable. This is what NCCL decides by, not what the op takes.
std::optional<Time> nccl_tuner_time(const NcclTable& table, const NcclFabric& fabric, CollectiveOp op, Bytes bytes,
                                    NcclAlgo algo, NcclProto proto);

// The channels (CTAs) the communicator launches for `algo` before any trimming: ring, tree and PAT
// run the communicator's channels, the fewer of the ring's and the tree's graph channels doubled
// (NCCL duplicates them after connecting, ncclTopoPostset), up to 32 (PAT only from 2.23 and where
// every rank has a node of its own); NVLS and NVLSTree run their own count (16). 0
// where the algorithm is unavailable.
int nccl_channels(const NcclFabric& fabric, NcclAlgo algo);

// How NCCL's kernels cut one op up. Ring: every one of `steps` hops moves `slice` bytes at a time,
// and the busiest link carries `slices` of them (a loop's last ones smaller, holding what is left).
// NVLS: each channel's data passes through `steps` stages (2 for all-reduce: into the switch and back;
// 1 otherwise) in `slices` slices. Tree
// (all-reduce): the first slice goes up and down the chains and the tree of nodes, `steps` hops, and
// each link carries `slices` (every slice twice, less one).
struct NcclPipeline {
  int channels = 0;      // channels that carry data (NCCL trims them for small ops)
  Bytes channel_bytes = 0;  // each one's share of the op
  Bytes slice = 0;       // bytes one slice moves on one hop
  std::int64_t slices = 0;  // slices the busiest link (ring, tree) or each channel (NVLS) handles
  int steps = 0;         // hops (ring, tree) or stages (NVLS) the first slice goes through
  bool operator==(const NcclPipeline&) const = default;
};
// Throws InvalidArgument for PAT (not modelled) or an unavailable pair.
NcclPipeline nccl_pipeline(const NcclFabric& fabric, CollectiveOp op, Bytes bytes, NcclAlgo algo, NcclProto proto);

// The time one (algorithm, protocol) takes for `bytes`: the pipelined time for ring, tree and NVLS,
// the tuner's estimate for PAT (see the file comment); nullopt when the pair is unavailable.
// O(1); no state.
std::optional<Time> nccl_time(const NcclTable& table, const NcclFabric& fabric, CollectiveOp op, Bytes bytes,
                              NcclAlgo algo, NcclProto proto);

struct NcclChoice {
  NcclAlgo algo = NcclAlgo::Ring;
  NcclProto proto = NcclProto::Simple;
  int channels = 0;   // the channels that carry data (nccl_pipeline's; PAT: its graph's)
  Time time;          // what the op takes (nccl_time)
  Time tuner_time;    // what NCCL's tuner expected when it chose (nccl_tuner_time)
  std::string name() const;  // "ring/LL128"
  bool operator==(const NcclChoice&) const = default;
};
// The pair of least tuner time, as NCCL picks it (ties: tree before ring before NVLS before NVLSTree before PAT,
// LL before LL128 before Simple: NCCL's loop order, which keeps the first minimum), with the time it
// takes. `only`: NCCL under NCCL_ALGO=<that algorithm> (the tuner then picks only the protocol);
// throws InvalidArgument when it has no protocol for the op here. A communicator of one rank takes
// no time.
NcclChoice nccl_choose(const CollectiveRequest& request, const NcclFabric& fabric,
                       std::optional<NcclAlgo> only = std::nullopt);

}  // namespace twinbed::sim
