// Timing a collective Schedule on a simulated cluster.
//
// Model (the same contract the real backend executes, core/schedule.hpp): a rank enters round k+1
// when its own round-k work is done: every message it sent has been delivered, every message it
// receives has arrived, and the chunks it must reduce have been reduced. A message starts when its
// sender enters the round. Reducing b bytes costs 3b / memory bandwidth of the receiving device (read
// two operands, write one), after its last message of the round has arrived; a device with no memory
// bandwidth in its spec reduces for free.
//
// Rounds are timed one after another, each on a fresh network: messages of one round contend with each
// other, never with another round's (an approximation only where a fast rank's next round would
// overlap a slow rank's current one on a shared link). Bound: exact where ranks stay in step or the
// overlapping rounds share no link; against timing every round on one network, every registered
// algorithm's all-reduce, all-gather, reduce-scatter and all-to-all on 8 ranks of a 2:1
// oversubscribed fat tree and of a ring is within 5% (worst seen 3.0%:
// test_collective_sim, RoundByRoundIsWithinItsBoundOfOneNetwork, which checks it).
//
// Speed, without approximation:
//  - A round in which every message keeps its solo rate (the bottleneck bandwidth of its path) under
//    max-min sharing, whichever of its messages are active, is contention-free: each message then
//    takes its solo time (latency + bytes / solo rate), exactly what the flow model gives it, so the
//    round is timed in O(messages) with no network run. That holds when each link carries one message,
//    or the solo rates of those crossing it fit in its capacity (checked once per round shape; see
//    fits_exactly). A ring on a non-blocking cluster is such a round, which makes a ring all-reduce on
//    4,096 ranks cost O(ranks x rounds) additions.
//  - A contention-free round that maps onto itself when every rank r is renamed r + g (mod ranks) —
//    message for message, with equal durations and reduce times — turns ready times that repeat with
//    period p into ones that repeat with lcm(p, g). Starting from equal ready times, such rounds are
//    timed on one period of ranks: a ring on a cluster of identical 8-GPU nodes, on 8 ranks whatever
//    the cluster's size. The period of each round shape is found once.
//  - Otherwise a round's outcome depends only on its message pattern and on its participants' start
//    times relative to the earliest of them (the network is shift-invariant in time), so the simulator
//    memoises (pattern, relative start times) -> relative end times and replays repeated rounds.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "twinbed/core/schedule.hpp"
#include "twinbed/core/topology.hpp"
#include "twinbed/sim/network.hpp"

namespace twinbed::sim {

struct CollectiveTiming {
  Time time;                   // all ranks start at 0; the time the last rank finishes
  std::vector<Time> rank_done; // per rank
  int rounds = 0;              // rounds in the schedule
  int rounds_simulated = 0;    // rounds run through the network (the others were replayed)
  int rounds_symmetric = 0;    // rounds timed on one period of ranks (see symmetric_rounds)
  bool operator==(const CollectiveTiming&) const = default;
};

// Reduction cost of `bytes` on `device` (see the model above).
Time reduction_time(Bytes bytes, const DeviceSpec& device);

class CollectiveSimulator {
 public:
  struct Options {
    // Replay repeated rounds from the memo (exact; see above). Off: every round goes through the
    // network, which tests use to check that replaying changes nothing.
    bool replay_rounds = true;
    // Time contention-free rounds arithmetically (exact; see above). Off: through the network too.
    bool solo_shortcut = true;
    // Time contention-free rounds that map onto themselves under a rank shift on one period of ranks
    // (exact; see above). Off: on every rank.
    bool symmetric_rounds = true;
  };
  // `network_model` is a name from network_models(); throws UnknownName otherwise. Borrows topology.
  CollectiveSimulator(const Topology& topology, const std::string& network_model);
  CollectiveSimulator(const Topology& topology, const std::string& network_model, Options options);
  ~CollectiveSimulator();

  // Throws InvalidArgument if the schedule's rank count differs from the topology's.
  CollectiveTiming run(const Schedule& schedule);
  // The routes this simulator uses (and caches), for callers that reason about the same paths.
  RouteCache& routes() { return routes_; }
  const std::string& network_model() const { return network_name_; }

 private:
  struct RoundPlan;
  struct MemoEntry;
  const RoundPlan& plan_round(const Schedule& schedule, int k);
  void time_round(const RoundPlan& plan, std::vector<Time>& ready, CollectiveTiming& timing);
  void find_period(RoundPlan& plan, int n);
  void time_symmetric_round(const RoundPlan& plan, int period, int q, std::vector<Time>& rep);

  const Topology& topology_;
  Options options_;
  std::string network_name_;
  NetworkModel network_;
  RouteCache routes_;
  Engine engine_;                      // rewound for every round that needs a network run
  std::unique_ptr<Network> network_instance_;  // on engine_, idle between rounds
  // Scratch, reused across rounds: all zero / -1 between uses.
  std::vector<int> link_use_;          // messages of the round being planned on each link
  std::vector<double> link_load_;      // the sum of their solo rates
  std::vector<char> link_fractional_;  // whether one of those rates is not a whole number
  std::vector<LinkId> used_;           // the links they cross
  std::vector<int> rank_index_;
  std::vector<Bytes> rank_reduce_;
  std::unordered_map<std::uint64_t, std::size_t> message_of_pair_;
  std::vector<Time> sent_, received_;  // per participant
  std::vector<Time> next_;             // time_symmetric_round's result, swapped in
  std::vector<Transfer> transfers_;                         // scratch
  std::unique_ptr<RoundPlan> scratch_plan_;                  // rounds without a shape id
  std::unordered_map<int, std::unique_ptr<RoundPlan>> shapes_;  // per schedule run
  std::unordered_map<std::uint64_t, std::vector<MemoEntry>> memo_;
  std::size_t memo_words_ = 0;
};

// A cost model for choosing among algorithms, not a timing: the schedule's rounds in lockstep, each as
// long as its slowest message alone (latency + bytes / path bottleneck) or, with `contention`, as the
// time its most loaded link takes to carry every byte crossing it, whichever is longer, plus its
// largest reduction. Round shapes are costed once, so a ring on any number of ranks costs a few rounds'
// messages. The flow simulator is exact where rounds are lockstep and contention-free (a ring on a
// switch); elsewhere this is the alpha-beta-with-congestion estimate such tuners use.
Time estimate_time(const Schedule& schedule, const Topology& topology, RouteCache& routes, bool contention);

// Places a schedule on the topology's ranks (e.g. onto a communicator's), for choose_algorithm.
using PlaceFn = std::function<std::unique_ptr<Schedule>(std::shared_ptr<const Schedule>)>;

// The cheapest schedule ("auto" where NCCL's model does not apply, group_collectives.hpp; `compare`'s
// "auto"): every registered algorithm that implements the op is costed by
// estimate_time on this topology (after `place`, when given; with its contention term unless the
// network model never shares links), and the cheapest wins (ties: registration order). Nothing is
// simulated, so choosing costs about one round per round shape of each candidate. "direct" is left out
// above 64 ranks and "rhd" above 4,096, where their O(ranks^2) transfers make them costly to list.
std::string choose_algorithm(const CollectiveRequest& request, const Topology& topology,
                             const std::string& network_model = "flow", const PlaceFn& place = {});

}  // namespace twinbed::sim
