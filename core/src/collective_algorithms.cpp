#include "twinbed/core/collective_algorithms.hpp"

#include <algorithm>
#include <bit>
#include <utility>

#include "twinbed/core/error.hpp"

// Conventions every algorithm here follows:
// - Chunk layout. Pieces of one buffer split S bytes into k chunks of S/k bytes, the remainder spread
//   one byte each over the first chunks, so the chunks always sum to the op's data size. When k > S some
//   chunks are 0 bytes. Zero-byte chunks are ordinary chunks: they are still sent and checked, so a
//   schedule's rounds and transfers depend on the size only through the pipeline chunk count below
//   (the simulator charges such a transfer its latency, and a 0-byte request still has every round).
// - Pipelines (ring broadcast/reduce chains, hierarchical broadcast/reduce, each tree of the double
//   binary tree) cut their data into one chunk per started MiB, at least 1 and at most 64 for a chain,
//   32 per tree (see pipeline_chunks).
// - Rounds are generated on demand from a few integers per algorithm (O(ranks) memory at most), never
//   stored, because a ring on thousands of ranks has millions of transfers.
// - A request on one rank gives a schedule with zero rounds.

namespace twinbed {
namespace {

// ---- chunk layouts ----------------------------------------------------------------------------------

Bytes share_of(Bytes total, int parts, int i) { return total / parts + (i < total % parts ? 1 : 0); }

// `parts` pieces of one buffer, all in block 0 (all-reduce, broadcast, reduce).
std::vector<Chunk> pieces(Bytes total, int parts) {
  std::vector<Chunk> out(parts);
  for (int i = 0; i < parts; ++i) out[i] = {share_of(total, parts, i), 0};
  return out;
}

// One chunk per rank's block, chunk b = block b (reduce-scatter, all-gather).
std::vector<Chunk> per_rank_blocks(Bytes total, int n) {
  std::vector<Chunk> out(n);
  for (int b = 0; b < n; ++b) out[b] = {share_of(total, n, b), b};
  return out;
}

// All-to-all: every rank's buffer of `per_rank` bytes is n blocks, one per destination; chunk s*n+d is
// block s*n+d, what s sends to d.
std::vector<Chunk> alltoall_blocks(Bytes per_rank, int n) {
  std::vector<Chunk> out(static_cast<std::size_t>(n) * n);
  for (int s = 0; s < n; ++s)
    for (int d = 0; d < n; ++d) out[s * n + d] = {share_of(per_rank, n, d), s * n + d};
  return out;
}

// Chunks of a pipeline: one per started MiB, clamped to [1, max], so small messages are not cut into
// latency-bound slivers and large ones fill the pipeline.
int pipeline_chunks(Bytes bytes, int max) {
  const Bytes per_mib = (bytes + MiB - 1) / MiB;
  return static_cast<int>(std::clamp<Bytes>(per_mib, 1, max));
}

bool equal_sizes(const std::vector<Chunk>& chunks) {
  return std::all_of(chunks.begin(), chunks.end(), [&](const Chunk& c) { return c.bytes == chunks[0].bytes; });
}

int mod(int a, int n) { return ((a % n) + n) % n; }

// ---- a schedule whose rounds are computed when asked for ---------------------------------------------

class GeneratedSchedule final : public Schedule {
 public:
  using RoundFn = std::function<void(int, std::vector<Transfer>&)>;  // appends round k's transfers
  using ShapeFn = std::function<int(int)>;

  GeneratedSchedule(const CollectiveRequest& request, const std::string& algorithm, std::vector<Chunk> chunks,
                    int rounds, RoundFn round_fn, ShapeFn shape_fn = {})
      : Schedule(request, algorithm, std::move(chunks)),
        rounds_(rounds),
        round_fn_(std::move(round_fn)),
        shape_fn_(std::move(shape_fn)) {}

  int num_rounds() const override { return rounds_; }
  void round(int k, std::vector<Transfer>& out) const override {
    if (k < 0 || k >= rounds_)
      throw InvalidArgument("round " + std::to_string(k) + " is outside [0, " + std::to_string(rounds_) + ")");
    out.clear();
    round_fn_(k, out);
  }
  int round_shape(int k) const override { return shape_fn_ ? shape_fn_(k) : -1; }

 private:
  int rounds_;
  RoundFn round_fn_;
  ShapeFn shape_fn_;
};

// ---- rings -------------------------------------------------------------------------------------------

// `groups` disjoint rings of `size` ranks each, moving one "super chunk" per ring position around, all
// rings in step. Member i of ring g is rank g*group_stride + i*member_stride; the super chunk of position
// i in ring g is the chunks g*chunk_group_stride + i*chunk_pos_stride + j*chunk_stride, j < per_position.
// A flat ring is one group with unit strides; hierarchical uses one ring per host or per local index.
struct RingPhase {
  bool reduce = true;  // true: reduce-scatter; false: all-gather
  int groups = 1;
  int size = 1;
  int group_stride = 0;
  int member_stride = 1;
  int chunk_group_stride = 0;
  int chunk_pos_stride = 1;
  int chunk_stride = 0;
  int per_position = 1;

  int rounds() const { return size - 1; }
  void append_round(int k, std::vector<Transfer>& out) const {
    for (int g = 0; g < groups; ++g) {
      for (int i = 0; i < size; ++i) {
        // reduce-scatter step k: position i sends super chunk (i-k-1) mod size to i+1, which adds it in;
        //   after size-1 steps position i holds its own super chunk with every contribution.
        // all-gather step k: position i forwards super chunk (i-k) mod size (its own at step 0) to i+1.
        const int sc = mod(reduce ? i - k - 1 : i - k, size);
        const int src = g * group_stride + i * member_stride;
        const int dst = g * group_stride + ((i + 1) % size) * member_stride;
        for (int j = 0; j < per_position; ++j)
          out.push_back({src, dst, g * chunk_group_stride + sc * chunk_pos_stride + j * chunk_stride, reduce});
      }
    }
  }
};

RingPhase flat_ring(int n, bool reduce) {
  RingPhase p;
  p.reduce = reduce;
  p.size = n;
  return p;
}

// Runs ring phases one after another; rounds of one phase share a shape when all chunks are equal.
std::unique_ptr<Schedule> ring_phases(const CollectiveRequest& req, const std::string& name, std::vector<Chunk> chunks,
                                      std::vector<RingPhase> phases) {
  int rounds = 0;
  for (const RingPhase& p : phases) rounds += p.rounds();
  const bool same_sizes = equal_sizes(chunks);
  auto locate = [phases](int k) {
    int phase = 0;
    while (k >= phases[phase].rounds()) k -= phases[phase++].rounds();
    return std::pair(phase, k);
  };
  return std::make_unique<GeneratedSchedule>(
      req, name, std::move(chunks), rounds,
      [phases, locate](int k, std::vector<Transfer>& out) {
        auto [phase, step] = locate(k);
        phases[phase].append_round(step, out);
      },
      [same_sizes, locate](int k) { return same_sizes ? locate(k).first : -1; });
}

// ---- pipelined trees ---------------------------------------------------------------------------------

// A spanning tree over the ranks (parent[r], -1 at the root) carrying chunks [first, first + count) in a
// pipeline. Reduce: rank v sends chunk c to its parent at round c + height(v), one round after the last
// of its children's copies came in. Broadcast: rank v forwards chunk c to its children at round
// c + depth(v) (+ the root's height when it follows a reduce on the same tree).
struct PipelinedTree {
  std::vector<int> parent;
  std::vector<int> depth;   // root 0
  std::vector<int> height;  // leaves 0
  int root = 0;
  int first = 0;
  int count = 0;
};

PipelinedTree make_tree(std::vector<int> parent, int first, int count) {
  const int n = static_cast<int>(parent.size());
  PipelinedTree t;
  t.first = first;
  t.count = count;
  t.depth.assign(n, -1);
  t.height.assign(n, 0);
  std::vector<int> path;
  for (int v = 0; v < n; ++v) {
    if (parent[v] < 0) t.root = v;
    // Walk up to a rank of known depth, then fill in the path on the way back.
    for (int u = v; u >= 0 && t.depth[u] < 0; u = parent[u]) path.push_back(u);
    while (!path.empty()) {
      const int u = path.back();
      path.pop_back();
      t.depth[u] = parent[u] < 0 ? 0 : t.depth[parent[u]] + 1;
    }
  }
  // Heights bottom-up: deepest ranks first.
  std::vector<int> order(n);
  for (int v = 0; v < n; ++v) order[v] = v;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return t.depth[a] > t.depth[b]; });
  for (int v : order)
    if (parent[v] >= 0) t.height[parent[v]] = std::max(t.height[parent[v]], t.height[v] + 1);
  t.parent = std::move(parent);
  return t;
}

enum class TreeMode { Reduce, Broadcast, AllReduce };

int tree_rounds(const PipelinedTree& t, TreeMode mode) {
  const int h = t.height[t.root];
  if (t.count == 0 || h == 0) return 0;
  return t.count + (mode == TreeMode::AllReduce ? 2 * h : h) - 1;
}

void append_tree_round(const PipelinedTree& t, TreeMode mode, int k, std::vector<Transfer>& out) {
  const int down_offset = mode == TreeMode::AllReduce ? t.height[t.root] : 0;
  for (int v = 0; v < static_cast<int>(t.parent.size()); ++v) {
    const int p = t.parent[v];
    if (p < 0) continue;
    if (mode != TreeMode::Broadcast) {
      // step k (up): v adds chunk k - height(v) into its parent's copy, its subtree's sum now complete.
      const int c = k - t.height[v];
      if (c >= 0 && c < t.count) out.push_back({v, p, t.first + c, true});
    }
    if (mode != TreeMode::Reduce) {
      // step k (down): the parent, holding the final chunk since the round before, passes it to v.
      const int c = k - down_offset - t.depth[p];
      if (c >= 0 && c < t.count) out.push_back({p, v, t.first + c, false});
    }
  }
}

std::unique_ptr<Schedule> tree_schedule(const CollectiveRequest& req, const std::string& name,
                                        std::vector<Chunk> chunks, std::vector<PipelinedTree> trees, TreeMode mode) {
  int rounds = 0;
  for (const PipelinedTree& t : trees) rounds = std::max(rounds, tree_rounds(t, mode));
  return std::make_unique<GeneratedSchedule>(req, name, std::move(chunks), rounds,
                                             [trees = std::move(trees), mode](int k, std::vector<Transfer>& out) {
                                               for (const PipelinedTree& t : trees) append_tree_round(t, mode, k, out);
                                             });
}

TreeMode tree_mode(CollectiveOp op) {
  return op == CollectiveOp::Broadcast ? TreeMode::Broadcast
         : op == CollectiveOp::Reduce  ? TreeMode::Reduce
                                       : TreeMode::AllReduce;
}

// A chain through the ranks root, root+1, ... (broadcast) or ending at the root (reduce): the ring's
// pipelined broadcast and reduce.
std::vector<int> chain_parents(int n, int root, CollectiveOp op) {
  std::vector<int> parent(n);
  for (int r = 0; r < n; ++r)
    parent[r] = r == root ? -1 : op == CollectiveOp::Broadcast ? mod(r - 1, n) : mod(r + 1, n);
  return parent;
}

// ---- the algorithms ----------------------------------------------------------------------------------

std::unique_ptr<Schedule> build_ring(const CollectiveRequest& req, const std::string& name) {
  const int n = req.ranks;
  switch (req.op) {
    case CollectiveOp::AllReduce:
      // reduce-scatter over n pieces, then all-gather them: 2(n-1) rounds, 2(n-1)/n * S per rank.
      return ring_phases(req, name, pieces(req.bytes, n), {flat_ring(n, true), flat_ring(n, false)});
    case CollectiveOp::ReduceScatter:
      return ring_phases(req, name, per_rank_blocks(req.bytes, n), {flat_ring(n, true)});
    case CollectiveOp::AllGather:
      return ring_phases(req, name, per_rank_blocks(req.bytes, n), {flat_ring(n, false)});
    default: {
      // broadcast / reduce: a pipelined chain, P + n - 2 rounds for P chunks.
      const int p = pipeline_chunks(req.bytes, 64);
      std::vector<PipelinedTree> chain{make_tree(chain_parents(n, req.root, req.op), 0, p)};
      return tree_schedule(req, name, pieces(req.bytes, p), std::move(chain), tree_mode(req.op));
    }
  }
}

// NCCL's binary tree (ncclGetBtree): rank 0 is the root; the parent of r > 0 follows from its lowest
// set bit, giving an in-order tree of height about log2 n.
int btree_parent(int r, int n) {
  if (r == 0) return -1;
  const int bit = r & -r;
  const int up = (r ^ bit) | (bit << 1);
  return up >= n ? (r ^ bit) : up;
}

// The double binary tree (NCCL's ncclGetDtree): tree 2 is tree 1 mirrored (n even) or shifted by one
// (n odd), so the leaves of one tree, about half the ranks, are the interior nodes of the other. Each
// tree carries half of the chunks. For broadcast and reduce both trees are rooted at the request's root:
// tree 2's root swaps labels with rank 0, then every label is rotated by the root.
std::unique_ptr<Schedule> build_tree(const CollectiveRequest& req, const std::string& name) {
  const int n = req.ranks;
  const bool rooted = req.op != CollectiveOp::AllReduce;
  std::vector<int> first(n), second(n);
  for (int v = 0; v < n; ++v) {
    first[v] = btree_parent(v, n);
    if (n % 2 == 1) {
      const int up = btree_parent(mod(v - 1, n), n);
      second[v] = up < 0 ? -1 : (up + 1) % n;
    } else {
      const int up = btree_parent(n - 1 - v, n);
      second[v] = up < 0 ? -1 : n - 1 - up;
    }
  }
  if (rooted) {
    const int top = n % 2 == 1 ? 1 % n : n - 1;  // tree 2's root
    auto swap_label = [&](int v) { return v == top ? 0 : v == 0 ? top : v; };
    std::vector<int> swapped(n);
    for (int v = 0; v < n; ++v) swapped[swap_label(v)] = second[v] < 0 ? -1 : swap_label(second[v]);
    auto rotate = [&](const std::vector<int>& parent) {
      std::vector<int> out(n);
      for (int v = 0; v < n; ++v) out[(v + req.root) % n] = parent[v] < 0 ? -1 : (parent[v] + req.root) % n;
      return out;
    };
    first = rotate(first);
    second = rotate(swapped);
  }
  const int per_tree = pipeline_chunks((req.bytes + 1) / 2, 32);
  std::vector<PipelinedTree> trees{make_tree(std::move(first), 0, per_tree),
                                   make_tree(std::move(second), per_tree, per_tree)};
  return tree_schedule(req, name, pieces(req.bytes, 2 * per_tree), std::move(trees), tree_mode(req.op));
}

// Binomial tree broadcast / reduce of one chunk, ceil(log2 n) rounds, labels rotated by the root.
std::unique_ptr<Schedule> binomial(const CollectiveRequest& req, const std::string& name) {
  const int n = req.ranks;
  const int rounds = n > 1 ? std::bit_width(static_cast<unsigned>(n - 1)) : 0;
  const bool bcast = req.op == CollectiveOp::Broadcast;
  const int root = req.root;
  return std::make_unique<GeneratedSchedule>(req, name, pieces(req.bytes, 1), rounds,
                                             [n, bcast, root](int k, std::vector<Transfer>& out) {
    const int mask = 1 << k;
    for (int v = 0; v < n; ++v) {
      // broadcast step k: every rank that has the data (v < 2^k) sends it to v + 2^k.
      if (bcast && v < mask && v + mask < n) out.push_back({(v + root) % n, (v + mask + root) % n, 0, false});
      // reduce step k: ranks with lowest set bit 2^k add their subtree's sum into v - 2^k.
      if (!bcast && (v & (2 * mask - 1)) == mask) out.push_back({(v + root) % n, (v - mask + root) % n, 0, true});
    }
  });
}

// Recursive halving-doubling (Rabenseifner) on p = 2^floor(log2 n) virtual ranks. With r = n - p extra
// ranks, even rank 2i < 2r first folds its data into 2i+1, which then plays virtual rank i; rank q >= 2r
// plays virtual rank q - r. Virtual rank v owns group v of chunks: chunk v for all-reduce (p pieces), or
// the blocks of the real ranks it stands for (reduce-scatter, all-gather).
struct Rhd {
  int n = 1;
  int p = 1;
  int r = 0;
  int log_p = 0;
  bool per_rank = false;  // chunks are the ranks' blocks (RS, AG) rather than p pieces (AR)

  int real(int v) const { return v < r ? 2 * v + 1 : v + r; }
  void append_group(int src, int dst, int u, bool reduce, std::vector<Transfer>& out) const {
    if (!per_rank) {
      out.push_back({src, dst, u, reduce});
    } else if (u < r) {
      out.push_back({src, dst, 2 * u, reduce});
      out.push_back({src, dst, 2 * u + 1, reduce});
    } else {
      out.push_back({src, dst, u + r, reduce});
    }
  }
  // halving step s: distance d = p/2^(s+1); v keeps the half of its groups on its side of bit d and adds
  // the other half (the d groups agreeing with its partner v^d above bit d) into the partner.
  void halving(int s, std::vector<Transfer>& out) const {
    const int d = p >> (s + 1);
    for (int v = 0; v < p; ++v) {
      const int first = (v ^ d) & ~(d - 1);
      for (int u = first; u < first + d; ++u) append_group(real(v), real(v ^ d), u, true, out);
    }
  }
  // doubling step s: distance d = 2^s; v sends the d complete groups it owns to v^d, doubling both.
  void doubling(int s, std::vector<Transfer>& out) const {
    const int d = 1 << s;
    for (int v = 0; v < p; ++v) {
      const int first = v & ~(d - 1);
      for (int u = first; u < first + d; ++u) append_group(real(v), real(v ^ d), u, false, out);
    }
  }
};

std::unique_ptr<Schedule> build_rhd(const CollectiveRequest& req, const std::string& name) {
  if (req.op == CollectiveOp::Broadcast || req.op == CollectiveOp::Reduce) return binomial(req, name);
  Rhd h;
  h.n = req.ranks;
  h.log_p = std::bit_width(static_cast<unsigned>(h.n)) - 1;
  h.p = 1 << h.log_p;
  h.r = h.n - h.p;
  h.per_rank = req.op != CollectiveOp::AllReduce;
  const CollectiveOp op = req.op;
  const int num_chunks = h.per_rank ? h.n : h.p;

  // Phases in order: fold (if r > 0), halving (not for AG), doubling (not for RS), unfold (if r > 0).
  const int fold = h.r > 0 ? 1 : 0;
  const int halvings = op == CollectiveOp::AllGather ? 0 : h.log_p;
  const int doublings = op == CollectiveOp::ReduceScatter ? 0 : h.log_p;
  const int rounds = 2 * fold + halvings + doublings;
  auto round_fn = [h, op, fold, halvings, num_chunks, rounds](int k, std::vector<Transfer>& out) {
    const bool folding = fold && k == 0;
    const bool unfolding = fold && k == rounds - 1;
    if (folding || unfolding) {
      for (int i = 0; i < h.r; ++i) {
        const int even = 2 * i;
        const int odd = 2 * i + 1;
        if (folding && op == CollectiveOp::AllGather) {
          // fold: the even rank hands its block to its partner, who gathers for both.
          out.push_back({even, odd, even, false});
        } else if (folding) {
          // fold: the even rank adds all its data into its partner's.
          for (int c = 0; c < num_chunks; ++c) out.push_back({even, odd, c, true});
        } else if (op == CollectiveOp::ReduceScatter) {
          // unfold: the partner returns the even rank's finished block.
          out.push_back({odd, even, even, false});
        } else {
          // unfold: the partner returns the finished result (all of it but what the even rank has).
          for (int c = 0; c < num_chunks; ++c)
            if (op == CollectiveOp::AllReduce || c != even) out.push_back({odd, even, c, false});
        }
      }
      return;
    }
    const int step = k - fold;
    if (step < halvings) {
      h.halving(step, out);
    } else {
      h.doubling(step - halvings, out);
    }
  };
  return std::make_unique<GeneratedSchedule>(
      req, name, h.per_rank ? per_rank_blocks(req.bytes, h.n) : pieces(req.bytes, h.p), rounds, round_fn);
}

// Every op in one round (two for all-reduce), every rank talking to every other directly.
std::unique_ptr<Schedule> build_direct(const CollectiveRequest& req, const std::string& name) {
  using enum CollectiveOp;
  const int n = req.ranks;
  const int root = req.root;
  const CollectiveOp op = req.op;
  if (op == AllToAll && n > 46340)
    throw InvalidArgument("algorithm '" + name + "': ranks too large for all-to-all's ranks*ranks chunks");
  std::vector<Chunk> chunks = op == AllToAll                             ? alltoall_blocks(req.bytes, n)
                              : op == ReduceScatter || op == AllGather ? per_rank_blocks(req.bytes, n)
                              : op == AllReduce                        ? pieces(req.bytes, n)
                                                                       : pieces(req.bytes, 1);
  const int rounds = n == 1 ? 0 : op == AllReduce ? 2 : 1;
  auto round_fn = [n, root, op](int k, std::vector<Transfer>& out) {
    for (int s = 0; s < n; ++s) {
      for (int d = 0; d < n; ++d) {
        if (s == d) continue;
        if ((op == AllReduce && k == 0) || op == ReduceScatter) {
          out.push_back({s, d, d, true});  // step 0: every rank adds its piece d into rank d
        } else if (op == AllReduce || op == AllGather) {
          out.push_back({s, d, s, false});  // step 1: every rank sends its finished piece to all others
        } else if (op == Broadcast && s == root) {
          out.push_back({s, d, 0, false});  // step 0: the root sends to everyone
        } else if (op == Reduce && d == root) {
          out.push_back({s, d, 0, true});  // step 0: everyone adds into the root
        } else if (op == AllToAll) {
          out.push_back({s, d, s * n + d, false});  // step 0: s sends block s*n+d to d
        }
      }
    }
  };
  return std::make_unique<GeneratedSchedule>(req, name, std::move(chunks), rounds, round_fn,
                                             [](int k) { return k; });  // no two rounds alike
}

// Hosts of g consecutive ranks; rank (host h, local l) = h*g + l. Chunk h*g + l is block h*g+l for
// reduce-scatter/all-gather, and one of n equal pieces for all-reduce. Local index l's share is the
// chunks l, g+l, 2g+l, ...; inside a host the ring moves whole shares, across hosts a ring of the ranks
// with the same local index moves the share's single chunks.
std::unique_ptr<Schedule> build_hierarchical(const CollectiveRequest& req, const std::string& name) {
  const int n = req.ranks;
  const int g = req.ranks_per_host == 0 ? n : req.ranks_per_host;
  const int hosts = n / g;
  auto intra = [&](bool reduce) {
    RingPhase p;
    p.reduce = reduce;
    p.groups = hosts;
    p.size = g;
    p.group_stride = g;
    p.member_stride = 1;
    p.chunk_group_stride = 0;
    p.chunk_pos_stride = 1;
    p.chunk_stride = g;
    p.per_position = hosts;
    return p;
  };
  auto inter = [&](bool reduce) {
    RingPhase p;
    p.reduce = reduce;
    p.groups = g;
    p.size = hosts;
    p.group_stride = 1;
    p.member_stride = g;
    p.chunk_group_stride = 1;
    p.chunk_pos_stride = g;
    p.chunk_stride = 0;
    p.per_position = 1;
    return p;
  };
  switch (req.op) {
    case CollectiveOp::AllReduce:
      // step 1: ring reduce-scatter inside each host (rank l gets share l summed over its host);
      // step 2: ring all-reduce of share l across hosts; step 3: ring all-gather inside each host.
      return ring_phases(req, name, pieces(req.bytes, n), {intra(true), inter(true), inter(false), intra(false)});
    case CollectiveOp::ReduceScatter:
      // step 1: reduce-scatter shares inside hosts; step 2: reduce-scatter each share across hosts.
      return ring_phases(req, name, per_rank_blocks(req.bytes, n), {intra(true), inter(true)});
    case CollectiveOp::AllGather:
      // step 1: all-gather across hosts among equal local indices; step 2: all-gather the shares inside hosts.
      return ring_phases(req, name, per_rank_blocks(req.bytes, n), {inter(false), intra(false)});
    default: {
      // broadcast: a pipelined chain across hosts through the root's local index, each host's rank on it
      // heading a chain inside its host; reduce: the same tree, edges reversed. Chunks flow into a host's
      // chain as soon as they reach it, so the inter- and intra-host stages overlap.
      const int h0 = req.root / g;
      const int l0 = req.root % g;
      const bool bcast = req.op == CollectiveOp::Broadcast;
      const int dir = bcast ? -1 : 1;
      std::vector<int> parent(n);
      for (int r = 0; r < n; ++r) {
        const int h = r / g;
        const int l = r % g;
        if (l != l0) parent[r] = h * g + mod(l + dir, g);
        else if (h != h0) parent[r] = mod(h + dir, hosts) * g + l0;
        else parent[r] = -1;
      }
      const int p = pipeline_chunks(req.bytes, 64);
      std::vector<PipelinedTree> tree{make_tree(std::move(parent), 0, p)};
      return tree_schedule(req, name, pieces(req.bytes, p), std::move(tree), tree_mode(req.op));
    }
  }
}

// ---- registration ------------------------------------------------------------------------------------

void validate(const std::string& name, const std::set<CollectiveOp>& ops, const CollectiveRequest& req) {
  const std::string who = "collective algorithm '" + name + "': ";
  if (req.ranks < 1) throw InvalidArgument(who + "ranks must be >= 1 (got " + std::to_string(req.ranks) + ")");
  if (req.bytes < 0) throw InvalidArgument(who + "bytes must be >= 0 (got " + std::to_string(req.bytes) + ")");
  if (req.root < 0 || req.root >= req.ranks)
    throw InvalidArgument(who + "root must be in [0, ranks) = [0, " + std::to_string(req.ranks) + ") (got " +
                          std::to_string(req.root) + ")");
  if (!ops.contains(req.op)) {
    std::string msg = "algorithm '" + name + "' does not implement op '" + to_string(req.op) + "'; it implements: ";
    bool first = true;
    for (CollectiveOp op : ops) {
      msg += (first ? "" : ", ") + to_string(op);
      first = false;
    }
    throw InvalidArgument(msg);
  }
  if (req.ranks_per_host < 0 || (req.ranks_per_host > 0 && req.ranks % req.ranks_per_host != 0))
    throw InvalidArgument(who + "ranks_per_host must be 0 or divide ranks (got " + std::to_string(req.ranks_per_host) +
                          " with ranks = " + std::to_string(req.ranks) + ")");
}

using Builder = std::unique_ptr<Schedule> (*)(const CollectiveRequest&, const std::string&);

void add(Registry<CollectiveAlgorithm>& registry, const std::string& name, std::string description,
         std::set<CollectiveOp> ops, Builder builder) {
  auto build = [name, ops, builder](const CollectiveRequest& req) {
    validate(name, ops, req);
    return builder(req, name);
  };
  registry.add(name, std::move(description), CollectiveAlgorithm{std::move(ops), std::move(build)});
}

}  // namespace

Registry<CollectiveAlgorithm> collective_algorithms() {
  using enum CollectiveOp;
  Registry<CollectiveAlgorithm> registry("collective algorithm");
  add(registry, "ring",
      "reduce-scatter then all-gather around one ring of n pieces; pipelined chain for broadcast and reduce",
      {AllReduce, ReduceScatter, AllGather, Broadcast, Reduce}, build_ring);
  add(registry, "tree", "double binary tree (NCCL-style), pipelined, each tree carrying half the data",
      {AllReduce, Broadcast, Reduce}, build_tree);
  add(registry, "rhd",
      "recursive halving-doubling (Rabenseifner), extra ranks folded for non-powers of two; binomial tree "
      "for broadcast and reduce",
      {AllReduce, ReduceScatter, AllGather, Broadcast, Reduce}, build_rhd);
  add(registry, "direct", "every rank sends straight to its destinations: one round (two for all-reduce)",
      {AllReduce, ReduceScatter, AllGather, Broadcast, Reduce, AllToAll}, build_direct);
  add(registry, "hierarchical",
      "ring inside each host, then ring across hosts (needs ranks_per_host); no all-to-all",
      {AllReduce, ReduceScatter, AllGather, Broadcast, Reduce}, build_hierarchical);
  return registry;
}

std::unique_ptr<Schedule> build_schedule(const std::string& algorithm, const CollectiveRequest& request) {
  return collective_algorithms().get(algorithm).build(request);
}

}  // namespace twinbed
