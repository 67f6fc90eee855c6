// The same Plan run by the simulator and by the CPU backend gives the same span set: on every
// recorded rank, the same ops (by their index in the rank's program) on the same streams, with the
// same kind, name, micro-batch and bytes — because both drive one execution core (plan_exec.hpp).
// Timings differ (a model against a measurement); the set of what ran must not.
//
// Runs under mpirun (ctest: 2 and 4 ranks). Every rank runs the CPU backend (run() is collective);
// rank 0 simulates the same plan and compares. EXPECT, not ASSERT, before any call that communicates.
#include <mpi.h>

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "twinbed/core/device.hpp"
#include "twinbed/core/plan.hpp"
#include "twinbed/core/plan_exec.hpp"
#include "twinbed/core/topology_builders.hpp"
#include "twinbed/real/cpu_backend.hpp"
#include "twinbed/real/mpi.hpp"
#include "twinbed/sim/plan_sim.hpp"
#include "support/mpi_world.hpp"
#include "support/plan_cases.hpp"

namespace twinbed {
namespace {

using test::world_rank;
using test::world_size;

using Case = test::PlanCase;
std::vector<Case> cases(int n) { return test::plan_cases(n); }

// What a span says about what ran, without its times.
using Ran = std::tuple<int, int, int, std::uint32_t, std::int32_t, Bytes>;  // op, stream, kind, name, mb, bytes
std::multiset<Ran> ran_on(const Trace& t, int rank) {
  std::multiset<Ran> out;
  for (const Span& s : t.spans)
    if (s.rank == rank)
      out.insert({s.op, static_cast<int>(s.stream), static_cast<int>(s.kind), s.name, s.micro_batch, s.bytes});
  return out;
}

TEST(SameSpans, SimulatorAndCpuBackendRunTheSameOpsOnTheSameStreams) {
  const int n = world_size();
  real::CpuBackendOptions options;
  options.warmup_iters = 0;
  real::CpuBackend cpu(options);
  const Topology topology = topo::single_switch(n, {100 * GBps, Time::us(1)}, device_preset("a100"));
  for (const Case& c : cases(n)) {
    const Trace measured = cpu.run(c.plan);
    if (world_rank() != 0) continue;
    for (sim::Fidelity fidelity : {sim::Fidelity::Full, sim::Fidelity::Representative}) {
      sim::PlanSimOptions so;
      so.fidelity = fidelity;
      const Trace simulated = sim::simulate_plan(c.plan, topology, so);
      const std::string what = c.what + " (" + sim::to_string(fidelity) + ")";
      EXPECT_EQ(simulated.names, measured.names) << what;
      int compared = 0;
      for (int r = 0; r < n; ++r) {
        if (simulated.recorded_rank[static_cast<std::size_t>(r)] != r) continue;  // a stand-in: nothing recorded
        const std::multiset<Ran> sim_ran = ran_on(simulated, r), real_ran = ran_on(measured, r);
        EXPECT_FALSE(sim_ran.empty()) << what << " rank " << r;
        EXPECT_EQ(sim_ran, real_ran) << what << " rank " << r;
        // Each op at most once, and every op that records a span is there.
        std::set<int> ops;
        for (const Ran& x : sim_ran) EXPECT_TRUE(ops.insert(std::get<0>(x)).second) << what << " rank " << r;
        const Program& prog = c.plan.program(r);
        for (std::size_t i = 0; i < prog.size(); ++i) {
          const bool recorded = ops.count(static_cast<int>(i)) > 0;
          EXPECT_EQ(recorded, records_span(prog.ops[i].kind))
              << what << " rank " << r << " op " << i << " (" << to_string(prog.ops[i].kind) << ")";
        }
        // The same live bytes at the end (times differ, so the samples between may merge differently).
        Bytes sim_last = -1, real_last = -1;
        for (const MemorySample& m : simulated.memory)
          if (m.rank == r) sim_last = m.bytes;
        for (const MemorySample& m : measured.memory)
          if (m.rank == r) real_last = m.bytes;
        EXPECT_EQ(sim_last, real_last) << what << " rank " << r;
        ++compared;
      }
      EXPECT_GT(compared, 0) << what;
    }
  }
}

}  // namespace
}  // namespace twinbed
