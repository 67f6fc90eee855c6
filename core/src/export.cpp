#include "twinbed/core/export.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <string_view>

#include "twinbed/core/error.hpp"

namespace twinbed {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// Microseconds with picosecond resolution, as Chrome trace timestamps (fractional microseconds).
std::string micros(std::int64_t ps) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6f", static_cast<double>(ps) * 1e-6);
  return buf;
}

constexpr int kStreams = 3;

// write_file_atomic's temporaries: ".<file name>.tmp-<pid>" beside the file, the pid the writer's. Written
// and read back here only, so the two cannot drift apart.
constexpr std::string_view kTemporaryTag = ".tmp-";

fs::path temporary_for(const fs::path& file) {
  const fs::path folder = file.has_parent_path() ? file.parent_path() : fs::path(".");
  return folder / ("." + file.filename().string() + std::string(kTemporaryTag) + std::to_string(getpid()));
}

// The pid whose writer left the temporary `name`, or nothing when `name` is not such a temporary.
std::optional<pid_t> temporary_owner(const std::string& name) {
  const std::size_t tag = name.rfind(kTemporaryTag);
  if (name.empty() || name[0] != '.' || tag == std::string::npos) return std::nullopt;
  const std::string pid = name.substr(tag + kTemporaryTag.size());
  if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return static_cast<pid_t>(std::stol(pid));
}

}  // namespace

RunProvenance make_provenance(json config, std::string git_revision, std::string twinbed_version) {
  RunProvenance p;
  p.config = std::move(config);
  p.git_revision = git_revision.empty() ? "unknown" : std::move(git_revision);
  p.twinbed_version = std::move(twinbed_version);
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  gmtime_r(&now, &utc);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &utc);
  p.date = date;
  char host[256] = {};
  p.hostname = gethostname(host, sizeof host - 1) == 0 ? host : "unknown";
  return p;
}

json report_to_json(const Report& r) {
  json summary = {{"step_time_s", r.step_time.seconds()},
                  {"tokens_per_s", r.tokens_per_s},
                  {"tflops_per_gpu", r.tflops_per_gpu},
                  {"executed_tflops_per_gpu", r.executed_tflops_per_gpu},
                  {"mfu_pct", 100 * r.mfu},
                  {"compute_pct", 100 * r.compute_fraction},
                  {"exposed_comm_pct", 100 * r.exposed_comm_fraction},
                  {"bubble_pct", 100 * r.bubble_fraction},
                  {"memory_recorded", r.memory_recorded},
                  {"peak_memory_bytes", r.peak_memory},
                  {"peak_memory_rank", r.peak_memory_rank},
                  {"resident_peak_bytes", r.resident_measured ? json(r.resident_peak) : json(nullptr)},
                  {"resident_peak_rank", r.resident_peak_rank},
                  {"memory_fits", r.memory_fits}};
  json inputs = {{"model_flops", r.inputs.model_flops},
                 {"executed_flops", r.inputs.executed_flops},
                 {"tokens", r.inputs.tokens},
                 {"peak_tflops", r.inputs.peak_flops / 1e12},
                 {"device_memory_bytes", r.inputs.device_memory}};
  json kinds = json::array();
  for (const OpKindRow& k : r.op_kinds) {
    kinds.push_back({{"kind", to_string(k.kind)},
                     {"count", k.count},
                     {"total_s", k.total.seconds()},
                     {"per_rank_s", k.per_rank.seconds()},
                     {"share", k.share},
                     {"flops", k.flops},
                     {"bytes", k.bytes}});
  }
  json ranks = json::array();
  for (const RankSummary& s : r.ranks) {
    ranks.push_back({{"rank", s.rank},
                     {"recorded_as", s.recorded_as},
                     {"compute_s", s.compute.seconds()},
                     {"exposed_comm_s", s.exposed_communication.seconds()},
                     {"bubble_s", s.bubble.seconds()},
                     {"communication_s", s.communication.seconds()},
                     {"peak_memory_bytes", s.peak_memory},
                     {"fits", s.fits}});
  }
  return json{{"backend", r.backend}, {"world_size", r.world_size}, {"summary", summary},
              {"inputs", inputs},     {"op_kinds", kinds},          {"ranks", ranks}};
}

json results_json(const Report& r, const RunProvenance& p) {
  json j = report_to_json(r);
  j["format"] = "twinbed-results-1";
  j["provenance"] = {{"config", p.config},     {"git_revision", p.git_revision}, {"twinbed_version", p.twinbed_version},
                     {"date", p.date},         {"hostname", p.hostname},         {"extra", p.extra}};
  return j;
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false;
  bool in_row = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        field += c;
      }
      continue;
    }
    in_row = true;
    if (c == '"') quoted = true;
    else if (c == ',') row.push_back(std::exchange(field, {}));
    else if (c == '\n') {
      row.push_back(std::exchange(field, {}));
      rows.push_back(std::exchange(row, {}));
      in_row = false;
    } else if (c != '\r') field += c;
  }
  if (quoted) throw InvalidArgument("parse_csv: a quoted field is not closed");
  if (in_row) {
    row.push_back(field);
    rows.push_back(row);
  }
  return rows;
}

std::string op_kinds_csv(const Report& r) {
  std::string out = "kind,count,total_s,per_rank_s,share,flops,bytes\n";
  for (const OpKindRow& k : r.op_kinds) {
    out += to_string(k.kind) + "," + std::to_string(k.count) + "," + number(k.total.seconds()) + "," +
           number(k.per_rank.seconds()) + "," + number(k.share) + "," + number(k.flops) + "," + std::to_string(k.bytes) +
           "\n";
  }
  return out;
}

std::string ranks_csv(const Report& r) {
  std::string out = "rank,recorded_as,compute_s,exposed_comm_s,bubble_s,communication_s,peak_memory_bytes,fits\n";
  for (const RankSummary& s : r.ranks) {
    out += std::to_string(s.rank) + "," + std::to_string(s.recorded_as) + "," + number(s.compute.seconds()) + "," +
           number(s.exposed_communication.seconds()) + "," + number(s.bubble.seconds()) + "," +
           number(s.communication.seconds()) + "," + std::to_string(s.peak_memory) + "," + (s.fits ? "true" : "false") +
           "\n";
  }
  return out;
}

void write_chrome_trace(std::ostream& out, const std::vector<const Trace*>& traces) {
  // Written by hand, event by event: a DOM of millions of events would cost gigabytes.
  out << "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n";
  bool first = true;
  const auto event = [&](const std::string& body) {
    out << (first ? "" : ",\n") << body;
    first = false;
  };
  for (std::size_t pid = 0; pid < traces.size(); ++pid) {
    const Trace& t = *traces[pid];
    const std::string p = std::to_string(pid);
    event("{\"name\":\"process_name\",\"ph\":\"M\",\"ts\":0,\"pid\":" + p + ",\"tid\":0,\"args\":{\"name\":" +
          json(t.backend.empty() ? "backend " + p : t.backend).dump() + "}}");
    event("{\"name\":\"process_sort_index\",\"ph\":\"M\",\"ts\":0,\"pid\":" + p + ",\"tid\":0,\"args\":{\"sort_index\":" + p + "}}");

    // Which (rank, stream) threads exist, and how many ranks each recorded rank stands for.
    std::vector<int> stands_for(static_cast<std::size_t>(std::max(t.world_size, 0)), 0);
    for (int r = 0; r < t.world_size; ++r) {
      const int rec = t.recorded_rank.empty() ? r : t.recorded_rank[static_cast<std::size_t>(r)];
      if (rec >= 0 && rec < t.world_size) ++stands_for[static_cast<std::size_t>(rec)];
    }
    std::vector<bool> seen;
    for (const Span& s : t.spans) {
      const std::size_t tid = static_cast<std::size_t>(s.rank) * kStreams + static_cast<std::size_t>(s.stream);
      if (tid >= seen.size()) seen.resize(tid + 1, false);
      seen[tid] = true;
    }
    for (std::size_t tid = 0; tid < seen.size(); ++tid) {
      if (!seen[tid]) continue;
      const int rank = static_cast<int>(tid / kStreams);
      std::string name = "rank " + std::to_string(rank) + " " + to_string(static_cast<StreamKind>(tid % kStreams));
      const int n = rank < static_cast<int>(stands_for.size()) ? stands_for[static_cast<std::size_t>(rank)] : 1;
      if (n > 1) name += " (stands for " + std::to_string(n) + " ranks)";
      event("{\"name\":\"thread_name\",\"ph\":\"M\",\"ts\":0,\"pid\":" + p + ",\"tid\":" + std::to_string(tid) +
            ",\"args\":{\"name\":" + json(name).dump() + "}}");
      event("{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"ts\":0,\"pid\":" + p + ",\"tid\":" + std::to_string(tid) +
            ",\"args\":{\"sort_index\":" + std::to_string(tid) + "}}");
    }

    std::vector<std::string> quoted_names;
    quoted_names.reserve(t.names.size());
    for (const std::string& n : t.names) quoted_names.push_back(json(n).dump());
    for (const Span& s : t.spans) {
      const std::string name = s.name < quoted_names.size() ? quoted_names[s.name] : "\"" + to_string(s.kind) + "\"";
      const std::int64_t tid = static_cast<std::int64_t>(s.rank) * kStreams + static_cast<std::int64_t>(s.stream);
      std::string e = "{\"name\":" + name + ",\"cat\":\"" + to_string(s.kind) + "\",\"ph\":\"X\",\"ts\":" +
                      micros(s.start.picoseconds()) + ",\"dur\":" + micros((s.end - s.start).picoseconds()) +
                      ",\"pid\":" + p + ",\"tid\":" + std::to_string(tid) + ",\"args\":{\"micro_batch\":" +
                      std::to_string(s.micro_batch);
      if (s.bytes) e += ",\"bytes\":" + std::to_string(s.bytes);
      if (s.flops != 0) e += ",\"flops\":" + number(s.flops);
      event(e + "}}");
    }
    for (const MemorySample& m : t.memory) {
      event("{\"name\":\"rank " + std::to_string(m.rank) + " memory\",\"ph\":\"C\",\"ts\":" + micros(m.time.picoseconds()) +
            ",\"pid\":" + p + ",\"tid\":" + std::to_string(static_cast<std::int64_t>(m.rank) * kStreams) +
            ",\"args\":{\"GiB\":" + number(static_cast<double>(m.bytes) / static_cast<double>(GiB)) + "}}");
    }
  }
  out << "\n]}\n";
}

void write_file_atomic(const fs::path& path, const std::function<void(std::ostream&)>& write) {
  const fs::path folder = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) throw Error("cannot create folder " + folder.string() + ": " + ec.message());
  // Same folder, so the rename cannot cross file systems; the pid keeps concurrent writers apart.
  const fs::path temp = temporary_for(path);
  try {
    {
      std::ofstream out(temp, std::ios::binary | std::ios::trunc);
      if (!out) throw Error("cannot write " + temp.string());
      write(out);
      out.flush();
      if (!out) throw Error("writing " + path.string() + " failed (disk full?)");
    }
    fs::rename(temp, path, ec);
    if (ec) throw Error("cannot move " + temp.string() + " to " + path.string() + ": " + ec.message());
  } catch (...) {
    fs::remove(temp, ec);
    throw;
  }
}

void write_file_atomic(const fs::path& path, const std::string& content) {
  write_file_atomic(path, [&](std::ostream& out) { out << content; });
}

ResultsFolderLock::ResultsFolderLock(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create folder " + dir.string() + ": " + ec.message());
  const fs::path lock = dir / ".twinbed.lock";
  fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot create " + lock.string() + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    fd_ = -1;
    throw Error("another twinbed command is writing into " + dir.string() + "; wait for it or use another --out");
  }
  // Temporaries of writers that were killed mid-write (a live writer's pid still runs).
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::optional<pid_t> owner = temporary_owner(entry.path().filename().string());
    if (owner && ::kill(*owner, 0) != 0 && errno == ESRCH) fs::remove(entry.path(), ec);
  }
}

ResultsFolderLock::~ResultsFolderLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

}  // namespace twinbed
