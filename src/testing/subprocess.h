// File: testing/subprocess.h
//
// Test support: run a command with a string on stdin and capture stdout+stderr. For differential
// tests against real implementations (promtool, node, python3). Not for production code.
//
// Thread-safety: no shared state: run_command() uses a temporary file and a pipe of its own per
// call and blocks the calling thread until the command exits, so several threads may run commands
// at once. source_path() only reads the environment.
#pragma once

#include <string>
#include <string_view>

namespace kvroute::testing {

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

// Runs `command` through /bin/sh with `input` on stdin; blocks until it exits.
CommandResult run_command(const std::string& command, std::string_view input = {});

// Path of a file under the source tree (KVROUTE_SOURCE_DIR) or the build tree.
std::string source_path(std::string_view relative);

}  // namespace kvroute::testing
