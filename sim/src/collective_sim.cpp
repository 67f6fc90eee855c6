#include "twinbed/sim/collective_sim.hpp"

#include <algorithm>
#include <limits>

#include "twinbed/core/collective_algorithms.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/hash.hpp"

namespace twinbed::sim {

namespace {

// Memo words kept at most (8 bytes each): bounds memory on schedules that never repeat a round.
constexpr std::size_t kMemoWordLimit = std::size_t{32} << 20;

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
  // No link carries two of this round's messages (or the model never shares links): every message
  // then takes exactly its solo time, whatever the start times, and no network run is needed.
  bool contention_free = false;
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
      network_(network_models().get(network_model)),
      routes_(topology),
      network_instance_(network_.make(engine_, routes_)),
      link_use_(static_cast<std::size_t>(topology.num_links()), 0),
      rank_index_(static_cast<std::size_t>(topology.num_ranks()), -1),
      rank_reduce_(static_cast<std::size_t>(topology.num_ranks()), 0) {}

CollectiveSimulator::~CollectiveSimulator() = default;

const CollectiveSimulator::RoundPlan& CollectiveSimulator::plan_round(const Schedule& schedule, int k) {
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
  plan->contention_free = true;
  std::vector<LinkId> used;
  for (auto& m : plan->messages) {
    m.src_index = rank_index_[m.src];
    m.dst_index = rank_index_[m.dst];
    h = hash_combine(hash_combine(hash_combine(h, static_cast<std::uint64_t>(m.src)), static_cast<std::uint64_t>(m.dst)), static_cast<std::uint64_t>(m.bytes));
    if (m.src == m.dst) continue;
    const Path& path = routes_.path(m.src, m.dst);
    m.duration = topology_.path_latency(path) + transfer_time(m.bytes, topology_.path_bandwidth(path));
    for (LinkId l : path) {
      if (link_use_[l]++ > 0 && m.bytes > 0) plan->contention_free = false;
      used.push_back(l);
    }
  }
  for (LinkId l : used) link_use_[l] = 0;
  if (!network_.shares_links) plan->contention_free = true;
  if (!options_.solo_shortcut) plan->contention_free = false;
  for (int r : plan->participants) {
    plan->reduce_time.push_back(reduction_time(rank_reduce_[r], topology_.device(r)));
    h = hash_combine(h, static_cast<std::uint64_t>(rank_reduce_[r]));
    rank_reduce_[r] = 0;
    rank_index_[r] = -1;
  }
  plan->hash = h;
  if (shape >= 0) return *(shapes_[shape] = std::move(plan));
  scratch_plan_ = std::move(plan);
  return *scratch_plan_;
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
  std::vector<Time> ready(static_cast<std::size_t>(n));
  for (int k = 0; k < timing.rounds; ++k) time_round(plan_round(schedule, k), ready, timing);
  timing.rank_done = ready;
  for (Time t : ready) timing.time = std::max(timing.time, t);
  return timing;
}

std::string choose_algorithm(const CollectiveRequest& request, const Topology& topology,
                             const std::string& network_model) {
  CollectiveSimulator sim(topology, network_model);
  std::string best;
  Time best_time = Time::max();
  const auto algorithms = collective_algorithms();
  for (const auto& entry : algorithms.entries()) {
    if (!entry.value.ops.count(request.op)) continue;
    if (entry.name == "direct" && request.ranks > 64) continue;
    std::unique_ptr<Schedule> schedule;
    try {
      schedule = entry.value.build(request);
    } catch (const InvalidArgument&) {
      continue;  // this algorithm cannot serve this request (e.g. its rank grouping); others may
    }
    Time t = sim.run(*schedule).time;
    if (t < best_time) {
      best_time = t;
      best = entry.name;
    }
  }
  if (best.empty()) throw InvalidArgument("no collective algorithm implements op '" + to_string(request.op) + "'");
  return best;
}

}  // namespace twinbed::sim
