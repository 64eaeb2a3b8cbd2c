#!/usr/bin/env python3
"""Checks the edges between src/ folders against each library's CMake declaration.

For every kvroute_cc_library in src/*/CMakeLists.txt:
  * each kvroute_* target it links (DEPS) provides a header that the library's sources, or the
    headers of its own folder that they include, actually include: a library links only what it
    includes (no edge kept alive by habit, such as routing linking the whole network layer to name
    an endpoint);
  * each third-party package it links is included by it too (Boost, simdjson, yaml-cpp, fmt,
    spdlog, ZMQ, xxHash, CLI11, gRPC, protobuf, and the generated ext_proc messages);
  * each kvroute header it includes belongs to itself or to a target it reaches through DEPS;
  * no source outside a folder includes a header under that folder's internal/ subfolder
    (ARCHITECTURE.md: "Headers and internals").

Usage: layering_check.py SOURCE_DIR. Prints every violation; exit status 1 if any.
"""
import os
import re
import sys

THIRD_PARTY = {
    # CMake target -> include prefixes that need it
    "Boost::headers": ("boost/",),
    "simdjson::simdjson": ("simdjson.h",),
    "yaml-cpp": ("yaml-cpp/",),
    "fmt::fmt": ("fmt/",),
    "spdlog::spdlog": ("spdlog/",),
    "PkgConfig::ZMQ": ("zmq.h", "zmq.hpp", "zmq_addon.hpp"),
    "PkgConfig::XXHASH": ("xxhash.h",),
    "CLI11::CLI11": ("CLI/",),
    "PkgConfig::GRPCPP": ("grpcpp/",),
    "PkgConfig::PROTOBUF": ("google/protobuf/",),
    # libssl's headers and Asio's SSL layer need libssl; every OpenSSL header needs libcrypto.
    "OpenSSL::SSL": ("openssl/ssl", "boost/asio/ssl"),
    "OpenSSL::Crypto": ("openssl/",),
    # Messages and stubs protoc generates from src/epp/proto (not a kvroute_cc_library).
    "kvroute_epp_proto": ("envoy/", "grpc/health/"),
}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)
LIBRARY = re.compile(r"kvroute_cc_library\((\w+)(.*?)\)", re.S)


def words_after(body, key):
    m = re.search(r"\b" + key + r"\b(.*?)(?=\b(?:SRCS|DEPS|TIMEOUT|LABELS)\b|$)", body, re.S)
    return m.group(1).split() if m else []


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    src = os.path.join(root, "src")
    libs = {}  # name -> {"folder", "srcs", "deps"}
    for folder in sorted(os.listdir(src)):
        cm = os.path.join(src, folder, "CMakeLists.txt")
        if not os.path.isfile(cm):
            continue
        text = re.sub(r"#[^\n]*", "", open(cm).read())
        for m in LIBRARY.finditer(text):
            libs[m.group(1)] = {
                "folder": folder,
                "srcs": words_after(m.group(2), "SRCS"),
                "deps": words_after(m.group(2), "DEPS"),
            }

    # Which library a header "folder/name.h" belongs to: the one compiling folder/name.cc, else the
    # folder's library named kvroute_<folder>, else its only library.
    def owner(header):
        folder, _, rest = header.partition("/")
        stem = os.path.basename(rest).rsplit(".", 1)[0]
        in_folder = [n for n, l in libs.items() if l["folder"] == folder]
        for n in in_folder:
            if stem + ".cc" in libs[n]["srcs"]:
                return n
        if "kvroute_" + folder in in_folder:
            return "kvroute_" + folder
        return in_folder[0] if len(in_folder) == 1 else None

    def includes(path):
        try:
            return INCLUDE.findall(open(path, encoding="utf-8", errors="replace").read())
        except FileNotFoundError:
            return []

    def closure(name):
        seen, todo = set(), list(libs[name]["deps"])
        while todo:
            d = todo.pop()
            if d in seen:
                continue
            seen.add(d)
            if d in libs:
                todo.extend(libs[d]["deps"])
        return seen

    errors = []
    for name, lib in sorted(libs.items()):
        folder = lib["folder"]
        # The library's sources and the own-folder headers they reach.
        files = [os.path.join(src, folder, s) for s in lib["srcs"]]
        seen_files, used_kv, used_tp = set(), set(), set()
        while files:
            f = files.pop()
            if f in seen_files:
                continue
            seen_files.add(f)
            for kind, inc in includes(f):
                if kind == '"':
                    if inc.startswith(folder + "/"):
                        files.append(os.path.join(src, inc))
                        o = owner(inc)
                        if o and o != name:
                            used_kv.add(o)
                    elif "/" in inc and os.path.isdir(os.path.join(src, inc.split("/")[0])):
                        o = owner(inc)
                        if o is None:
                            errors.append(f"{name}: {os.path.relpath(f, root)} includes {inc}, "
                                          "which belongs to no library")
                        else:
                            used_kv.add(o)
                for target, prefixes in THIRD_PARTY.items():
                    if inc.startswith(prefixes):
                        used_tp.add(target)
                if inc.startswith("boost/asio") and name != "kvroute_asio":
                    used_kv.add("kvroute_asio")  # Asio compiled once (src/http/asio_impl.cc)
        reach = closure(name)
        for o in sorted(used_kv):
            if o not in reach:
                errors.append(f"{name} includes a header of {o} but does not link it")
        for d in lib["deps"]:
            if d.startswith("kvroute_") and d not in THIRD_PARTY and d not in used_kv:
                errors.append(f"{name} links {d} but includes none of its headers")
            if d in THIRD_PARTY and d not in used_tp:
                errors.append(f"{name} links {d} but includes none of its headers")
        for t in sorted(used_tp):
            if t not in reach and not any(t in libs.get(d, {}).get("deps", []) for d in reach):
                errors.append(f"{name} includes {t} headers but does not link it")

    # Internal headers stay inside their folder.
    for dirpath, _, names in os.walk(src):
        for n in names:
            if not n.endswith((".h", ".cc")):
                continue
            path = os.path.join(dirpath, n)
            folder = os.path.relpath(path, src).split(os.sep)[0]
            for kind, inc in includes(path):
                parts = inc.split("/")
                if kind == '"' and len(parts) > 2 and parts[1] == "internal" and parts[0] != folder:
                    errors.append(f"{os.path.relpath(path, root)} includes {inc}, internal to "
                                  f"{parts[0]}/")

    for e in errors:
        print(e)
    print(f"{len(libs)} libraries checked, {len(errors)} violations")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
