#include "twinbed/train/corpus.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <iterator>
#include <sstream>

#include "twinbed/core/error.hpp"
#include "twinbed/core/json_read.hpp"

namespace twinbed::train {
namespace fs = std::filesystem;

namespace {

bool is_text_file(const fs::directory_entry& e) {
  const std::string ext = e.path().extension().string();
  return e.is_regular_file() && !e.is_symlink() && ext != ".dat" && ext != ".u8";
}

// The fortunes of one file: runs of lines up to a line that is exactly "%" (strfile's delimiter), or
// blank-line-separated paragraphs when the file has no "%" line. Each keeps its trailing newline.
std::vector<std::string> split_fortunes(const std::string& text) {
  std::vector<std::string> out;
  const bool percent = text.find("\n%\n") != std::string::npos || text.rfind("%\n", 0) == 0;
  std::istringstream in(text);
  std::string line, current;
  auto flush = [&] {
    if (!current.empty()) out.push_back(std::move(current));
    current.clear();
  };
  while (std::getline(in, line)) {
    if (percent ? line == "%" : line.empty()) {
      flush();
      continue;
    }
    current += line;
    current += '\n';
  }
  flush();
  return out;
}

}  // namespace

Corpus load_corpus(const CorpusSpec& spec, std::size_t min_bytes, const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(spec.folder, ec))
    json_read::fail(path + "/folder",
                    json_read::quoted(spec.folder, std::string::npos) +
                        " is not a readable folder" +
                        (spec.folder == kDefaultCorpus ? " (the default corpus is Debian's `fortunes` package: "
                                                         "scripts/install-deps.sh installs it)"
                                                       : ""));
  if (spec.held_out_every < 2) json_read::fail(path + "/held_out_every", "must be >= 2");
  Corpus corpus;
  if (spec.files.empty()) {
    for (const auto& e : fs::directory_iterator(spec.folder, ec))
      if (is_text_file(e)) corpus.files.push_back(e.path().filename().string());
    std::sort(corpus.files.begin(), corpus.files.end());
  } else {
    corpus.files = spec.files;
  }
  for (std::size_t f = 0; f < corpus.files.size(); ++f) {
    const fs::path file = fs::path(spec.folder) / corpus.files[f];
    const std::string where = spec.files.empty() ? path + "/folder" : json_read::child(path + "/files", f);
    if (const std::string why = json_read::unreadable_reason(file, "corpus"); !why.empty())
      json_read::fail(where, json_read::quoted(file.string(), std::string::npos) + " " + why);
    const std::string text = json_read::read_text_file(file, "corpus");
    const auto fortunes = split_fortunes(text);
    for (std::size_t i = 0; i < fortunes.size(); ++i) {
      auto& part = (i + 1) % static_cast<std::size_t>(spec.held_out_every) == 0 ? corpus.held_out : corpus.train;
      part.insert(part.end(), fortunes[i].begin(), fortunes[i].end());
    }
  }
  if (corpus.files.empty()) json_read::fail(path + "/folder", "the folder holds no text files");
  const auto too_short = [&](const std::vector<std::uint8_t>& part, const char* name) {
    if (part.size() < min_bytes)
      json_read::fail(path, std::string("the ") + name + " text has " + std::to_string(part.size()) +
                                   " bytes, fewer than one sequence needs (" + std::to_string(min_bytes) +
                                   "): use more files or a shorter seq_len");
  };
  too_short(corpus.train, "training");
  too_short(corpus.held_out, "held-out");
  return corpus;
}

double unigram_entropy(std::span<const std::uint8_t> text) {
  std::array<std::size_t, 256> count{};
  for (std::uint8_t b : text) ++count[b];
  double h = 0;
  for (std::size_t c : count)
    if (c > 0) {
      const double p = static_cast<double>(c) / static_cast<double>(text.size());
      h -= p * std::log(p);
    }
  return h;
}

namespace {
// splitmix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number generators"; the finaliser
// constants of Vigna's reference code): a well-mixed 64-bit hash of a counter.
std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace

std::size_t sequence_start(std::uint64_t seed, std::int64_t step, std::size_t i, std::size_t text_size,
                           std::size_t length) {
  if (text_size < length) throw InvalidArgument("sequence_start: the text is shorter than one sequence");
  const std::uint64_t h =
      splitmix64(splitmix64(splitmix64(seed) ^ static_cast<std::uint64_t>(step)) ^ static_cast<std::uint64_t>(i));
  return static_cast<std::size_t>(h % (text_size - length + 1));
}

void gather_sequences(std::span<const std::uint8_t> text, std::span<const std::size_t> starts, std::size_t length,
                      std::vector<std::uint8_t>& out) {
  out.resize(starts.size() * length);
  for (std::size_t s = 0; s < starts.size(); ++s) {
    if (starts[s] + length > text.size()) throw InvalidArgument("gather_sequences: a sequence runs past the text");
    std::copy_n(text.begin() + static_cast<std::ptrdiff_t>(starts[s]), length,
                out.begin() + static_cast<std::ptrdiff_t>(s * length));
  }
}

}  // namespace twinbed::train
