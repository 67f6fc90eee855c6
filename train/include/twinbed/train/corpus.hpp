// The training text: a folder of plain-text files read as bytes (the vocabulary is the 256 byte
// values), cut into a training part and a held-out part once, the same way on every machine.
//
// The default corpus is Debian's `fortunes` package (/usr/share/games/fortunes: about 2.6 MB of
// quotations in some 40 files, each fortune ending with a line holding "%"). The split is by fortune, not by
// position: every `held_out_every`-th fortune of each file (the 10th, 20th, … with 10) goes to the
// held-out text, the rest to the training text, so both parts cover every file's style and no fortune
// is in both. Files are read in name order; strfile's index files (*.dat) and the *.u8 links to the
// same text are skipped. A file without "%" lines is one fortune per blank-line-separated paragraph.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace twinbed::train {

inline constexpr const char* kDefaultCorpus = "/usr/share/games/fortunes";

struct CorpusSpec {
  std::string folder = kDefaultCorpus;
  std::vector<std::string> files;  // names inside `folder`; empty: every text file
  int held_out_every = 10;         // >= 2
  bool operator==(const CorpusSpec&) const = default;
};

struct Corpus {
  std::vector<std::string> files;    // the files read, in order
  std::vector<std::uint8_t> train;   // training text: fortunes back to back
  std::vector<std::uint8_t> held_out;
};

// Throws ConfigError naming `path` + "/..." (the "data" object the spec came from) when the folder or a
// file cannot be read (a missing package says how to install it), a named file is absent, or either
// part ends up shorter than `min_bytes` (a training sequence needs seq_len + 1 bytes).
Corpus load_corpus(const CorpusSpec& spec, std::size_t min_bytes, const std::string& path = "/data");

// Byte-unigram entropy of `text` in nats: −Σ p(b) ln p(b). A model that has learnt only the byte
// frequencies reaches this loss; one that uses context goes below it.
double unigram_entropy(std::span<const std::uint8_t> text);

// Deterministic sampling of training sequences: the start of sequence i of step `step`, uniform in
// [0, text_size − length] from a counter-based hash of (seed, step, i), so every rank draws the same
// global batch without communicating and a rerun draws the same bytes.
std::size_t sequence_start(std::uint64_t seed, std::int64_t step, std::size_t i, std::size_t text_size,
                           std::size_t length);

// Copies `count` sequences of `length` bytes from `text` at `starts` back to back into `out`.
void gather_sequences(std::span<const std::uint8_t> text, std::span<const std::size_t> starts, std::size_t length,
                      std::vector<std::uint8_t>& out);

}  // namespace twinbed::train
