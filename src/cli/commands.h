// File: cli/commands.h
//
// The kvroute command line: one explicit list of subcommands (serve, sim, tokenize, bench, demo).
// Each component owns its flags and entry point; this file only dispatches.
#pragma once

namespace kvroute::cli {

// Parses argv, runs the chosen subcommand and returns the process exit code.
int run(int argc, char** argv);

}  // namespace kvroute::cli
