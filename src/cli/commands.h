// File: cli/commands.h
//
// The kvroute command line: one explicit list of subcommands (serve, sim, tokenize, bench, demo).
// Each component owns its flags and entry point; this file only dispatches.
//
// Thread-safety: call run() once, from the main thread. It runs the chosen subcommand on the
// calling thread until it ends; the subcommand starts and joins its own threads, sets the
// process-wide log level, and `serve` and `sim` wait for SIGINT/SIGTERM.
#pragma once

namespace kvroute::cli {

// Parses argv, runs the chosen subcommand and returns the process exit code.
int run(int argc, char** argv);

}  // namespace kvroute::cli
