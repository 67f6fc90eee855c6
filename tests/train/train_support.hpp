// Shared by the training tests: a corpus folder of the tests' own and a small config over it.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace twinbed::train::test {

// A corpus folder of our own, so the tests do not depend on the fortunes package: text with structure
// a model learns quickly (12 words from a list of 10 per fortune, each fortune ended by a "%" line), and
// an index file the loader must skip. One per process (ranks of an MPI test each have their own),
// removed at exit.
struct TestCorpus {
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("twinbed-train-corpus-" + std::to_string(::getpid()));
  TestCorpus() {
    std::filesystem::create_directories(dir);
    std::ofstream out(dir / "sayings");
    const char* words[] = {"the ", "cat ", "sat ", "on ", "a ", "mat ", "and ", "dog ", "ran ", "far "};
    std::uint64_t x = 12345;
    for (int f = 0; f < 400; ++f) {
      for (int w = 0; w < 12; ++w) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;  // Knuth's MMIX linear congruential step
        out << words[(x >> 33) % 10];
      }
      out << "\n%\n";
    }
    std::ofstream(dir / "sayings.dat") << "binary index, skipped";
  }
  ~TestCorpus() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

inline const std::filesystem::path& test_corpus() {
  static const TestCorpus corpus;
  return corpus.dir;
}

inline nlohmann::json small_config(nlohmann::json variants = nlohmann::json::array({{{"name", "baseline"}}})) {
  return {{"name", "t"},
          {"model", {{"layers", 2}, {"hidden", 32}, {"heads", 2}, {"seq_len", 16}}},
          {"data", {{"folder", test_corpus().string()}}},
          {"training", {{"steps", 40}, {"global_batch", 4}, {"lr", 0.01}, {"warmup_steps", 5}, {"eval_every", 20}, {"eval_batches", 2}}},
          {"ranks", 1},
          {"variants", variants}};
}

}  // namespace twinbed::train::test
