// Error types of ifseg_bench: every failure is reported as one line "error: ..." on stderr.
#pragma once

#include <stdexcept>
#include <string>

namespace ifseg_bench {

/// A failure with the process exit code it maps to.
class BenchError : public std::runtime_error {
 public:
  BenchError(const std::string& message, int exit_code) : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const noexcept { return exit_code_; }

 private:
  int exit_code_;
};

/// Bad input from the user (arguments, model file, shapes, unavailable backend): exit code 2.
class UsageError : public BenchError {
 public:
  explicit UsageError(const std::string& message) : BenchError(message, 2) {}
};

/// Failure while running (CUDA, runtime library): exit code 1.
class RuntimeFailure : public BenchError {
 public:
  explicit RuntimeFailure(const std::string& message) : BenchError(message, 1) {}
};

/// `text` with line breaks and runs of blanks collapsed to single spaces (messages must fit one line).
std::string one_line(const std::string& text);

}  // namespace ifseg_bench
