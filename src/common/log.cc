#include "common/log.h"

namespace kvroute {

bool set_log_level(std::string_view level) {
  auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") return false;
  spdlog::set_level(lvl);
  return true;
}

}  // namespace kvroute
