#include "auth/auth.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "testing/certs.h"

namespace kvroute::auth {
namespace {

TEST(Auth, BearerTokenParsesTheSchemeCaseInsensitively) {
  EXPECT_EQ(bearer_token("Bearer abc"), "abc");
  EXPECT_EQ(bearer_token("bearer   abc  "), "abc");
  EXPECT_EQ(bearer_token("BEARER\tabc"), "abc");
  EXPECT_EQ(bearer_token("Basic abc"), "");
  EXPECT_EQ(bearer_token("Bearer"), "");
  EXPECT_EQ(bearer_token("Bearer "), "");
  EXPECT_EQ(bearer_token("Bearerabc"), "");
  EXPECT_EQ(bearer_token("Bearer a b"), "");
}

TEST(Auth, KeysWithAndWithoutTenants) {
  auto ks =
      KeyStore::parse("# comment\n\nsk-alpha team-a\n  sk-beta\t team-b \nsk-gamma\n", "keys");
  ASSERT_TRUE(ks) << ks.error().message;
  EXPECT_EQ(ks->size(), 3u);
  EXPECT_EQ(*ks->check("Bearer sk-alpha"), "team-a");
  EXPECT_EQ(*ks->check("Bearer sk-beta"), "team-b");
  auto g = ks->check("Bearer sk-gamma");
  ASSERT_TRUE(g);
  // Named after its line: nothing derived from the key.
  EXPECT_EQ(*g, "line-5");
}

TEST(Auth, RefusalsSayWhy) {
  auto ks = KeyStore::parse("sk-alpha\n", "keys");
  ASSERT_TRUE(ks);
  EXPECT_EQ(ks->check("").error(), Refusal::kMissing);
  EXPECT_EQ(ks->check("   ").error(), Refusal::kMissing);
  EXPECT_EQ(ks->check("Basic c2stYWxwaGE=").error(), Refusal::kMalformed);
  EXPECT_EQ(ks->check("Bearer sk-alph").error(), Refusal::kInvalid);
  EXPECT_EQ(ks->check("Bearer sk-alphaa").error(), Refusal::kInvalid);
  EXPECT_EQ(ks->check("Bearer SK-ALPHA").error(), Refusal::kInvalid);
  EXPECT_TRUE(ks->check("Bearer sk-alpha"));
}

TEST(Auth, BadFilesNameTheLineAndNeverTheKey) {
  auto dup = KeyStore::parse("sk-secret-one\nsk-secret-one x\n", "keys.txt");
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().message.find("keys.txt:2"), std::string::npos);
  EXPECT_EQ(dup.error().message.find("sk-secret"), std::string::npos);
  auto extra = KeyStore::parse("sk-secret-two tenant extra\n", "keys.txt");
  ASSERT_FALSE(extra);
  EXPECT_NE(extra.error().message.find("keys.txt:1"), std::string::npos);
  EXPECT_EQ(extra.error().message.find("sk-secret"), std::string::npos);
  EXPECT_FALSE(KeyStore::parse("# only a comment\n", "keys.txt"));
}

TEST(Auth, SecretsEqual) {
  EXPECT_TRUE(secrets_equal("token", "token"));
  EXPECT_FALSE(secrets_equal("token", "tokem"));
  EXPECT_FALSE(secrets_equal("token", "token2"));
  EXPECT_FALSE(secrets_equal("", "x"));
}

TEST(Auth, KeyFileReloadsWhenTheFileChanges) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("kvroute_auth_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "keys").string();
  testing::write_file(path, "sk-old\n");
  auto kf = KeyFile::open(path, std::chrono::milliseconds(0));
  ASSERT_TRUE(kf) << kf.error().message;
  EXPECT_TRUE((*kf)->current()->check("Bearer sk-old"));
  testing::write_file(path, "sk-new tenant-new\n");
  auto ks = (*kf)->current();
  EXPECT_FALSE(ks->check("Bearer sk-old"));
  EXPECT_EQ(*ks->check("Bearer sk-new"), "tenant-new");
  EXPECT_EQ((*kf)->reloads(), 1u);
  // A broken rewrite keeps the keys that worked.
  testing::write_file(path, "sk-x\nsk-x\n");
  EXPECT_TRUE((*kf)->current()->check("Bearer sk-new"));
  EXPECT_EQ((*kf)->reloads(), 1u);
  EXPECT_FALSE(KeyFile::open((dir / "absent").string()));
  std::filesystem::remove_all(dir);
}

// The check's time must not tell an attacker anything: not which key matched (the first of 1,000
// or the last), not whether any did, not how long a prefix of a real key a guess shares. A check
// that stopped at the first match, or compared the raw key bytes, fails this by a wide margin
// (1,000 comparisons against one). Medians of interleaved rounds, with a generous margin.
TEST(Auth, CheckTimeDoesNotDependOnTheKey) {
  std::string text;
  std::vector<std::string> keys;
  for (int i = 0; i < 1000; ++i) {
    keys.push_back("sk-" + std::string(29, static_cast<char>('a' + i % 26)) + std::to_string(i));
    text += keys.back() + "\n";
  }
  auto ks = KeyStore::parse(text, "keys");
  ASSERT_TRUE(ks);
  const std::vector<std::string> probes = {
      "Bearer " + keys.front(),                      // matches the first key
      "Bearer " + keys.back(),                       // matches the last key
      "Bearer " + keys.front().substr(0, 31) + "#",  // shares all but the last byte of one
      "Bearer #" + keys.front().substr(1),           // differs in the first byte
  };
  using Clock = std::chrono::steady_clock;
  std::vector<std::vector<double>> times(probes.size());
  for (int round = 0; round < 101; ++round) {
    for (std::size_t p = 0; p < probes.size(); ++p) {
      const auto t0 = Clock::now();
      for (int k = 0; k < 5; ++k) {
        auto r = ks->check(probes[p]);
        EXPECT_EQ(r.has_value(), p < 2);
      }
      times[p].push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
  }
  std::vector<double> medians;
  for (auto& t : times) {
    std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
    medians.push_back(t[t.size() / 2]);
  }
  const double lo = *std::min_element(medians.begin(), medians.end());
  const double hi = *std::max_element(medians.begin(), medians.end());
  EXPECT_LT(hi / lo, 1.5) << "first " << medians[0] << " last " << medians[1] << " near "
                          << medians[2] << " far " << medians[3];
}

}  // namespace
}  // namespace kvroute::auth
