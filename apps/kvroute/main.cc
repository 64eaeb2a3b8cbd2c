// kvroute: one binary, subcommands registered in src/cli/commands.cc.
#include <csignal>

#include "cli/commands.h"

int main(int argc, char** argv) {
  // A peer that closed its end must come back as EPIPE from the write, never kill the process:
  // OpenSSL writes with write(2), which has no MSG_NOSIGNAL (nginx and Envoy ignore SIGPIPE too).
  std::signal(SIGPIPE, SIG_IGN);
  return kvroute::cli::run(argc, argv);
}
