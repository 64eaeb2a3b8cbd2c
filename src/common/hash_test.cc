#include "common/hash.h"

#include <gtest/gtest.h>

namespace kvroute {
namespace {

TEST(ChainedBlockHashes, OnlyFullBlocksAndPrefixStable) {
  std::vector<std::uint32_t> a(40), b(40);
  for (std::uint32_t i = 0; i < 40; ++i) a[i] = b[i] = i;
  b[20] = 999;  // differs in block 1
  auto ha = chained_block_hashes(a, 16, 7);
  auto hb = chained_block_hashes(b, 16, 7);
  ASSERT_EQ(ha.size(), 2u);
  ASSERT_EQ(hb.size(), 2u);
  EXPECT_EQ(ha[0], hb[0]);
  EXPECT_NE(ha[1], hb[1]);
  // Chaining: the same block content after a different parent hashes differently.
  std::vector<std::uint32_t> c(a.begin() + 16, a.begin() + 32);
  EXPECT_NE(chained_block_hashes(c, 16, 7)[0], ha[1]);
  // The seed (model) separates namespaces.
  EXPECT_NE(chained_block_hashes(a, 16, 8)[0], ha[0]);
}

}  // namespace
}  // namespace kvroute
