// File: tokenizer/internal.cc
#include <algorithm>

#include "tokenizer/internal/unicode_tables.h"
#include "tokenizer/internal/util.h"

namespace kvroute::tokenizer::internal {
namespace {

// Length of the maximal valid prefix of a UTF-8 sequence at i (Unicode Table 3-7), and whether it
// is complete. A lone invalid lead byte gives {0, false}.
struct Probe {
  std::size_t len;
  bool complete;
};

Probe probe(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {1, true};
  std::size_t need;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 == 0xE0) {
    need = 3;
    lo = 0xA0;
  } else if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) {
    need = 3;
  } else if (b0 == 0xED) {
    need = 3;
    hi = 0x9F;
  } else if (b0 == 0xF0) {
    need = 4;
    lo = 0x90;
  } else if (b0 >= 0xF1 && b0 <= 0xF3) {
    need = 4;
  } else if (b0 == 0xF4) {
    need = 4;
    hi = 0x8F;
  } else {
    return {0, false};
  }
  std::size_t k = 1;
  while (k < need) {
    if (i + k >= s.size()) return {k, false};
    const auto b = static_cast<unsigned char>(s[i + k]);
    const unsigned char l = k == 1 ? lo : 0x80;
    const unsigned char h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return {k, false};
    ++k;
  }
  return {need, true};
}

// ---- NFC (UAX #15)
// ------------------------------------------------------------------------------------- The
// normalizer works on the stretches of the text that may change: each starts at the last code point
// without kNfcUnsafe before a flagged one (a starter that may compose with what follows) and runs
// up to the next code point without the flag. Such a code point is a starter that composes with
// nothing before it (gen_unicode_tables.py checks this), so NFC of the whole text is the unflagged
// text as is plus NFC of each stretch. A stretch is decomposed, put in canonical order and
// recomposed as the standard describes.

// Hangul syllables decompose and compose algorithmically (Unicode 3.12).
constexpr std::uint32_t kSBase = 0xAC00;
constexpr std::uint32_t kLBase = 0x1100;
constexpr std::uint32_t kVBase = 0x1161;
constexpr std::uint32_t kTBase = 0x11A7;
constexpr std::uint32_t kLCount = 19;
constexpr std::uint32_t kVCount = 21;
constexpr std::uint32_t kTCount = 28;
constexpr std::uint32_t kNCount = kVCount * kTCount;
constexpr std::uint32_t kSCount = kLCount * kNCount;

// Lead bytes below this one start code points below unicode::kFirstNfcUnsafe.
constexpr unsigned char kFirstUnsafeLead = 0xC0 | (unicode::kFirstNfcUnsafe >> 6);
static_assert(kFirstUnsafeLead == 0xCC);

// The stretch being normalized: code points with their combining class in the top byte, so that
// ordering and composition read the class once.
constexpr std::uint32_t kCpMask = 0x1FFFFF;
inline std::uint32_t with_class(std::uint32_t cp) {
  return static_cast<std::uint32_t>(unicode::combining_class(cp)) << 24 | cp;
}
inline std::uint32_t class_of(std::uint32_t x) { return x >> 24; }

// ASCII fast path: the first offset at or after i where an 8-byte word holds a non-ASCII byte (or
// fewer than 8 bytes remain).
std::size_t skip_ascii8(std::string_view s, std::size_t i) {
  while (i + 8 <= s.size()) {
    std::uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    if ((w & 0x8080808080808080ull) != 0) break;
    i += 8;
  }
  return i;
}

// Byte offset of the first code point flagged kNfcUnsafe at or after i in valid UTF-8, or npos.
std::size_t find_nfc_unsafe(std::string_view s, std::size_t i) {
  const std::size_t n = s.size();
  while (i < n) {
    i = skip_ascii8(s, i);
    if (i >= n) break;
    // ASCII, continuation bytes and the leads of U+0080..U+02FF need no decoding.
    if (static_cast<unsigned char>(s[i]) < kFirstUnsafeLead) {
      ++i;
      continue;
    }
    const std::size_t len = utf8_sequence_length(s, i);
    if ((unicode::props(decode_utf8_at(s, i, len)) & unicode::kNfcUnsafe) != 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

// Appends the full canonical decomposition of cp.
void decompose(std::uint32_t cp, std::vector<std::uint32_t>& out) {
  if (cp - kSBase < kSCount) {  // jamo have class 0
    const std::uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + s % kNCount / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  // Entries are cp << 14 | offset << 2 | (length - 1), sorted; every decomposable code point is
  // below 2^18.
  if (cp >= unicode::kDecompositions[0] >> 14 && cp < (1u << 18)) {
    const std::uint32_t* end = unicode::kDecompositions + unicode::kDecompositionCount;
    const std::uint32_t* it = std::upper_bound(unicode::kDecompositions, end, cp << 14 | 0x3FFF);
    const std::uint32_t e = it[-1];
    if (e >> 14 == cp) {
      const std::uint32_t* d = unicode::kDecompositionPool + (e >> 2 & 0xFFF);
      for (std::uint32_t k = 0; k <= (e & 3); ++k) out.push_back(with_class(d[k]));
      return;
    }
  }
  out.push_back(with_class(cp));
}

// The primary composite of the starter a followed by b, or 0 if there is none.
std::uint32_t compose_pair(std::uint32_t a, std::uint32_t b) {
  // L + V -> LV; LV + T -> LVT (T_BASE itself is not a trailing consonant). Unsigned wrap-around
  // makes each range test one comparison.
  if (a - kLBase < kLCount && b - kVBase < kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a - kSBase < kSCount && (a - kSBase) % kTCount == 0 && b - kTBase - 1 < kTCount - 1) {
    return a + (b - kTBase);
  }
  const std::uint64_t key = static_cast<std::uint64_t>(a) << 42 | static_cast<std::uint64_t>(b)
                                                                      << 21;
  const std::uint64_t* end = unicode::kCompositions + unicode::kCompositionCount;
  const std::uint64_t* it = std::lower_bound(unicode::kCompositions, end, key);
  if (it != end && *it >> 21 == key >> 21) return static_cast<std::uint32_t>(*it & kCpMask);
  return 0;
}

// Canonical ordering: a stable sort of each run of non-starters by combining class. Runs are short
// in real text (insertion sort, no allocation); a long adversarial run takes std::stable_sort's O(n
// log n).
void canonical_order(std::vector<std::uint32_t>& v) {
  const auto by_class = [](std::uint32_t x, std::uint32_t y) { return class_of(x) < class_of(y); };
  std::size_t i = 0;
  while (i < v.size()) {
    if (class_of(v[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    while (j < v.size() && class_of(v[j]) != 0) ++j;
    if (j - i > 32) {
      std::stable_sort(v.begin() + static_cast<std::ptrdiff_t>(i),
                       v.begin() + static_cast<std::ptrdiff_t>(j), by_class);
    } else {
      for (std::size_t k = i + 1; k < j; ++k) {
        const std::uint32_t x = v[k];
        std::size_t m = k;
        for (; m > i && by_class(x, v[m - 1]); --m) v[m] = v[m - 1];
        v[m] = x;
      }
    }
    i = j;
  }
}

// Canonical composition in place: each character composes with the last starter unless it is
// blocked (a character between them has class 0 or a class not below its own).
void compose(std::vector<std::uint32_t>& v) {
  constexpr std::size_t kNoStarter = static_cast<std::size_t>(-1);
  std::size_t starter = kNoStarter;
  std::uint32_t last_class = 0;  // of the last character kept; 0 right after the starter
  std::size_t kept = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::uint32_t x = v[i];
    const std::uint32_t cls = class_of(x);
    if (starter != kNoStarter && (last_class == 0 || last_class < cls)) {
      // Primary composites are starters (class 0), so the composite replaces the starter as is.
      if (const std::uint32_t c = compose_pair(v[starter], x & kCpMask); c != 0) {
        v[starter] = c;
        continue;
      }
    }
    if (cls == 0) starter = kept;
    last_class = cls;
    v[kept++] = x;
  }
  v.resize(kept);
}

}  // namespace

std::size_t find_invalid_utf8(std::string_view s) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    i = skip_ascii8(s, i);
    if (i >= n) break;
    const Probe p = probe(s, i);
    if (!p.complete) return i;
    i += p.len;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  std::size_t i = 0;
  while (i < bytes.size()) {
    const Probe p = probe(bytes, i);
    if (p.complete) {
      out.append(bytes.substr(i, p.len));
      i += p.len;
    } else {
      out.append("\xEF\xBF\xBD");
      i += p.len == 0 ? 1 : p.len;
    }
  }
  return out;
}

std::string_view nfc_normalize(std::string_view text, std::string& buf) {
  std::size_t unsafe = find_nfc_unsafe(text, 0);
  if (unsafe == std::string_view::npos) return text;
  // Reused across calls on one thread, like the tokenizer's Scratch.
  thread_local std::vector<std::uint32_t> stretch;
  buf.clear();
  buf.reserve(text.size() + text.size() / 8 + 16);
  std::size_t done = 0;  // text[0, done) is in buf
  while (unsafe != std::string_view::npos) {
    // The stretch starts at the unflagged code point before `unsafe` unless that one is already in
    // buf (only at the start of the text: a stretch ends before an unflagged code point).
    std::size_t start = unsafe;
    if (start > done) {
      do {
        --start;
      } while ((static_cast<unsigned char>(text[start]) & 0xC0) == 0x80);
    }
    buf.append(text.substr(done, start - done));
    stretch.clear();
    if (start < unsafe) decompose(decode_utf8_at(text, start, unsafe - start), stretch);
    std::size_t end = unsafe;
    while (end < text.size()) {
      const std::size_t len = utf8_sequence_length(text, end);
      const std::uint32_t cp = decode_utf8_at(text, end, len);
      if (end > unsafe && (unicode::props(cp) & unicode::kNfcUnsafe) == 0) break;
      decompose(cp, stretch);
      end += len;
    }
    canonical_order(stretch);
    compose(stretch);
    for (std::uint32_t x : stretch) append_utf8(buf, x & kCpMask);
    done = end;
    unsafe = find_nfc_unsafe(text, end);
  }
  buf.append(text.substr(done));
  return buf;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace kvroute::tokenizer::internal
