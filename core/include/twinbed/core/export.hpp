// Exporters: a Report as JSON (with provenance) and CSV, a Trace as a Chrome trace event file
// (Perfetto / chrome://tracing), and the atomic file writes they all go through.
//
// Files a run writes (results/<experiment>/): config.json (the resolved config), <backend>.json
// (report + provenance), <backend>_ops.csv (per op kind), <backend>_ranks.csv (per rank), trace.json.
// Keys carry their units (_s, _bytes, _pct). Nothing here prints; failures throw Error.
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/report.hpp"
#include "twinbed/core/trace.hpp"

namespace twinbed {

// Where a figure came from (STYLE.md: results carry config, git revision, machine and time).
struct RunProvenance {
  nlohmann::json config;          // the resolved experiment config
  std::string git_revision;       // commit the binary was built from ("unknown" outside git)
  std::string twinbed_version;
  std::string date;               // UTC, ISO 8601 ("2025-01-31T12:00:00Z")
  std::string hostname;           // the machine that produced the figures
  nlohmann::json extra = nlohmann::json::object();  // backend details: topology, simulator counters, wall time
  bool operator==(const RunProvenance&) const = default;
};

// Fills date (now, UTC) and hostname (gethostname) around the caller's config and build facts.
RunProvenance make_provenance(nlohmann::json config, std::string git_revision, std::string twinbed_version);

// The report alone: {"backend", "world_size", "summary": {...}, "inputs": {...}, "op_kinds": [...],
// "ranks": [...]}.
nlohmann::json report_to_json(const Report& r);
// A results file: report_to_json plus "format": "twinbed-results-1" and "provenance".
nlohmann::json results_json(const Report& r, const RunProvenance& p);

// CSV with a header row, RFC 4180 quoting, "\n" line ends.
// per op kind: kind,count,total_s,per_rank_s,share,flops,bytes
std::string op_kinds_csv(const Report& r);
// per rank: rank,recorded_as,compute_s,exposed_comm_s,bubble_s,communication_s,peak_memory_bytes,fits
std::string ranks_csv(const Report& r);
// One CSV field: quoted (with doubled quotes) when it holds a comma, quote, CR or LF.
std::string csv_field(const std::string& text);
// Parses CSV text written as above (quoted fields may hold commas, quotes and newlines). A trailing
// newline does not add an empty row. Throws InvalidArgument on an unterminated quote.
std::vector<std::vector<std::string>> parse_csv(const std::string& text);

// Chrome trace event format (the JSON object form), one process per Trace (pid = its index, named by
// Trace::backend, so sim and real sit side by side), one thread per (rank, stream): tid = rank·3 +
// stream (compute 0, collective 1, p2p 2), named "rank R compute". Every span is a complete event
// ("ph": "X", "ts" and "dur" in microseconds, "cat" its SpanKind, args micro_batch/bytes/flops);
// memory samples are a counter track per rank ("ph": "C", "name": "rank R memory", args {"GiB"}).
// Only recorded ranks appear; a rank standing for others says so in its thread name. Streams its
// output: memory O(1) beyond the traces.
void write_chrome_trace(std::ostream& out, const std::vector<const Trace*>& traces);

// Writes `path` atomically: `write` fills a temporary file in the same folder, which replaces `path`
// by rename only when everything was written. If `write` throws or the stream fails, the temporary
// file is removed, `path` keeps its old content (or stays absent), and Error (or `write`'s exception)
// propagates. Creates missing parent folders.
void write_file_atomic(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write);
void write_file_atomic(const std::filesystem::path& path, const std::string& content);

// A results folder held by one command while it writes its files, so that a run's files are written as
// one unit: an exclusive lock on `<dir>/.twinbed.lock` (flock; the kernel releases it when the process
// ends, even killed), and the temporaries a killed writer left behind (write_file_atomic's
// `.<file>.tmp-<pid>` of a process no longer alive) removed. Creates the folder. Throws Error naming
// the folder when another command holds it. Take it after the inputs are checked: bad input writes
// nothing. Not copyable; released by the destructor.
class ResultsFolderLock {
 public:
  explicit ResultsFolderLock(const std::filesystem::path& dir);
  ~ResultsFolderLock();
  ResultsFolderLock(const ResultsFolderLock&) = delete;
  ResultsFolderLock& operator=(const ResultsFolderLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace twinbed
