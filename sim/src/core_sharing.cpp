#include "twinbed/sim/core_sharing.hpp"

#include <string>
#include <utility>

#include "twinbed/core/error.hpp"

namespace twinbed::sim {

CoreSharing::CoreSharing(Engine& engine, int cores) : engine_(engine), cores_(cores) {
  if (cores < 1) throw InvalidArgument("CoreSharing: cores must be >= 1, got " + std::to_string(cores));
}

void CoreSharing::start(Time alone, Done done) {
  if (running_ < cores_) {
    run({alone, std::move(done)});
  } else {
    waiting_.push_back({alone, std::move(done)});
  }
}

void CoreSharing::run(Op op) {
  ++running_;
  const Time started = engine_.now();
  engine_.schedule_after(op.alone, [this, started, done = std::move(op.done)] {
    --running_;
    // The freed core goes to the op that has waited longest, before this op's dependents ask for one.
    if (!waiting_.empty()) {
      Op next = std::move(waiting_.front());
      waiting_.pop_front();
      run(std::move(next));
    }
    done(started);
  });
}

}  // namespace twinbed::sim
