#!/usr/bin/env python3
"""Writes the tiny hand-made tokenizer fixtures (GPT-2 style and Qwen2 style) used by tokenizer_test.

Each fixture is a complete byte-level BPE tokenizer.json in HF's published format: the 256 byte symbols,
merges that build a few dozen chosen words left to right, and added tokens. GPT-2's merges are written in
the "a b" string form, Qwen2's in the ["a", "b"] array form. Run: python3 gen_fixtures.py (in this folder).
"""
import json
import os

LLAMA3_LIKE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()


def build(words, array_form):
    vocab = {}
    for b in range(256):
        vocab[B2U[b]] = len(vocab)
    merges = []
    seen = set()
    for w in words:
        syms = [B2U[b] for b in w.encode("utf-8")]
        cur = syms[0]
        for s in syms[1:]:
            pair = (cur, s)
            cur = cur + s
            if pair in seen:
                continue
            seen.add(pair)
            merges.append(list(pair) if array_form else f"{pair[0]} {pair[1]}")
            if cur not in vocab:
                vocab[cur] = len(vocab)
    return vocab, merges


COMMON = ["the", " the", " The", "ing", " and", "er", " er", "  ", "    ", "\n\n", "\n", " \n", "12", "123",
          "'s", "'t", "'re", "ll", " a", " in", " is", "he", "hello", " world", "ä", " ä", "über", "日本",
          "日本語", "👍", " 👍", "🏽", "é", "ñ", "ко", " код", "def", " return", "():", "==", " ==", "//", "->",
          "ab", "abc", "bc", "aaa", "aa", "\t", "\t\t", ". ", "...", "!!", " (", ");", "{}", "\r\n", "ा", "न"]


def gpt2():
    vocab, merges = build(COMMON + [" 12", "1999", " hello"], array_form=False)
    eot = len(vocab)
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": eot, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": True, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": merges},
    }


def qwen2():
    vocab, merges = build(COMMON + ["<think", "im", "_start", " user", "assistant"], array_form=True)
    n = len(vocab)
    added = []
    for i, (content, special, normalized, lstrip, rstrip) in enumerate([
            ("<|endoftext|>", True, False, False, False),
            ("<|im_start|>", True, False, False, False),
            ("<|im_end|>", True, False, False, False),
            ("<tool_call>", False, False, False, False),
            ("<think>", False, True, False, False),
            ("[LS]", True, False, True, False),
            ("[RS]", True, False, False, True),
            ("<|im_start|>x", True, False, False, False)]):
        added.append({"id": n + i, "content": content, "single_word": False, "lstrip": lstrip, "rstrip": rstrip,
                      "normalized": normalized, "special": special})
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_LIKE}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


QWEN_CONFIG = {
    "bos_token": None,
    "eos_token": {"content": "<|im_end|>", "lstrip": False, "normalized": False, "rstrip": False,
                  "single_word": False, "special": True},
    "chat_template": [
        {"name": "default", "template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                                        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"},
        {"name": "tool_use", "template": "{{ tools }}"}],
    "model_max_length": 131072,
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for name, obj in [("gpt2_tiny", gpt2()), ("qwen2_tiny", qwen2())]:
        os.makedirs(os.path.join(here, name), exist_ok=True)
        with open(os.path.join(here, name, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1)
    with open(os.path.join(here, "qwen2_tiny", "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(QWEN_CONFIG, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
