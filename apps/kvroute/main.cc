// kvroute: one binary, subcommands registered in src/cli/commands.cc.
#include "cli/commands.h"

int main(int argc, char** argv) { return kvroute::cli::run(argc, argv); }
