// Strict reading of JSON configs, shared by every parser at the edge (topology, model, layout,
// experiment, profiles). Each reader checks the type and range of one value and, when it is wrong,
// throws ConfigError naming the value's JSON Pointer path and what would be accepted. Model code never
// includes this: it gets plain structs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "twinbed/core/error.hpp"

namespace twinbed::json_read {

using nlohmann::json;

// The most bytes an input file twinbed reads may hold (a config, topology, profile or claim; a sweep
// table): configs are kilobytes and a 100,000-point sweep table some tens of MiB, so a bigger file is a
// mistake, and reading it whole could exhaust memory.
inline constexpr std::uintmax_t kMaxInputFileBytes = std::uintmax_t{64} << 20;

// Why `file` cannot be read as a `what` file ("experiment", "topology", ...), or "" when it can: it must
// be, after following links, a regular file of at most kMaxInputFileBytes. A FIFO, a terminal or a
// device (/dev/zero) is refused here, before anything opens it, so no read can block or run forever.
// The text follows the file's name: "is a folder, not an experiment file", "cannot open the topology file:
// it does not exist", "is not a regular file (a device, FIFO or socket), so not a profile file", ...
// The one check of every file twinbed reads.
std::string unreadable_reason(const std::filesystem::path& file, const std::string& what);
// The whole of `file` once unreadable_reason has nothing against it; otherwise, or when reading fails,
// a ConfigError whose path is the file name.
std::string read_text_file(const std::filesystem::path& file, const std::string& what);

// Reads and parses a JSON file (read_text_file, then parse_json_text). A file that cannot be read,
// malformed JSON or a key repeated within one object (which nlohmann would otherwise keep silently, the
// last one winning) is a ConfigError whose path is the file name; `what` names the file's role in the
// message ("topology", "experiment").
json read_json_file(const std::string& file, const std::string& what);
// The same for text already read: `where` names it in errors. Also rejects NUL bytes, values nested more
// than kMaxJsonDepth levels, and numbers no double can hold, each as a ConfigError naming `where`.
inline constexpr int kMaxJsonDepth = 64;
json parse_json_text(const std::string& text, const std::string& where);

// JSON Pointer (RFC 6901) of `key` under `parent` ("~" and "/" escaped), or of an array index.
std::string child(const std::string& parent, const std::string& key);
std::string child(const std::string& parent, std::size_t index);

// Throws ConfigError(path, message); an empty path (the document itself) is shown as "/".
[[noreturn]] void fail(const std::string& path, const std::string& message);

// How a value reads in an error: the string "x", 3.5, true, a JSON array, ...
std::string got(const json& v);
// Error text is one line, whatever the input held. The one escaping rule of every message:
// one_line(text) escapes what could break a line (control characters such as a newline, as JSON writes
// them: \n, \u0001; DEL; U+0085, U+2028, U+2029), replaces invalid UTF-8 with U+FFFD and keeps everything
// else; main passes every message through it. quoted(text) is a value inside a message: in double quotes, with quotes and backslashes
// escaped too, cut at `cut_at` characters ("..." marks a cut; npos: never, for file names). Call it
// as json_read::quoted: unqualified, argument-dependent lookup may pick std::quoted instead.
std::string one_line(const std::string& text);
std::string quoted(const std::string& text, std::size_t cut_at = 80);
// A JSON value as an error shows it: a string quoted(), anything else as compact JSON, cut at 80.
std::string shown(const json& v);
// A number as messages write it: %g without an exponent's padding ("1e-6", "1e9", "0.5", "1048576"), and
// a closed range of two ("[1e-6, 1e9]"), so range texts are written from their constants.
std::string number_text(double v);
std::string number_range(double min, double max);
// "a, b, c".
std::string join(const std::vector<std::string>& names);

// The value the JSON pointer `pointer` (well-formed, e.g. "/layout/pp") names in `doc`, or nullptr.
// Unlike json::contains it never throws: a step into an array names something only when it is a
// decimal index below the array's size ("", "01", "-" and "x" name nothing). One pass, stopping at the
// first step that names nothing (a pointer of thousands of steps costs its length, no more).
const json* find_pointer(const json& doc, std::string_view pointer);
// `pointer` as a place a value can be put in `doc` (sweeps, claims' "set"): well-formed, not the whole
// document, its parent an object or array in `doc`, and an array element that exists. Otherwise a
// ConfigError at `path` saying which.
json::json_pointer settable_pointer(const json& doc, const std::string& pointer, const std::string& path);

void require_object(const json& v, const std::string& path);
// Rejects keys outside `accepted`, naming the key's path and the accepted keys (+ `hint`): a misspelt
// key or an unexpected unit must never be silently ignored.
void check_keys(const json& obj, const std::string& path, const std::vector<std::string>& accepted,
                const std::string& hint = "");
// The value of `key`; when absent, an error saying so (with `what` it is, when given).
const json& required(const json& obj, const std::string& path, const std::string& key, const std::string& what = "");

std::string read_string(const json& v, const std::string& path);
std::string read_name(const json& v, const std::string& path);  // a non-empty string
std::int64_t read_int(const json& v, const std::string& path, std::int64_t min, std::int64_t max);
// A finite number; `range` describes what is accepted ("a number > 0 (GB/s)") for the message.
double read_number(const json& v, const std::string& path, const std::string& range);
bool read_bool(const json& v, const std::string& path);

// A name parsed by `parse` (which throws UnknownName listing the known names), as a ConfigError at path.
template <class Parse>
auto read_named(const json& v, const std::string& path, Parse parse) -> decltype(parse(std::string())) {
  const std::string name = read_string(v, path);
  try {
    return parse(name);
  } catch (const UnknownName& e) {
    fail(path, e.what());
  }
}

}  // namespace twinbed::json_read
