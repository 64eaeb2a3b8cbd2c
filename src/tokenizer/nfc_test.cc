// Tests of the NFC normalizer (internal::nfc_normalize): differential against Python's unicodedata
// (run as a subprocess) on every code point, runs of consecutive code points and generated
// mark/jamo soup; the fast path; idempotence. The HF side (Qwen2 fixture with an NFC normalizer) is
// in tokenizer_test.cc.
#include <gtest/gtest.h>
#include <simdjson.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "common/json.h"
#include "testing/subprocess.h"
#include "tokenizer/internal/test_corpus.h"
#include "tokenizer/internal/unicode_tables.h"
#include "tokenizer/internal/util.h"

namespace kvroute::tokenizer {
namespace {

std::string nfc(std::string_view s) {
  std::string buf;
  return std::string(internal::nfc_normalize(s, buf));
}

std::string utf8(std::initializer_list<std::uint32_t> cps) {
  std::string s;
  for (std::uint32_t cp : cps) internal::append_utf8(s, cp);
  return s;
}

std::string hex_code_points(std::string_view s) {
  std::string out;
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t len = internal::utf8_sequence_length(s, i);
    char buf[16];
    std::snprintf(buf, sizeof buf, "%s%04X", out.empty() ? "" : " ",
                  static_cast<unsigned>(internal::decode_utf8_at(s, i, len)));
    out += buf;
    i += len;
  }
  return out;
}

TEST(Nfc, StableTextIsReturnedWithoutCopy) {
  // ASCII, precomposed Latin, CJK and Hangul syllables, emoji with a skin tone modifier.
  const std::string_view cases[] = {"", "plain ASCII text\n",
                                    "caf\xC3\xA9 na\xC3\xAFve \xC3\x85ngstr\xC3\xB6m",
                                    "\xE4\xBD\xA0\xE5\xA5\xBD \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
                                    "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD"};
  for (std::string_view s : cases) {
    std::string buf = "untouched";
    const std::string_view out = internal::nfc_normalize(s, buf);
    EXPECT_EQ(out.data(), s.data());
    EXPECT_EQ(out.size(), s.size());
    EXPECT_EQ(buf, "untouched");
  }
}

TEST(Nfc, KnownCases) {
  EXPECT_EQ(nfc(utf8({'e', 0x301})), utf8({0xE9}));
  EXPECT_EQ(nfc(utf8({0x212B})), utf8({0xC5}));         // singleton (ANGSTROM SIGN)
  EXPECT_EQ(nfc(utf8({0x2126})), utf8({0x3A9}));        // singleton (OHM SIGN)
  EXPECT_EQ(nfc(utf8({0x958})), utf8({0x915, 0x93C}));  // composition exclusion
  EXPECT_EQ(nfc(utf8({0x915, 0x93C})), utf8({0x915, 0x93C}));
  EXPECT_EQ(nfc(utf8({0x344})), utf8({0x308, 0x301}));  // non-starter decomposition
  // Canonical ordering (dot below, class 220, before circumflex, 230), then composition through
  // both.
  EXPECT_EQ(nfc(utf8({'a', 0x302, 0x323})), utf8({0x1EAD}));
  EXPECT_EQ(nfc(utf8({'a', 0x323, 0x302})), utf8({0x1EAD}));
  // Blocking: a mark of the same class in between blocks, one of a lower class does not.
  EXPECT_EQ(nfc(utf8({'a', 0x305, 0x301})), utf8({'a', 0x305, 0x301}));
  EXPECT_EQ(nfc(utf8({'a', 0x316, 0x301})), utf8({0xE1, 0x316}));
  EXPECT_EQ(nfc(utf8({'a', 0x301, 0x301})), utf8({0xE1, 0x301}));
  // A stable precomposed letter decomposes when a mark follows: A-ring + dot below -> A-dot-below +
  // ring.
  EXPECT_EQ(nfc(utf8({0xC5, 0x323})), utf8({0x1EA0, 0x30A}));
  // Hangul: L V -> LV, L V T -> LVT, LV T -> LVT; T_BASE (U+11A7) is not a trailing consonant.
  EXPECT_EQ(nfc(utf8({0x1100, 0x1161})), utf8({0xAC00}));
  EXPECT_EQ(nfc(utf8({0x1100, 0x1161, 0x11A8})), utf8({0xAC01}));
  EXPECT_EQ(nfc(utf8({0xAC00, 0x11A8})), utf8({0xAC01}));
  EXPECT_EQ(nfc(utf8({0xAC00, 0x11A7})), utf8({0xAC00, 0x11A7}));
  EXPECT_EQ(nfc(utf8({0xAC01, 0x11A8})), utf8({0xAC01, 0x11A8}));
  // Starters that compose (Tamil O = E + AA), and text around the changed stretches stays as it
  // was.
  EXPECT_EQ(nfc(utf8({0xBC6, 0xBBE})), utf8({0xBCA}));
  EXPECT_EQ(nfc("x e\xCC\x81 y \xE2\x84\xAB z"), "x \xC3\xA9 y \xC3\x85 z");
  // A mark with no starter before it stays first.
  EXPECT_EQ(nfc(utf8({0x301, 'e', 0x301})), utf8({0x301, 0xE9}));
}

// Runs Python's unicodedata.normalize("NFC", ...) on every item; returns its version and the
// results.
struct PythonNfc {
  std::string version;
  std::vector<std::string> results;
};

PythonNfc python_nfc(const std::vector<std::string>& items) {
  std::string input = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) input += ',';
    input += '"';
    append_json_escaped(input, items[i]);
    input += '"';
  }
  input += ']';
  // Bytes in, ASCII out (json.dumps escapes): independent of the locale's encoding.
  const auto r = testing::run_command(
      "/usr/bin/python3 -c 'import json, sys, unicodedata; items = "
      "json.loads(sys.stdin.buffer.read()); "
      "print(json.dumps({\"version\": unicodedata.unidata_version, "
      "\"nfc\": [unicodedata.normalize(\"NFC\", s) for s in items]}))'",
      input);
  PythonNfc out;
  EXPECT_EQ(r.exit_code, 0) << r.output.substr(0, 2000);
  if (r.exit_code != 0) return out;
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  const simdjson::padded_string json(r.output);
  EXPECT_EQ(parser.parse(json).get(root), simdjson::SUCCESS) << r.output.substr(0, 2000);
  std::string_view version;
  simdjson::dom::array arr;
  if (root["version"].get(version) != simdjson::SUCCESS ||
      root["nfc"].get(arr) != simdjson::SUCCESS) {
    ADD_FAILURE() << "unexpected output from python3: " << r.output.substr(0, 2000);
    return out;
  }
  out.version = std::string(version);
  for (auto e : arr) out.results.emplace_back(e.get_string().value());
  return out;
}

void expect_matches_python(const std::vector<std::string>& items) {
  const PythonNfc py = python_nfc(items);
  ASSERT_EQ(py.results.size(), items.size());
  // Our tables and Python must know the same Unicode version, or characters assigned in between
  // differ.
  ASSERT_EQ(py.version, unicode::kUnicodeVersion)
      << "regenerate unicode_tables.cc with this python3";
  int failures = 0;
  for (std::size_t i = 0; i < items.size() && failures < 10; ++i) {
    const std::string ours = nfc(items[i]);
    if (ours != py.results[i]) {
      ++failures;
      ADD_FAILURE() << "item " << i << ": [" << hex_code_points(items[i]) << "] -> ours ["
                    << hex_code_points(ours) << "], Python [" << hex_code_points(py.results[i])
                    << "]";
    }
  }
}

TEST(Nfc, EveryCodePointMatchesPython) {
  std::vector<std::string> items;
  items.reserve(0x110000 + 0x110000 / 7);
  for (std::uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    items.push_back(utf8({cp}));
  }
  // And runs of consecutive code points where anything composes or reorders (neighbours interact:
  // jamo after jamo, marks of increasing and equal classes, letters followed by marks).
  for (std::uint32_t cp = 0x2F0; cp < 0x30000; cp += 7) {
    const auto unsafe = [](std::uint32_t c) {
      return (unicode::props(c) & unicode::kNfcUnsafe) != 0;
    };
    if (!unsafe(cp) && !unsafe(cp + 3)) continue;
    std::string s;
    for (std::uint32_t k = cp; k < cp + 7; ++k) {
      if (k < 0xD800 || k > 0xDFFF) internal::append_utf8(s, k);
    }
    items.push_back(std::move(s));
  }
  expect_matches_python(items);
}

TEST(Nfc, GeneratedSequencesMatchPython) {
  auto items = testing_corpus::nfc_corpus(20240611, 4000, /*all_marks=*/true);
  for (std::string& s : testing_corpus::nfc_corpus(7, 2000, /*all_marks=*/false)) {
    items.push_back(std::move(s));
  }
  // Long runs of marks in random order take the long-run path of canonical ordering.
  std::mt19937_64 rng(3);
  const std::uint32_t marks[] = {0x301, 0x323, 0x302, 0x327, 0x334, 0x5B0,
                                 0x5C1, 0x5C2, 0x93C, 0x94D, 0xF71};
  for (std::size_t len : {40, 500, 5000}) {
    std::string s = "e";
    for (std::size_t i = 0; i < len; ++i) internal::append_utf8(s, marks[rng() % std::size(marks)]);
    s += "A";
    for (std::size_t i = 0; i < len; ++i) internal::append_utf8(s, marks[rng() % std::size(marks)]);
    items.push_back(std::move(s));
  }
  expect_matches_python(items);
}

TEST(Nfc, Idempotent) {
  for (bool all_marks : {true, false}) {
    for (const std::string& s : testing_corpus::nfc_corpus(99, 3000, all_marks)) {
      const std::string once = nfc(s);
      std::string buf;
      const std::string_view twice = internal::nfc_normalize(once, buf);
      EXPECT_EQ(twice, once) << hex_code_points(s);
      EXPECT_EQ(internal::find_invalid_utf8(once), std::string_view::npos);
    }
  }
}

}  // namespace
}  // namespace kvroute::tokenizer
