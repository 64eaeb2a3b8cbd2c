#include "metrics/prom_parser.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace kvroute::metrics {
namespace {

TEST(PromParser, ParsesVllmExposition) {
  const char* text = R"(# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3-8B"} 2.0
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-8B"} 0.4137
vllm:prefix_cache_queries_total{engine="0",model_name="a\"b"} 1.2345e+06
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 1733.0
vllm:cache_config_info{block_size="16",num_gpu_blocks="27386"} 1.0 1700000000000
broken{line 1
also_broken
)";
  auto p = parse_exposition(text);
  ASSERT_EQ(p.samples.size(), 5u);
  EXPECT_EQ(p.malformed_lines, 2u);
  EXPECT_EQ(p.samples[0].name, "vllm:num_requests_waiting");
  EXPECT_EQ(p.samples[0].value, 2.0);
  EXPECT_EQ(p.samples[0].label("model_name"), "Qwen/Qwen3-8B");
  EXPECT_EQ(p.samples[2].value, 1234500);
  EXPECT_EQ(p.samples[2].label("model_name"), "a\"b");
  EXPECT_EQ(p.samples[4].label("num_gpu_blocks"), "27386");
  auto only = parse_exposition(text, {"vllm:kv_cache_usage_perc"});
  ASSERT_EQ(only.samples.size(), 1u);
}

TEST(PromParser, NeverCrashesOnGarbage) {
  std::mt19937 rng(7);
  const std::string base = "a_b{x=\"1\",y=\"\\\\\"} 3.5\n# c\nz 1e9\n";
  for (int i = 0; i < 20000; ++i) {
    std::string s = base;
    for (int k = 0; k < 4; ++k) s[rng() % s.size()] = static_cast<char>(rng() % 256);
    s.resize(rng() % (s.size() + 1));
    auto p = parse_exposition(s);
    EXPECT_LE(p.samples.size(), 3u);
  }
}

}  // namespace
}  // namespace kvroute::metrics
