#include "testing/subprocess.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

namespace kvroute::testing {

CommandResult run_command(const std::string& command, std::string_view input) {
  char in_path[] = "/tmp/kvroute_in_XXXXXX";
  int fd = mkstemp(in_path);
  CommandResult r;
  if (fd < 0) return r;
  ::close(fd);
  {
    std::ofstream f(in_path, std::ios::binary);
    f.write(input.data(), static_cast<std::streamsize>(input.size()));
  }
  std::string full = "(" + command + ") < " + in_path + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (p) {
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
    int status = ::pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  ::unlink(in_path);
  return r;
}

std::string source_path(std::string_view relative) {
  const char* dir = std::getenv("KVROUTE_SOURCE_DIR");
  std::string base = dir ? dir : ".";
  return base + "/" + std::string(relative);
}

}  // namespace kvroute::testing
