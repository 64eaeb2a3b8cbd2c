#!/usr/bin/env python3
"""Generates src/tokenizer/unicode_tables.cc: one property byte per code point (a two-stage table) and the
data of Unicode NFC (UAX #15): canonical combining classes, full canonical decompositions and the primary
composites.

Property bits (see unicode_tables.h):
  1  kLetter      general category L* (\\p{L})
  2  kNumber      general category N* (\\p{N})
  4  kWhiteSpace  the Unicode White_Space property (what Oniguruma and the Rust regex crate mean by \\s)
  8  kNfcUnsafe   a code point that may change under NFC: it is not NFC-stable on its own, has a non-zero
                  canonical combining class, or appears as a non-initial part of some canonical decomposition
                  (so it could compose with what precedes it). A string with none of these is already NFC.
 16  kNfcQcNo     NFC would change the code point on its own (it decomposes and does not recompose to itself)

NFC data (Hangul syllables are algorithmic and not tabled):
  kCccStage1/kCccStage2  canonical combining class, two-stage with kCccBlockSize, for code points below
                         kCccLimit (all others have class 0)
  kDecompositions        sorted; cp << 14 | offset << 2 | (length - 1): the full (recursive) canonical
                         decomposition of cp is kDecompositionPool[offset, offset + length)
  kCompositions          sorted; first << 42 | second << 21 | composite: the canonical pairs whose composite
                         is not excluded from composition (Full_Composition_Exclusion), i.e. NFC(composite)
                         is the composite itself

Usage: python3 src/tokenizer/gen_unicode_tables.py > src/tokenizer/unicode_tables.cc
The Unicode version is Python's unicodedata.unidata_version; it is written into the output.
"""
import sys
import unicodedata

LETTER, NUMBER, WHITE_SPACE, NFC_UNSAFE, NFC_QC_NO = 1, 2, 4, 8, 16
BLOCK = 128
CCC_BLOCK = 64
CCC_LIMIT = 0x20000
# internal.cc's scan skips UTF-8 lead bytes below 0xCC, i.e. code points below U+0300.
FIRST_NFC_UNSAFE = 0x300
HANGUL_S_BASE, HANGUL_S_COUNT = 0xAC00, 11172

# White_Space from PropList.txt (stable since Unicode 6.3, when U+180E left it).
WHITE_SPACE_CPS = [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                   0x202F, 0x205F, 0x3000]


def is_surrogate(cp: int) -> bool:
    return 0xD800 <= cp <= 0xDFFF


def two_stage(values: list[int], block: int) -> tuple[list[int], list[bytes]]:
    blocks: list[bytes] = []
    index: dict[bytes, int] = {}
    stage1 = []
    for start in range(0, len(values), block):
        blk = bytes(values[start:start + block])
        if blk not in index:
            index[blk] = len(blocks)
            blocks.append(blk)
        stage1.append(index[blk])
    return stage1, blocks


def write_array(out, ctype: str, name: str, values: list, per_line: int, fmt=str) -> None:
    out.write(f"const {ctype} {name}[{len(values)}] = {{\n")
    for i in range(0, len(values), per_line):
        out.write("    " + ", ".join(fmt(x) for x in values[i:i + per_line]) + ",\n")
    out.write("};\n\n")


def main() -> None:
    n = sys.maxunicode + 1
    props = bytearray(n)
    ccc = [0] * n
    for cp in range(n):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        v = 0
        if cat[0] == "L":
            v |= LETTER
        elif cat[0] == "N":
            v |= NUMBER
        ccc[cp] = unicodedata.combining(ch)
        if ccc[cp] != 0:
            v |= NFC_UNSAFE
        if is_surrogate(cp):
            props[cp] = v
            continue
        if unicodedata.normalize("NFC", ch) != ch:
            v |= NFC_UNSAFE | NFC_QC_NO
        props[cp] = v
    for cp in WHITE_SPACE_CPS:
        props[cp] |= WHITE_SPACE

    # Full canonical decompositions (NFD of the single code point: recursive, already in canonical order),
    # and the primary composites: canonical pairs whose composite NFC leaves alone (that excludes the
    # singletons, the non-starter decompositions and CompositionExclusions.txt).
    decompositions: dict[int, str] = {}
    compositions: dict[tuple[int, int], int] = {}
    for cp in range(n):
        if is_surrogate(cp):
            continue
        ch = chr(cp)
        d = unicodedata.normalize("NFD", ch)
        # Anything that appears after the first code point of a full canonical decomposition may combine with
        # a preceding character (this covers Hangul V and T jamo too).
        for c in d[1:]:
            props[ord(c)] |= NFC_UNSAFE
        if HANGUL_S_BASE <= cp < HANGUL_S_BASE + HANGUL_S_COUNT:
            continue
        if d != ch:
            decompositions[cp] = d
        raw = unicodedata.decomposition(ch)
        if raw and not raw.startswith("<"):
            parts = [int(x, 16) for x in raw.split()]
            if len(parts) == 2 and unicodedata.normalize("NFC", ch) == ch:
                compositions[(parts[0], parts[1])] = cp

    # The invariants internal.cc's normalizer relies on.
    assert all(props[cp] & NFC_UNSAFE == 0 for cp in range(FIRST_NFC_UNSAFE))
    assert all(c == 0 for c in ccc[CCC_LIMIT:])
    seconds = {b for (_, b) in compositions}
    for (a, b), c in compositions.items():
        assert ccc[a] == 0 and ccc[c] == 0 and props[b] & NFC_UNSAFE
    for cp in range(n):
        # A code point without kNfcUnsafe starts a stretch that normalizes independently of what precedes
        # it: its decomposition begins with a starter that does not compose with an earlier character.
        if not is_surrogate(cp) and not props[cp] & NFC_UNSAFE:
            first = ord(unicodedata.normalize("NFD", chr(cp))[0])
            assert ccc[first] == 0 and first not in seconds, hex(cp)

    pool: list[int] = []
    entries: list[int] = []
    for cp in sorted(decompositions):
        d = [ord(c) for c in decompositions[cp]]
        assert cp < (1 << 18) and len(pool) < (1 << 12) and 1 <= len(d) <= 4
        entries.append(cp << 14 | len(pool) << 2 | (len(d) - 1))
        pool.extend(d)
    pairs = sorted(a << 42 | b << 21 | c for (a, b), c in compositions.items())

    stage1, blocks = two_stage(list(props), BLOCK)
    ccc_stage1, ccc_blocks = two_stage(ccc[:CCC_LIMIT], CCC_BLOCK)
    assert len(ccc_blocks) < 256

    out = sys.stdout
    out.write("// File: tokenizer/unicode_tables.cc\n")
    out.write("//\n// GENERATED by src/tokenizer/gen_unicode_tables.py from Python's unicodedata "
              f"(Unicode {unicodedata.unidata_version}). Do not edit.\n\n")
    out.write('#include "tokenizer/internal/unicode_tables.h"\n\n#include <cstddef>\n#include <cstdint>\n\n')
    out.write("namespace kvroute::tokenizer::unicode {\n\n")
    out.write(f"static_assert(kBlockSize == {BLOCK});\n")
    out.write(f"static_assert(kCccBlockSize == {CCC_BLOCK});\n")
    out.write(f"static_assert(kCccLimit == 0x{CCC_LIMIT:X});\n")
    out.write(f"static_assert(kFirstNfcUnsafe == 0x{FIRST_NFC_UNSAFE:X});\n\n")
    out.write(f'const char kUnicodeVersion[] = "{unicodedata.unidata_version}";\n\n')
    write_array(out, "std::uint16_t", "kStage1", stage1, 16)
    out.write(f"const std::uint8_t kStage2[{len(blocks) * BLOCK}] = {{\n")
    for blk in blocks:
        for i in range(0, BLOCK, 32):
            out.write("    " + ",".join(str(x) for x in blk[i:i + 32]) + ",\n")
    out.write("};\n\n")
    write_array(out, "std::uint8_t", "kCccStage1", ccc_stage1, 32)
    out.write(f"const std::uint8_t kCccStage2[{len(ccc_blocks) * CCC_BLOCK}] = {{\n")
    for blk in ccc_blocks:
        for i in range(0, CCC_BLOCK, 32):
            out.write("    " + ",".join(str(x) for x in blk[i:i + 32]) + ",\n")
    out.write("};\n\n")
    out.write(f"const std::size_t kDecompositionCount = {len(entries)};\n")
    write_array(out, "std::uint32_t", "kDecompositions", entries, 8, lambda x: f"0x{x:08X}")
    write_array(out, "std::uint32_t", "kDecompositionPool", pool, 8, lambda x: f"0x{x:05X}")
    out.write(f"const std::size_t kCompositionCount = {len(pairs)};\n")
    write_array(out, "std::uint64_t", "kCompositions", pairs, 4, lambda x: f"0x{x:016X}")
    out.write("}  // namespace kvroute::tokenizer::unicode\n")


if __name__ == "__main__":
    main()
