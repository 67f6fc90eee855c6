// The two Ranks of trainer.hpp: a job of one, and the MPI job through real::DataCollectives.
#include <algorithm>
#include <memory>

#include "twinbed/core/error.hpp"
#include "twinbed/real/data_collectives.hpp"
#include "twinbed/train/trainer.hpp"

namespace twinbed::train {
namespace {

class SoloRanks final : public Ranks {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce(std::span<float>) override {}
  void all_gather(std::span<const float> mine, std::span<float> all) override {
    if (all.size() != mine.size())
      throw InvalidArgument("all_gather: the output has " + std::to_string(all.size()) + " floats, the input " +
                            std::to_string(mine.size()));
    std::copy(mine.begin(), mine.end(), all.begin());
  }
  std::int64_t bytes_sent() const override { return 0; }
};

class MpiRanks final : public Ranks {
 public:
  explicit MpiRanks(const std::string& algorithm) : dc_(algorithm) {}
  int rank() const override { return dc_.rank(); }
  int size() const override { return dc_.ranks(); }
  void all_reduce(std::span<float> data) override { dc_.all_reduce(data); }
  void all_gather(std::span<const float> mine, std::span<float> all) override { dc_.all_gather(mine, all); }
  std::int64_t bytes_sent() const override { return dc_.bytes_sent(); }

 private:
  real::DataCollectives dc_;
};

}  // namespace

std::unique_ptr<Ranks> solo_ranks() { return std::make_unique<SoloRanks>(); }
std::unique_ptr<Ranks> mpi_ranks(const std::string& algorithm) { return std::make_unique<MpiRanks>(algorithm); }

}  // namespace twinbed::train
