#include "twinbed/sim/collective_sim.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/hash.hpp"

namespace twinbed::sim {

namespace {

// Memo words kept at most (8 bytes each): bounds memory on schedules that never repeat a round.
constexpr std::size_t kMemoWordLimit = std::size_t{32} << 20;

// Whether a rate is a whole number of bytes per second below 2^53, where the flow network's sums,
// differences and quotients of such rates are exact.
bool whole_rate(double rate) { return rate < 9007199254740992.0 && std::floor(rate) == rate; }

// Whether messages whose solo rates sum to `load` all keep their solo rates on a link of `capacity`
// under the flow network's max-min sharing, in its floating-point arithmetic, whichever of them are
// active: the load is below the capacity by a relative margin no rounding of these sums crosses, or
// it equals the capacity and every rate involved is whole (bandwidths in B/s usually are).
bool fits_exactly(double load, double capacity, bool whole) {
  constexpr double kMargin = 1e-9;
  return load <= capacity * (1 - kMargin) || (load == capacity && whole && whole_rate(capacity));
}

}  // namespace

// One round as the network sees it: messages (transfers merged per (src, dst)) and reduce work.
struct CollectiveSimulator::RoundPlan {
  struct Message {
    int src;
    int dst;
    Bytes bytes;
    int src_index;  // into participants
    int dst_index;
    Time duration;  // when contention_free: latency + drain time alone on its path
  };
  std::vector<Message> messages;
  std::vector<int> participants;  // sorted, unique
  std::vector<Time> reduce_time;  // per participant
  std::uint64_t hash = 0;         // of messages and reduce work, for the memo
  // Every message keeps its solo rate whatever the start times (see fits_exactly), or the model never
  // shares links: every message takes exactly its solo time and no network run is needed.
  bool contention_free = false;
  // Contention-free rounds: the smallest rank shift g (a divisor of the rank count n) that maps the
  // round onto itself: message s -> d onto a message s+g -> d+g (mod n) of equal duration, participant
  // r onto a participant r+g of equal reduce time. n when no smaller shift does.
  int period = 0;
  // Contention-free rounds: messages by sender and by receiver, message indices grouped per rank:
  // rank r's are [by_src_begin[r], by_src_begin[r + 1]) in by_src (likewise by_dst).
  std::vector<int> by_src_begin, by_src, by_dst_begin, by_dst;
};

struct CollectiveSimulator::MemoEntry {
  std::uint64_t pattern;
  std::vector<std::int64_t> start;  // per participant, relative to the earliest
  std::vector<std::int64_t> end;    // per participant, relative to the same origin
};

Time reduction_time(Bytes bytes, const DeviceSpec& device) {
  if (bytes <= 0 || device.memory_bandwidth <= 0) return Time{};
  return transfer_time(3 * bytes, device.memory_bandwidth);
}

CollectiveSimulator::CollectiveSimulator(const Topology& topology, const std::string& network_model)
    : CollectiveSimulator(topology, network_model, Options{}) {}

CollectiveSimulator::CollectiveSimulator(const Topology& topology, const std::string& network_model, Options options)
    : topology_(topology),
      options_(options),
      network_name_(network_model),
      network_(network_models().get(network_model)),
      routes_(topology),
      network_instance_(network_.make(engine_, routes_)),
      link_use_(static_cast<std::size_t>(topology.num_links()), 0),
      link_load_(static_cast<std::size_t>(topology.num_links()), 0.0),
      link_fractional_(static_cast<std::size_t>(topology.num_links()), 0),
      rank_index_(static_cast<std::size_t>(topology.num_ranks()), -1),
      rank_reduce_(static_cast<std::size_t>(topology.num_ranks()), 0) {}

CollectiveSimulator::~CollectiveSimulator() = default;

const CollectiveSimulator::RoundPlan& CollectiveSimulator::plan_round(const Schedule& schedule, int k) {
  const int n = schedule.request().ranks;
  int shape = schedule.round_shape(k);
  if (shape >= 0) {
    auto it = shapes_.find(shape);
    if (it != shapes_.end()) return *it->second;
  }
  auto plan = std::make_unique<RoundPlan>();
  schedule.round(k, transfers_);
  const auto& chunks = schedule.chunks();
  message_of_pair_.clear();
  for (const Transfer& t : transfers_) {
    Bytes b = chunks.at(static_cast<std::size_t>(t.chunk)).bytes;
    std::uint64_t pair = (static_cast<std::uint64_t>(t.src) << 32) | static_cast<std::uint32_t>(t.dst);
    auto [it, fresh] = message_of_pair_.emplace(pair, plan->messages.size());
    if (fresh) plan->messages.push_back({t.src, t.dst, 0, -1, -1, Time{}});
    plan->messages[it->second].bytes += b;
    if (t.reduce) rank_reduce_[t.dst] += b;
    for (int r : {t.src, t.dst}) {
      if (rank_index_[r] < 0) {
        rank_index_[r] = 0;
        plan->participants.push_back(r);
      }
    }
  }
  std::sort(plan->participants.begin(), plan->participants.end());
  for (std::size_t i = 0; i < plan->participants.size(); ++i) rank_index_[plan->participants[i]] = static_cast<int>(i);

  std::uint64_t h = 0;
  used_.clear();
  for (auto& m : plan->messages) {
    m.src_index = rank_index_[m.src];
    m.dst_index = rank_index_[m.dst];
    h = hash_combine(hash_combine(hash_combine(h, static_cast<std::uint64_t>(m.src)), static_cast<std::uint64_t>(m.dst)), static_cast<std::uint64_t>(m.bytes));
    if (m.src == m.dst) continue;
    const Path& path = routes_.path(m.src, m.dst);
    const BytesPerSec solo_rate = topology_.path_bandwidth(path);
    m.duration = topology_.path_latency(path) + transfer_time(m.bytes, solo_rate);
    if (m.bytes <= 0) continue;  // an empty message occupies no link
    for (LinkId l : path) {
      if (link_use_[l]++ == 0) used_.push_back(l);
      link_load_[l] += solo_rate;
      if (!whole_rate(solo_rate)) link_fractional_[l] = 1;
    }
  }
  plan->contention_free = std::all_of(used_.begin(), used_.end(), [&](LinkId l) {
    return link_use_[l] == 1 || fits_exactly(link_load_[l], topology_.link(l).bandwidth, !link_fractional_[l]);
  });
  for (LinkId l : used_) {
    link_use_[l] = 0;
    link_load_[l] = 0;
    link_fractional_[l] = 0;
  }
  if (!network_.shares_links) plan->contention_free = true;
  if (!options_.solo_shortcut) plan->contention_free = false;
  for (int r : plan->participants) {
    plan->reduce_time.push_back(reduction_time(rank_reduce_[r], topology_.device(r)));
    h = hash_combine(h, static_cast<std::uint64_t>(rank_reduce_[r]));
    rank_reduce_[r] = 0;
    rank_index_[r] = -1;
  }
  plan->hash = h;
  plan->period = n;
  // Only rounds with a shape id: the search costs about what generating the round does, paid once.
  if (plan->contention_free && options_.symmetric_rounds && shape >= 0) find_period(*plan, n);
  if (shape >= 0) return *(shapes_[shape] = std::move(plan));
  scratch_plan_ = std::move(plan);
  return *scratch_plan_;
}

void CollectiveSimulator::find_period(RoundPlan& plan, int n) {
  const auto index = [n](const auto& messages, auto rank_of, std::vector<int>& begin, std::vector<int>& list) {
    begin.assign(static_cast<std::size_t>(n) + 1, 0);
    for (const auto& m : messages) ++begin[static_cast<std::size_t>(rank_of(m)) + 1];
    for (int r = 0; r < n; ++r) begin[static_cast<std::size_t>(r) + 1] += begin[static_cast<std::size_t>(r)];
    list.assign(messages.size(), 0);
    std::vector<int> next(begin.begin(), begin.end() - 1);
    for (std::size_t i = 0; i < messages.size(); ++i) list[static_cast<std::size_t>(next[static_cast<std::size_t>(rank_of(messages[i]))]++)] = static_cast<int>(i);
  };
  index(plan.messages, [](const RoundPlan::Message& m) { return m.src; }, plan.by_src_begin, plan.by_src);
  index(plan.messages, [](const RoundPlan::Message& m) { return m.dst; }, plan.by_dst_begin, plan.by_dst);

  const auto& parts = plan.participants;
  const auto maps_onto_itself = [&](int g) {
    if (parts.size() % static_cast<std::size_t>(n / g) != 0) return false;  // a union of shift orbits
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const int image = (parts[i] + g) % n;
      const auto it = std::lower_bound(parts.begin(), parts.end(), image);
      if (it == parts.end() || *it != image || plan.reduce_time[static_cast<std::size_t>(it - parts.begin())] != plan.reduce_time[i]) return false;
    }
    for (const auto& m : plan.messages) {
      const int src = (m.src + g) % n;
      const int dst = (m.dst + g) % n;
      bool found = false;
      for (int j = plan.by_src_begin[static_cast<std::size_t>(src)]; !found && j < plan.by_src_begin[static_cast<std::size_t>(src) + 1]; ++j) {
        const auto& o = plan.messages[static_cast<std::size_t>(plan.by_src[static_cast<std::size_t>(j)])];
        found = o.dst == dst && o.duration == m.duration;
      }
      if (!found) return false;
    }
    return true;
  };
  for (int g = 1; g < n; ++g) {
    if (n % g == 0 && maps_onto_itself(g)) {
      plan.period = g;
      return;
    }
  }
}

void CollectiveSimulator::time_symmetric_round(const RoundPlan& plan, int period, int q, std::vector<Time>& rep) {
  // rep holds ready(r) = rep[r % period]; the round maps onto itself under a shift by q (a multiple of
  // period and of plan.period), so afterwards ready(r) = next[r % q]. The same arithmetic as time_round's
  // contention-free branch, done for ranks 0 .. q-1 only.
  const auto ready = [&](int r) { return rep[static_cast<std::size_t>(r % period)]; };
  const auto& parts = plan.participants;
  next_.resize(static_cast<std::size_t>(q));
  for (int c = 0; c < q; ++c) {
    const Time start = ready(c);
    Time& out = next_[static_cast<std::size_t>(c)];
    out = start;
    const auto it = std::lower_bound(parts.begin(), parts.end(), c);
    if (it == parts.end() || *it != c) continue;  // not in this round
    Time sent = start;
    Time received = start;
    for (int j = plan.by_src_begin[static_cast<std::size_t>(c)]; j < plan.by_src_begin[static_cast<std::size_t>(c) + 1]; ++j) {
      sent = std::max(sent, start + plan.messages[static_cast<std::size_t>(plan.by_src[static_cast<std::size_t>(j)])].duration);
    }
    for (int j = plan.by_dst_begin[static_cast<std::size_t>(c)]; j < plan.by_dst_begin[static_cast<std::size_t>(c) + 1]; ++j) {
      const auto& m = plan.messages[static_cast<std::size_t>(plan.by_dst[static_cast<std::size_t>(j)])];
      received = std::max(received, ready(m.src) + m.duration);
    }
    out = std::max(sent, received + plan.reduce_time[static_cast<std::size_t>(it - parts.begin())]);
  }
  rep.swap(next_);
}

void CollectiveSimulator::time_round(const RoundPlan& plan, std::vector<Time>& ready, CollectiveTiming& timing) {
  const auto& parts = plan.participants;
  if (parts.empty()) return;
  sent_.assign(parts.size(), Time{});
  received_.assign(parts.size(), Time{});
  for (std::size_t i = 0; i < parts.size(); ++i) sent_[i] = received_[i] = ready[parts[i]];

  if (plan.contention_free) {
    // Every message takes its solo time: no network run, no memo needed.
    for (const auto& m : plan.messages) {
      Time done = ready[m.src] + m.duration;
      sent_[m.src_index] = std::max(sent_[m.src_index], done);
      received_[m.dst_index] = std::max(received_[m.dst_index], done);
    }
    for (std::size_t i = 0; i < parts.size(); ++i) ready[parts[i]] = std::max(sent_[i], received_[i] + plan.reduce_time[i]);
    return;
  }

  Time base = Time::max();
  for (int r : parts) base = std::min(base, ready[r]);

  // Replay a round seen before with the same relative start times.
  std::uint64_t key = plan.hash;
  for (int r : parts) key = hash_combine(key, static_cast<std::uint64_t>((ready[r] - base).picoseconds()));
  auto& bucket = memo_[key];
  for (const MemoEntry& e : bucket) {
    if (e.pattern != plan.hash) continue;
    bool same = true;
    for (std::size_t i = 0; same && i < parts.size(); ++i) same = e.start[i] == (ready[parts[i]] - base).picoseconds();
    if (!same) continue;
    for (std::size_t i = 0; i < parts.size(); ++i) ready[parts[i]] = base + Time::ps(e.end[i]);
    return;
  }

  // Simulate it on a fresh network, with time measured from `base`: every message starts when its
  // sender enters the round.
  ++timing.rounds_simulated;
  for (std::size_t i = 0; i < parts.size(); ++i) sent_[i] = received_[i] = ready[parts[i]] - base;
  engine_.rewind();
  for (const auto& m : plan.messages) {
    engine_.schedule_at(sent_[m.src_index], [this, &m] {
      network_instance_->start_flow(m.src, m.dst, m.bytes, [this, &m] {
        sent_[m.src_index] = std::max(sent_[m.src_index], engine_.now());
        received_[m.dst_index] = std::max(received_[m.dst_index], engine_.now());
      });
    });
  }
  engine_.run();

  MemoEntry entry{plan.hash, std::vector<std::int64_t>(parts.size()), std::vector<std::int64_t>(parts.size())};
  for (std::size_t i = 0; i < parts.size(); ++i) {
    entry.start[i] = (ready[parts[i]] - base).picoseconds();
    entry.end[i] = std::max(sent_[i], received_[i] + plan.reduce_time[i]).picoseconds();
    ready[parts[i]] = base + Time::ps(entry.end[i]);
  }
  if (options_.replay_rounds && memo_words_ + 2 * parts.size() <= kMemoWordLimit) {
    memo_words_ += 2 * parts.size();
    bucket.push_back(std::move(entry));
  }
}

CollectiveTiming CollectiveSimulator::run(const Schedule& schedule) {
  const int n = schedule.request().ranks;
  if (n != topology_.num_ranks()) {
    throw InvalidArgument("collective on " + std::to_string(n) + " ranks, but the topology has " +
                          std::to_string(topology_.num_ranks()) + " (ranks must match)");
  }
  shapes_.clear();  // shape ids belong to one schedule
  CollectiveTiming timing;
  timing.rounds = schedule.num_rounds();
  // While every round so far mapped onto itself under rank shifts, the ready times repeat with the
  // least common multiple of their periods: ready(r) = rep[r % period], and a round costs what its
  // first `period` ranks do. Any other round needs every rank's ready time from then on.
  int period = 1;
  std::vector<Time> rep(1, Time{});
  std::vector<Time> ready;
  const auto expand = [&] {
    ready.resize(static_cast<std::size_t>(n));
    for (int r = 0; r < n; ++r) ready[static_cast<std::size_t>(r)] = rep[static_cast<std::size_t>(r % period)];
    period = n;
  };
  for (int k = 0; k < timing.rounds; ++k) {
    const RoundPlan& plan = plan_round(schedule, k);
    if (period < n) {
      const int q = plan.contention_free ? std::lcm(period, plan.period) : n;
      if (q < n) {
        time_symmetric_round(plan, period, q, rep);
        period = q;
        ++timing.rounds_symmetric;
        continue;
      }
      expand();
    }
    time_round(plan, ready, timing);
  }
  if (period < n) expand();
  timing.rank_done = ready;
  for (Time t : ready) timing.time = std::max(timing.time, t);
  return timing;
}

namespace {

// Algorithms whose schedules list O(ranks^2) transfers, and the rank count above which choosing leaves
// them out: direct sends to every peer in one round; rhd moves one transfer per block, ranks^2 / 2 in
// its first round (134 million, 2 GiB of transfers, at 16,384 ranks), which neither costing nor
// simulating can afford.
bool beyond_costing(const std::string& algorithm, int ranks) {
  return (algorithm == "direct" && ranks > 64) || (algorithm == "rhd" && ranks > 4096);
}

}  // namespace

Time estimate_time(const Schedule& schedule, const Topology& topology, RouteCache& routes, bool contention) {
  const auto& chunks = schedule.chunks();
  std::unordered_map<int, Time> shape_cost;
  std::unordered_map<std::uint64_t, Bytes> pair_bytes;
  std::vector<Transfer> transfers;
  std::vector<double> load(static_cast<std::size_t>(topology.num_links()), 0.0);
  std::vector<LinkId> loaded;
  std::unordered_map<int, Bytes> reduced;
  Time total;
  for (int k = 0; k < schedule.num_rounds(); ++k) {
    const int shape = schedule.round_shape(k);
    if (shape >= 0) {
      const auto it = shape_cost.find(shape);
      if (it != shape_cost.end()) {
        total += it->second;
        continue;
      }
    }
    schedule.round(k, transfers);
    pair_bytes.clear();
    reduced.clear();
    for (const Transfer& t : transfers) {
      const Bytes b = chunks.at(static_cast<std::size_t>(t.chunk)).bytes;
      pair_bytes[(static_cast<std::uint64_t>(t.src) << 32) | static_cast<std::uint32_t>(t.dst)] += b;
      if (t.reduce) reduced[t.dst] += b;
    }
    Time slowest;
    for (const auto& [pair, bytes] : pair_bytes) {
      const int src = static_cast<int>(pair >> 32);
      const int dst = static_cast<int>(pair & 0xffffffffu);
      if (src == dst) continue;
      const Path& path = routes.path(src, dst);
      slowest = std::max(slowest, topology.path_latency(path) + transfer_time(bytes, topology.path_bandwidth(path)));
      if (!contention || bytes <= 0) continue;
      for (LinkId l : path) {
        if (load[l] == 0) loaded.push_back(l);
        load[l] += static_cast<double>(bytes);
      }
    }
    for (LinkId l : loaded) {
      slowest = std::max(slowest, drain_time(load[l], topology.link(l).bandwidth));
      load[l] = 0;
    }
    loaded.clear();
    Time reducing;
    for (const auto& [rank, bytes] : reduced) reducing = std::max(reducing, reduction_time(bytes, topology.device(rank)));
    const Time round = slowest + reducing;
    total += round;
    if (shape >= 0) shape_cost.emplace(shape, round);
  }
  return total;
}

std::string choose_algorithm(const CollectiveRequest& request, const Topology& topology, const std::string& network_model,
                             const PlaceFn& place) {
  RouteCache routes(topology);
  const bool contention = network_models().get(network_model).shares_links;
  std::string best;
  Time best_time = Time::max();
  const auto algorithms = collective_algorithms();
  for (const auto& entry : algorithms.entries()) {
    if (!entry.value.ops.count(request.op)) continue;
    if (beyond_costing(entry.name, request.ranks)) continue;
    std::shared_ptr<const Schedule> schedule;
    try {
      schedule = entry.value.build(request);
    } catch (const InvalidArgument&) {
      continue;  // this algorithm cannot serve this request (e.g. its rank grouping); others may
    }
    const Time t = place ? estimate_time(*place(schedule), topology, routes, contention)
                         : estimate_time(*schedule, topology, routes, contention);
    if (t < best_time) {
      best_time = t;
      best = entry.name;
    }
  }
  if (best.empty()) throw InvalidArgument("no collective algorithm implements op '" + to_string(request.op) + "'");
  return best;
}

}  // namespace twinbed::sim
