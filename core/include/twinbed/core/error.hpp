// The project's typed errors. The library never exits and never prints: it throws one of these, and
// only `main` turns them into a message and an exit code.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace twinbed {

// Base of every error twinbed throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A caller passed a value outside what the function accepts (zero ranks, negative bandwidth, ...).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// A configuration (JSON file or flags) is malformed. `path` is the JSON path of the offending value,
// e.g. "/links/3/bandwidth_GBps", or the flag name ("--ranks").
class ConfigError : public Error {
 public:
  ConfigError(std::string path, std::string message)
      : Error(path + ": " + message), path_(std::move(path)), message_(std::move(message)) {}
  const std::string& path() const { return path_; }
  // The message without the path, to re-raise it under another path.
  const std::string& message() const { return message_; }

 private:
  std::string path_;
  std::string message_;
};

// A name looked up in a registry does not exist; the message lists the known names.
class UnknownName : public Error {
 public:
  UnknownName(const std::string& what, const std::string& name, const std::vector<std::string>& known);
};

// Hardware or a launcher the request needs is absent (no GPU, no MPI). Tests skip on it.
class Unavailable : public Error {
 public:
  using Error::Error;
};

}  // namespace twinbed
