#include "common/result.h"

#include <gtest/gtest.h>

#include <string>

namespace kvroute {
namespace {

Result<int> parse_digit(char c) {
  if (c < '0' || c > '9') return fail(Error::invalid(std::string("not a digit: ") + c));
  return c - '0';
}

Status check_even(int n) {
  if (n % 2 != 0) return fail(Error::invalid("odd"));
  return {};
}

// Both forms of KVROUTE_TRY in one function returning Result<int>.
Result<int> twice_even_digit(char c, int* reached) {
  KVROUTE_TRY(int n, parse_digit(c));
  *reached = 1;
  KVROUTE_TRY(check_even(n));
  *reached = 2;
  return 2 * n;
}

// And in a function returning Status.
Status all_even(std::string_view s) {
  for (char c : s) {
    KVROUTE_TRY(auto n, parse_digit(c));
    KVROUTE_TRY(check_even(n));
  }
  return {};
}

TEST(KvrouteTry, BindsTheValueOrReturnsTheError) {
  int reached = 0;
  auto ok = twice_even_digit('4', &reached);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 8);
  EXPECT_EQ(reached, 2);

  reached = 0;
  auto bad = twice_even_digit('x', &reached);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message, "not a digit: x");
  EXPECT_EQ(reached, 0);
}

TEST(KvrouteTry, ReturnsAStatusError) {
  int reached = 0;
  auto odd = twice_even_digit('3', &reached);
  ASSERT_FALSE(odd);
  EXPECT_EQ(odd.error().message, "odd");
  EXPECT_EQ(odd.error().kind, Error::Kind::kInvalidArgument);
  EXPECT_EQ(reached, 1);

  EXPECT_TRUE(all_even("2468"));
  auto s = all_even("2461");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message, "odd");
  EXPECT_EQ(all_even("2a").error().message, "not a digit: a");
}

}  // namespace
}  // namespace kvroute
