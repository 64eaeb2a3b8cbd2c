#!/usr/bin/env python3
"""Independent msgpack oracle for kv_events codec tests (python3-msgpack, not our codec).

  msgpack_oracle.py check FILE     FILE lines: "<mode> <hex payload> <json description>".
      Decodes each payload with msgpack, builds the layout vLLM's msgspec structs would produce
      for the description (field order, omit_defaults, tag placement), asserts equality (order
      included) and that msgpack.packb of that layout reproduces the payload byte for byte.
      Prints "ok N" or "FAIL ..." lines.
  msgpack_oracle.py generate       Prints "<hex payload>\t<canonical text>" lines: wire variants
      (arrays, maps, bin/negative/narrow hashes, unknown keys and tags, dp rank, old shapes) and
      the canonical dump of what a correct decoder must return (see codec_test.cc).
"""
import json
import struct
import sys

import msgpack

REQ = object()
STORED = [("block_hashes", REQ), ("parent_block_hash", REQ), ("token_ids", REQ),
          ("block_size", REQ), ("lora_id", REQ), ("medium", REQ), ("lora_name", REQ),
          ("extra_keys", None), ("group_idx", None), ("kv_cache_spec_kind", None),
          ("kv_cache_spec_sliding_window", None)]
REMOVED = [("block_hashes", REQ), ("medium", REQ), ("group_idx", None)]
SHORT = {"t": None, "h": "block_hashes", "p": "parent_block_hash", "tok": "token_ids",
         "bs": "block_size", "lid": "lora_id", "m": "medium", "ln": "lora_name", "ek": "extra_keys",
         "g": "group_idx", "k": "kv_cache_spec_kind", "w": "kv_cache_spec_sliding_window"}
U64 = (1 << 64) - 1


def values_of(e):
    v = {SHORT[k]: x for k, x in e.items() if k != "t"}
    if v.get("extra_keys") is not None:
        v["extra_keys"] = [msgpack.unpackb(bytes.fromhex(x), raw=False) for x in v["extra_keys"]]
    return v


def layout(desc, mode):
    events = []
    for e in desc["events"]:
        name = {"S": "BlockStored", "R": "BlockRemoved", "C": "AllBlocksCleared"}[e["t"]]
        fields = {"S": STORED, "R": REMOVED, "C": []}[e["t"]]
        v = values_of(e)
        if mode == "map":
            d = {"type": name}
            for f, dflt in fields:
                if dflt is REQ or v.get(f) is not None:
                    d[f] = v.get(f)
            events.append(d)
            continue
        if mode == "v09":
            fields = {"S": STORED[:5], "R": REMOVED[:1], "C": []}[e["t"]]
        arr = [name] + [v.get(f) for f, _ in fields]
        nreq = sum(1 for _, d in fields if d is REQ)
        while len(arr) > 1 + nreq and arr[-1] is None:
            arr.pop()
        events.append(arr)
    batch = [float(desc["ts"]), events]
    if desc.get("dp") is not None and mode != "v09":
        batch.append(desc["dp"])
    return batch


def ordered(x):
    if isinstance(x, dict):
        return ("MAP", [(k, ordered(v)) for k, v in x.items()])
    if isinstance(x, (list, tuple)):
        return [ordered(v) for v in x]
    return (type(x).__name__, x)


def check(path):
    n = 0
    bad = 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            mode, hexp, js = line.split(" ", 2)
            payload = bytes.fromhex(hexp)
            desc = json.loads(js)
            want = layout(desc, mode)
            got = msgpack.unpackb(payload, raw=False, strict_map_key=False)
            n += 1
            if ordered(got) != ordered(want):
                bad += 1
                print("FAIL structure", mode, repr(got), "!=", repr(want))
                continue
            repacked = msgpack.packb(want, use_bin_type=True)
            if repacked != payload:
                bad += 1
                print("FAIL bytes", mode, repacked.hex(), "!=", hexp)
    print("ok" if bad == 0 else "FAILED", n)


# ---- generate -------------------------------------------------------------------------------

def canon_opt(x):
    return "nil" if x is None else str(x)


def canon_event(e):
    if e["t"] == "S":
        ek = ",".join(e.get("ek") or [])
        return ("S(h=%s p=%s tok=%s bs=%d lid=%s m=%s ln=%s ek=%s g=%s k=%s w=%s)" % (
            ",".join(str(h & U64) for h in e["h"]), canon_opt(None if e.get("p") is None else e["p"] & U64),
            ",".join(str(t) for t in e["tok"]), e.get("bs", 0), canon_opt(e.get("lid")),
            canon_opt(e.get("m")), canon_opt(e.get("ln")), ek, canon_opt(e.get("g")),
            canon_opt(e.get("k")), canon_opt(e.get("w"))))
    if e["t"] == "R":
        return "R(h=%s m=%s g=%s)" % (",".join(str(h & U64) for h in e["h"]), canon_opt(e.get("m")),
                                      canon_opt(e.get("g")))
    return "C()"


def canon(ts, dp, events, unknown):
    return "ts=%s dp=%s unknown=%d events=%s" % (
        "%.17g" % ts, canon_opt(dp), unknown, ";".join(canon_event(e) for e in events))


def bin_hash(h):
    return b"\x13" * 24 + struct.pack(">Q", h)


def generate():
    out = []

    def emit(obj, ts, dp, events, unknown=0, **kw):
        out.append((msgpack.packb(obj, use_bin_type=True, **kw).hex(), canon(ts, dp, events, unknown)))

    H = 0xdab89baa7b5857c0
    toks = list(range(1, 17))
    s_full = {"t": "S", "h": [H], "p": None, "tok": toks, "bs": 16, "lid": None, "m": "GPU", "ln": None}
    # 1. v0.15 array shape with rank.
    emit([1757500000.25, [["BlockStored", [H], None, toks, 16, None, "GPU", None]], 0], 1757500000.25, 0, [s_full])
    # 2. v0.9.0 6-element, no rank.
    e = dict(s_full, m=None)
    emit([1.5, [["BlockStored", [H], None, toks, 16, None]]], 1.5, None, [e])
    # 3. map events (v0.26) with non-default optionals, as in the kthena capture.
    e = dict(s_full, ek=["c0"], g=0, k="full_attention")
    emit([1789095808.8378847, [{"type": "BlockStored", "block_hashes": [H], "parent_block_hash": None,
                                "token_ids": toks, "block_size": 16, "lora_id": None, "medium": "GPU",
                                "lora_name": None, "extra_keys": [None], "group_idx": 0,
                                "kv_cache_spec_kind": "full_attention"}], 0],
         1789095808.8378847, 0, [e])
    # 4. map batch (the contradiction in §1.1), map events with "type" not first and extra keys.
    e = {"t": "S", "h": [1, 2], "p": 77, "tok": list(range(32)), "bs": 16, "lid": 3, "m": "CPU",
         "ln": "adapter-a", "w": 4096}
    emit({"events": [{"block_hashes": [1, 2], "locality": "node", "type": "BlockStored",
                      "parent_block_hash": 77, "token_ids": list(range(32)), "block_size": 16,
                      "lora_id": 3, "medium": "CPU", "lora_name": "adapter-a", "session_id": "x",
                      "kv_cache_spec_sliding_window": 4096}],
          "ts": 2.0, "data_parallel_rank": 3, "future": [1, {"a": None}]}, 2.0, 3, [e])
    # 5. bin hashes (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0) and a bin parent.
    e = {"t": "S", "h": [H, 5], "p": 0x0102030405060708, "tok": toks + toks, "bs": 16, "lid": None,
         "m": "GPU", "ln": None}
    emit([3.0, [["BlockStored", [bin_hash(H), bin_hash(5)], bin_hash(0x0102030405060708),
                 toks + toks, 16, None, "GPU", None]]], 3.0, None, [e])
    # 6. short bin (< 8 bytes) and empty bin.
    e = {"t": "R", "h": [0xabcd, 0], "m": "GPU"}
    emit([4.0, [["BlockRemoved", [b"\xab\xcd", b""], "GPU"]]], 4.0, None, [e])
    # 7. negative hashes (--prefix-caching-hash-algo builtin) of every width, and narrow uints.
    hs = [-1, -32, -33, -200, -40000, -3000000000, -(1 << 63), 0, 127, 128, 255, 256, 65535, 65536,
          (1 << 32) - 1, 1 << 32, U64]
    e = {"t": "R", "h": hs, "m": None}
    emit([5.0, [["BlockRemoved", hs, None]]], 5.0, None, [e])
    # 8. negative parent, unknown tags (array and map), AllBlocksCleared both ways, extra trailing fields.
    e1 = {"t": "S", "h": [9], "p": -5, "tok": [1], "bs": 1, "lid": -2, "m": "GPU", "ln": None,
          "ek": ["9101", "c0"], "g": 1}
    emit([6.0, [["NewFancyEvent", 1, 2, [3]],
                ["BlockStored", [9], -5, [1], 1, -2, "GPU", None, [[1], None], 1, None, None, "more", {"x": 1}],
                {"type": "Mystery", "block_hashes": "not a list"},
                ["AllBlocksCleared"], {"type": "AllBlocksCleared", "extra": 1},
                ["BlockRemoved", [7], "CPU", 2, "locality"],
                {"block_hashes": [1]}], -1, "trailing-batch-field"],
         6.0, -1, [e1, {"t": "C"}, {"t": "C"}, {"t": "R", "h": [7], "m": "CPU", "g": 2}], unknown=3)
    # 9. float32 ts and integer ts.
    emit([0.5, [["AllBlocksCleared"]]], 0.5, None, [{"t": "C"}], use_single_float=True)
    emit([7, [], 2], 7.0, 2, [])
    # 10. large arrays: array16/array32 forms, tokens up to 2^32-1, long strings (str8/str16).
    many = list(range(70000))
    big_tok = [0, 127, 128, 65535, 65536, (1 << 32) - 1] * 3
    e = {"t": "S", "h": many, "p": None, "tok": big_tok, "bs": 6, "lid": None, "m": "G" * 40,
         "ln": "L" * 300}
    emit([8.0, [["BlockStored", many, None, big_tok, 6, None, "G" * 40, "L" * 300]]], 8.0, None, [e])
    # 11. nil for optional/nullable fields in maps and missing optional keys; lora_id only.
    e = {"t": "S", "h": [], "p": None, "tok": [], "bs": 0, "lid": 12, "m": None, "ln": None}
    emit([9.0, [{"type": "BlockStored", "block_hashes": [], "parent_block_hash": None, "token_ids": [],
                 "block_size": 0, "lora_id": 12, "group_idx": None}]], 9.0, None, [e])
    # 12. rank nil, map batch without dp and without ts.
    emit([10.0, [], None], 10.0, None, [])
    emit({"events": [["BlockRemoved", [1]]]}, 0.0, None, [{"t": "R", "h": [1], "m": None}])
    for hexp, c in out:
        print(hexp + "\t" + c)


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(sys.argv[2])
    elif sys.argv[1] == "generate":
        generate()
    else:
        sys.exit("usage: msgpack_oracle.py check FILE | generate")
