// File: metrics/prom_parser.h
//
// A tolerant parser of the Prometheus text exposition format (0.0.4), for scraping engines'
// /metrics. Malformed lines are skipped and counted, never fatal; label values are unescaped.
// Thread-safety: pure function.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvroute::metrics {

struct Sample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;
  std::string_view label(std::string_view key) const;
};

struct ParsedExposition {
  std::vector<Sample> samples;
  std::size_t malformed_lines = 0;
};

// Parses `text`; `wanted` (if non-empty) keeps only samples whose name is in it.
ParsedExposition parse_exposition(std::string_view text,
                                  const std::vector<std::string_view>& wanted = {});

}  // namespace kvroute::metrics
