// Collectives as NCCL runs them: its algorithms (ring, tree, NVLS), protocols (LL, LL128, Simple) and
// channels, and its choice among them — the cost model of NCCL's own tuner.
//
// Source: NVIDIA/nccl v2.20.3, src/graph/tuning.cc (ncclTopoTuneModel, ncclTopoGetAlgoTime), with the
// link figures of src/graph/topo.h and the channel search of src/graph/search.cc. NCCL times an
// (algorithm, protocol) pair as
//     time = latency + bytes / bandwidth            (us, and GB/s of algorithm bandwidth)
// where latency = a base launch latency + the protocol's per-hop latency on each hop of the algorithm
// (NVLink, PCI or network hops), and bandwidth = channels x per-channel bandwidth, cut by the
// protocol's efficiency (LL moves 8-byte lines of which 4 are data and waits on flags; LL128 128-byte
// lines of which 120 are data; Simple moves whole buffers), and converted from bus to algorithm
// bandwidth (ring: ranks / steps; tree: 1/2; NVLS: 5/6). NCCL runs the pair of least time; so does
// `nccl_choose`.
//
// What is NCCL's own and what is ours: every table value is NCCL's (cited in nccl_model.cpp). The
// inputs NCCL learns by probing the machine (its channel search) are derived from the Topology by
// `nccl_fabric` and `nccl_graph`, with the simplifications said there. Not modelled: CollNet, NVLS
// across nodes (NVLSTree, which needs SHARP switches), PAT (NCCL 2.23+), the CPU vendor (Intel
// assumed), user overrides (NCCL_ALGO/NCCL_PROTO).
//
// The shared schedules (core/schedule.hpp) stay what the real backend executes; this model is how the
// simulator costs NCCL's own collective (`auto`). NVLS has no shared schedule (the NVSwitch reduces in
// the fabric): it exists only here, analytically.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "twinbed/core/schedule.hpp"
#include "twinbed/core/topology.hpp"

namespace twinbed::sim {

enum class NcclAlgo { Tree, Ring, Nvls };
enum class NcclProto { LL, LL128, Simple };
inline constexpr int kNcclAlgos = 3;
inline constexpr int kNcclProtos = 3;
// "tree", "ring", "nvls" (tree and ring are also the names of the shared schedules they correspond to);
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
  bool has_nics = false;   // the node has NICs (NCCL then searches with its network speed list)
  double nvlink_GBps = 0;  // one GPU's NVLink bandwidth per direction as NCCL counts it (links x its per-link figure)
  double nic_GBps = 0;     // one NIC's line rate; one NIC per GPU
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
// nullopt when the pair is unavailable.
std::optional<Time> nccl_time(const NcclTable& table, const NcclFabric& fabric, CollectiveOp op, Bytes bytes,
                              NcclAlgo algo, NcclProto proto);

struct NcclChoice {
  NcclAlgo algo = NcclAlgo::Ring;
  NcclProto proto = NcclProto::Simple;
  int channels = 0;
  Time time;
  std::string name() const;  // "ring/LL128"
  bool operator==(const NcclChoice&) const = default;
};
// The pair of least time, as NCCL picks it (ties: tree before ring before NVLS, LL before LL128
// before Simple: NCCL's loop order, which keeps the first minimum). A communicator of one rank takes
// no time.
NcclChoice nccl_choose(const CollectiveRequest& request, const NcclFabric& fabric);

}  // namespace twinbed::sim
