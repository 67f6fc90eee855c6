// twinbed sweep: every point of a config's "sweep" on the simulator, one CSV row per point.
//
// Resuming: rows are keyed by point id; a point with an ok row (in sweep.csv or a part file) is
// skipped; a point whose row is an error runs again. Every write is atomic (the whole table is rewritten to a temporary and renamed),
// so an interrupted sweep loses at most the point in progress.
//
// Under a launcher (mpirun -np N; srun) ranks are read from OMPI_COMM_WORLD_RANK/SIZE, PMI_RANK/SIZE,
// PMIX_RANK/SIZE or SLURM_PROCID/NTASKS, a rank and a size both needed (no MPI calls): rank r takes points i % N == r and writes sweep.part-r-of-N.csv; rank 0,
// once its own points are done, waits until every point has a row in some part, merges them into
// sweep.csv and removes the parts. The output folder must be shared by the ranks (one machine, or a
// shared file system). `twinbed sweep --merge` merges whatever parts exist, e.g. after a rank died.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "run_experiment.hpp"
#include "twinbed/core/error.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/core/export.hpp"
#include "twinbed/core/json_read.hpp"

namespace twinbed::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct SweepOptions {
  std::string experiment;
  std::optional<std::string> out;
  bool merge_only = false;
};

struct LaunchRank {
  int rank = 0;
  int size = 1;
};

// The launcher's rank and size from its environment; (0, 1) when not launched by one.
LaunchRank launch_rank() {
  const auto read = [](const char* name) -> std::optional<int> {
    const char* v = std::getenv(name);
    if (!v || !*v) return std::nullopt;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (*end != '\0' || n < 0 || n > (1 << 24)) {
      throw ConfigError(std::string("$") + name, "not a rank number: " + json_read::quoted(v));
    }
    return static_cast<int>(n);
  };
  for (auto [r, s] : {std::pair{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"}, {"PMI_RANK", "PMI_SIZE"},
                      {"PMIX_RANK", "PMIX_SIZE"}, {"SLURM_PROCID", "SLURM_NTASKS"}}) {
    const auto rank = read(r);
    const auto size = read(s);
    if (rank && size) {
      if (*size < 1 || *rank >= *size) throw ConfigError(std::string("$") + r, "rank outside the launcher's size");
      return {*rank, *size};
    }
  }
  return {};
}

std::string value_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

std::vector<std::string> header(const std::vector<SweepAxis>& axes) {
  std::vector<std::string> h = {"point", "index"};
  for (const SweepAxis& a : axes) h.push_back(a.pointer);
  for (const char* c : {"status", "step_time_s", "tokens_per_s", "tflops_per_gpu", "mfu_pct", "compute_pct",
                        "exposed_comm_pct", "bubble_pct", "peak_memory_GiB", "memory_fits", "wall_s", "error"}) {
    h.push_back(c);
  }
  return h;
}

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

using Row = std::vector<std::string>;

Row ok_row(const SweepPoint& p, const SimRun& run) {
  const Report& r = run.report;
  Row row = {p.id, std::to_string(p.index)};
  for (const json& v : p.values) row.push_back(value_text(v));
  for (const std::string& s :
       {std::string("ok"), number(r.step_time.seconds()), number(r.tokens_per_s), number(r.tflops_per_gpu), number(100 * r.mfu),
        number(100 * r.compute_fraction), number(100 * r.exposed_comm_fraction), number(100 * r.bubble_fraction),
        number(static_cast<double>(r.peak_memory) / static_cast<double>(GiB)),
        std::string(r.memory_recorded ? (r.memory_fits ? "true" : "false") : ""), number(run.wall_s), std::string()}) {
    row.push_back(s);
  }
  return row;
}

Row error_row(const SweepPoint& p, const std::string& message, std::size_t columns) {
  Row row = {p.id, std::to_string(p.index)};
  for (const json& v : p.values) row.push_back(value_text(v));
  row.push_back("error");
  while (row.size() + 1 < columns) row.push_back("");
  row.push_back(message);
  return row;
}

std::string to_csv(const Row& head, const std::vector<Row>& rows) {
  std::string out;
  for (const Row* r : [&] {
         std::vector<const Row*> all{&head};
         for (const Row& x : rows) all.push_back(&x);
         return all;
       }()) {
    for (std::size_t i = 0; i < r->size(); ++i) out += (i ? "," : "") + csv_field((*r)[i]);
    out += "\n";
  }
  return out;
}

// Rows of a table written by this sweep, keyed by point id. A table with other columns was written by a
// different sweep: an error, rather than mixing two sweeps in one table.
std::map<std::string, Row> read_table(const fs::path& file, const Row& head) {
  std::map<std::string, Row> rows;
  std::error_code ec;
  if (fs::status(file, ec).type() == fs::file_type::not_found) return rows;  // a new sweep
  std::string text;
  try {
    text = json_read::read_text_file(file, "sweep table");
  } catch (const ConfigError& e) {
    throw ConfigError(e.path(), e.message() + "; move it or use another --out");
  }
  std::vector<Row> table;
  try {
    table = parse_csv(text);
  } catch (const InvalidArgument& e) {
    throw ConfigError(file.string(), std::string("not a CSV table: ") + e.what() + "; delete it or use another --out");
  }
  if (table.empty()) return rows;
  if (table[0] != head) {
    throw ConfigError(file.string(), "was written by a different sweep (other columns); delete it or use another --out");
  }
  for (std::size_t i = 1; i < table.size(); ++i) {
    if (table[i].size() == head.size()) rows[table[i][0]] = table[i];
  }
  return rows;
}

std::vector<fs::path> part_files(const fs::path& dir) {
  std::vector<fs::path> parts;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("sweep.part-", 0) == 0 && name.size() > 4 && name.substr(name.size() - 4) == ".csv") parts.push_back(entry.path());
  }
  std::sort(parts.begin(), parts.end());
  return parts;
}

// Every row known in the folder: the merged table and all part files.
std::map<std::string, Row> known_rows(const fs::path& dir, const Row& head) {
  std::map<std::string, Row> rows = read_table(dir / "sweep.csv", head);
  for (const fs::path& part : part_files(dir)) {
    for (auto& [id, row] : read_table(part, head)) rows.emplace(id, std::move(row));
  }
  return rows;
}

// Writes sweep.csv with the rows of the current points, in point order, then removes the parts.
// Returns how many points have rows.
std::size_t merge(const fs::path& dir, const Row& head, const std::vector<SweepPoint>& points) {
  const std::map<std::string, Row> rows = known_rows(dir, head);
  std::vector<Row> ordered;
  for (const SweepPoint& p : points) {
    auto it = rows.find(p.id);
    if (it != rows.end()) ordered.push_back(it->second);
  }
  write_file_atomic(dir / "sweep.csv", to_csv(head, ordered));
  std::error_code ec;
  for (const fs::path& part : part_files(dir)) fs::remove(part, ec);
  return ordered.size();
}

// The results folder of a sweep, from the flag or the config, without needing any point to be valid.
fs::path output_folder(const SweepOptions& o, const json& config) {
  if (o.out) return out_folder(*o.out);
  if (config.is_object() && config.contains("output") && config["output"].is_string()) return config["output"].get<std::string>();
  if (config.is_object() && config.contains("name") && config["name"].is_string()) {
    return fs::path("results") / config["name"].get<std::string>();
  }
  throw ConfigError("/name", "required key is missing (the experiment's name, also its default results folder)");
}

class Progress {
 public:
  Progress(std::size_t total, LaunchRank who) : total_(total), who_(who), tty_(isatty(STDERR_FILENO)) {}
  void update(std::size_t done, const std::string& what, bool finished) const {
    const std::string prefix = who_.size > 1 ? "rank " + std::to_string(who_.rank) + "/" + std::to_string(who_.size) + " " : "";
    if (tty_) {
      const int width = 30;
      const int filled = total_ ? static_cast<int>(static_cast<double>(width) * static_cast<double>(done) / static_cast<double>(total_)) : width;
      std::string bar(static_cast<std::size_t>(filled), '#');
      bar.resize(width, ' ');
      std::fprintf(stderr, "\r\033[K%s[%s] %zu/%zu %s", prefix.c_str(), bar.c_str(), done, total_, what.c_str());
      if (done == total_) std::fprintf(stderr, "\n");
    } else if (finished) {  // a log gets one line per point
      std::fprintf(stderr, "%ssweep: %zu/%zu %s\n", prefix.c_str(), done, total_, what.c_str());
    }
    std::fflush(stderr);
  }

 private:
  std::size_t total_;
  LaunchRank who_;
  bool tty_;
};

void sweep_command(const SweepOptions& o) {
  const json config = read_config_file(o.experiment);
  if (!config.is_object()) throw ConfigError(o.experiment, "expected a JSON object (an experiment config with a \"sweep\")");
  const fs::path base_dir = fs::absolute(o.experiment).parent_path();
  std::vector<SweepPoint> points;
  try {
    points = expand_sweep(config, base_dir);
  } catch (const ConfigError& e) {
    throw ConfigError(e.path(), e.message() + " (in " + o.experiment + ")");
  }
  const std::vector<SweepAxis> axes = sweep_axes(config, base_dir);
  const Row head = header(axes);
  const fs::path dir = output_folder(o, config);
  const LaunchRank who = launch_rank();

  // One command at a time in the folder; a launcher's ranks each write their own part file instead.
  std::optional<ResultsFolderLock> lock;
  if (who.size == 1) lock.emplace(dir);

  if (o.merge_only) {
    const std::size_t have = merge(dir, head, points);
    std::printf("# merged %zu of %zu points into %s\n", have, points.size(), (dir / "sweep.csv").string().c_str());
    if (have < points.size()) {
      std::fprintf(stderr, "twinbed: warning: %zu points have no row yet; run the sweep again to fill them\n",
                   points.size() - have);
    }
    return;
  }

  // This rank's share, minus what an earlier run already did. A point that failed is not done: it runs
  // again (the config may have been fixed since).
  const std::size_t status = axes.size() + 2;
  const std::map<std::string, Row> known = known_rows(dir, head);
  const auto done_before = [&](const SweepPoint& p) {
    auto it = known.find(p.id);
    return it != known.end() && it->second[status] == "ok";
  };
  std::vector<const SweepPoint*> todo;
  std::size_t mine = 0;
  for (const SweepPoint& p : points) {
    if (p.index % static_cast<std::size_t>(who.size) != static_cast<std::size_t>(who.rank)) continue;
    ++mine;
    if (!done_before(p)) todo.push_back(&p);
  }
  const fs::path my_file = who.size == 1 ? dir / "sweep.csv"
                                         : dir / ("sweep.part-" + std::to_string(who.rank) + "-of-" + std::to_string(who.size) + ".csv");
  // Rows this rank writes: everything already in its own file, plus what it computes now.
  std::map<std::string, Row> my_rows = who.size == 1 ? known : read_table(my_file, head);
  const auto write_mine = [&] {
    std::vector<Row> ordered;
    if (who.size == 1) {
      for (const SweepPoint& p : points) {
        if (auto it = my_rows.find(p.id); it != my_rows.end()) ordered.push_back(it->second);
      }
    } else {
      for (const auto& [id, row] : my_rows) ordered.push_back(row);
    }
    write_file_atomic(my_file, to_csv(head, ordered));
  };

  if (who.size == 1 || who.rank == 0) {
    std::fprintf(stderr, "twinbed: sweep of %zu points into %s: %zu already done%s\n", points.size(), json_read::one_line(dir.string()).c_str(),
                 static_cast<std::size_t>(std::count_if(points.begin(), points.end(), done_before)),
                 who.size > 1 ? (", spread over " + std::to_string(who.size) + " ranks").c_str() : "");
  }
  const Progress progress(mine, who);
  std::size_t done = mine - todo.size();
  std::string first_error;
  for (const SweepPoint* p : todo) {
    progress.update(done, p->id + " ...", false);
    Row row;
    try {
      const Experiment e = experiment_from_json(p->config, base_dir);
      const SimRun run = run_on_simulator(e);
      row = ok_row(*p, run);
    } catch (const Error& err) {
      // An impossible point (a layout that does not fit this cluster) is a result, not a crash.
      row = error_row(*p, err.what(), head.size());
      if (first_error.empty()) first_error = p->id + ": " + err.what();
    }
    my_rows[p->id] = row;
    write_mine();
    ++done;
    progress.update(done, p->id + (row[status] == "ok" ? ": ok" : ": error"), true);
  }
  if (todo.empty()) {
    if (who.size == 1) write_mine();  // merges any parts a launcher run left behind
    progress.update(done, "nothing to do", true);
  }

  if (who.size > 1) {
    if (who.rank != 0) return;
    // Rank 0 merges once every point has a row somewhere.
    bool announced = false;
    for (;;) {
      const std::map<std::string, Row> rows = known_rows(dir, head);
      const std::size_t have = static_cast<std::size_t>(
          std::count_if(points.begin(), points.end(), [&](const SweepPoint& p) { return rows.count(p.id) > 0; }));
      if (have == points.size()) break;
      if (!announced) {
        std::fprintf(stderr, "twinbed: rank 0 waiting for the other ranks (%zu of %zu points done)\n", have, points.size());
        announced = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    merge(dir, head, points);
  } else {
    merge(dir, head, points);
  }

  const std::map<std::string, Row> rows = read_table(dir / "sweep.csv", head);
  std::size_t errors = 0;
  for (const auto& [id, row] : rows) errors += row[status] == "error";
  std::printf("# sweep %s: %zu points, %zu ran, %zu impossible or failed (see the error column); table: %s\n",
              o.experiment.c_str(), points.size(), rows.size() - errors, errors, (dir / "sweep.csv").string().c_str());
  if (errors == rows.size() && !rows.empty()) {
    throw Error("no point of the sweep could run" + (first_error.empty() ? std::string() : "; first error: " + first_error));
  }
}

}  // namespace

void add_sweep_command(CLI::App& app) {
  auto opts = std::make_shared<SweepOptions>();
  CLI::App* cmd = app.add_subcommand(
      "sweep", "Run every point of an experiment's \"sweep\" on the simulator into one CSV table (resumable; spreads over mpirun ranks)");
  cmd->add_option("experiment", opts->experiment, "Experiment config (JSON) with a \"sweep\" section")->required();
  cmd->add_option("--out", opts->out, "Results folder (default: the config's \"output\", else results/<name>); holds sweep.csv");
  cmd->add_flag("--merge", opts->merge_only,
                "Only merge the part files of an earlier launcher run (sweep.part-*.csv) into sweep.csv");
  cmd->footer(
      "Resumes: points with an ok row in the folder's sweep.csv (or a part file) are skipped; failed points run again.\n"
      "Under mpirun -np N, rank r runs points i % N == r and rank 0 merges the parts when all are done.");
  cmd->callback([opts] { sweep_command(*opts); });
}

}  // namespace twinbed::cli
