#!/usr/bin/env python3
"""Checks that scripts/setup.sh installs every Debian package the build really uses.

Why: a developer machine (or a CI image) that already has a library installed builds fine even when
scripts/setup.sh forgot to list it; the fresh machine then fails. This check cannot be fooled by what
happens to be installed: it looks at what the build *used* and asks dpkg who owns it.

What it does, for the build directory given as argument (a Ninja build made by CMake):
  1. Files the build uses from outside the source and build trees:
     - link steps (`ninja -t commands`): every absolute file path on a command line (static and
       shared libraries, the compiler and tools), every `-lNAME`/`-l:FILE` resolved through the
       command's -L directories and the compiler's search path, and the compiler's own runtime
       (libstdc++, libgcc, crt*.o, libc; `CXX -print-file-name=...`; clang's static sanitizer and
       libFuzzer runtimes when a link step has -fsanitize=, as in the fuzz build);
     - shared libraries that `ldd` resolves for every executable the build links (build/kvroute
       included); a library ldd reports as "not found" is a failure;
     - headers: `ninja -t deps` (the compiler's dependency output for each object file);
     - CMake configure inputs (the package config files and modules build.ninja re-runs CMake on).
  2. The owning package of each file (`dpkg -S`, in batches; the path, then its realpath and the
     /usr-merged twin, /lib/... <-> /usr/lib/...).
  3. The packages scripts/setup.sh installs: its PACKAGES=( ... ) array (read by bash, so comments
     are skipped) plus every `PACKAGES+=( ... )`, conditional or not (nodejs npm), and their
     dependency closure: recursive Depends and Pre-Depends (not Recommends: the set-up installs with
     --no-install-recommends) over the installed packages' metadata; every installed alternative of
     "a | b" counts, virtual packages resolve through Provides.
     Essential packages (Essential: yes) and their closure also count: Debian policy guarantees them
     on every system. Priority: required packages do NOT count (policy does not promise them).
  4. Failure: an owning package outside that set, one line each with an example file (a missing
     package that another missing one depends on is not named again); also a file
     under /usr, /lib*, or /opt that no package owns (installed by hand, e.g. /usr/local). Files
     elsewhere that no package owns are only warnings.

Usage: tests/setup_packages_check.py BUILD_DIR [--setup scripts/setup.sh] [--ninja PATH]
       [--tool PROGRAM ...] [--verbose]
--tool adds a program the suite runs outside the build (clang-format-14, clang-tidy-14, node,
prometheus, ...): the package owning it must be installed by the set-up as well.
Exit status: 0 pass, 1 missing packages, 2 the check could not run, 77 skipped (no dpkg: not Debian).
Registered in CTest as `setup_packages_check` (label `setup`) by tests/CMakeLists.txt. It reads the
build's Ninja logs, so run it after the build, not during one.
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

REPO_ROOT = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# An unowned file under these came from outside the package manager: fail rather than warn.
SYSTEM_PREFIXES = ("/usr/", "/lib/", "/lib32/", "/lib64/", "/libx32/", "/opt/")
# The compiler driver links these without naming them on the command line.
IMPLICIT_RUNTIME = ("libstdc++.so", "libm.so", "libgcc_s.so", "libgcc.a", "libc.so",
                    "crt1.o", "crti.o", "crtn.o", "crtbeginS.o", "crtendS.o", "Scrt1.o")


NINJA = "ninja"

SANITIZER_RUNTIME = {"address": ("asan", "asan_cxx"), "undefined": ("ubsan_standalone",
                     "ubsan_standalone_cxx"), "fuzzer": ("fuzzer",)}


class CheckError(Exception):
    pass


def run(cmd, check=True, **kw):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError as e:
        raise CheckError(f"cannot run {cmd[0]}: {e}")
    if check and p.returncode != 0:
        raise CheckError(f"{' '.join(cmd[:4])}... failed ({p.returncode}): {p.stderr.strip()[:500]}")
    return p


# ---------------------------------------------------------------------------------------------
# 3. The set-up's packages and their dependency closure.

def setup_packages(setup_path):
    """Package names scripts/setup.sh installs, as bash itself reads the PACKAGES array."""
    with open(setup_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    snippet, inside = [], False
    for line in lines:  # the block from `PACKAGES=(` to the `)` that starts a line, as sed would
        if not inside and re.match(r"^PACKAGES=\(", line):
            inside = True
            if re.match(r"^PACKAGES=\([^#]*\)\s*(#.*)?$", line):  # all on one line
                snippet.append(line)
                inside = False
                continue
        if inside:
            snippet.append(line)
            if re.match(r"^\)", line):
                inside = False
    if not snippet:
        raise CheckError(f"{setup_path}: no PACKAGES=( ... ) array found")
    # Appends such as `command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)` count as listed.
    for line in lines:
        for m in re.finditer(r"PACKAGES\+=\([^)]*\)", line):
            snippet.append(m.group(0))
    script = "\n".join(snippet) + '\nprintf "%s\\n" "${PACKAGES[@]}"\n'
    p = run(["bash", "--noprofile", "--norc", "-c", script])
    names = [strip_name(n) for n in p.stdout.split()]
    if not names:
        raise CheckError(f"{setup_path}: PACKAGES is empty")
    return names


def strip_name(dep):
    """'libfoo-dev:amd64 (>= 1.2) [amd64] <!nocheck>' -> 'libfoo-dev'; 'foo=1.2' -> 'foo'."""
    dep = re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", dep).strip()
    dep = dep.split("=", 1)[0].strip()
    return dep.split(":", 1)[0]


def parse_relation(field):
    """Depends-style field -> list of alternative groups, each a list of bare names."""
    groups = []
    for group in field.split(","):
        alts = [strip_name(a) for a in group.split("|")]
        alts = [a for a in alts if a]
        if alts:
            groups.append(alts)
    return groups


def installed_packages():
    fmt = "${db:Status-Abbrev}\t${Package}\t${Essential}\t${Depends}\t${Pre-Depends}\t${Provides}\n"
    p = run(["dpkg-query", "-W", "-f", fmt])
    deps, providers, essential = {}, {}, set()
    for line in p.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) != 6 or not fields[0].startswith("ii"):
            continue  # only fully installed packages
        _, name, ess, depends, predepends, provides = fields
        groups = parse_relation(depends) + parse_relation(predepends)
        deps.setdefault(name, []).extend(groups)  # Multi-Arch: same packages appear once per arch
        for group in parse_relation(provides):
            for virtual in group:
                providers.setdefault(virtual, set()).add(name)
        if ess == "yes":
            essential.add(name)
    return deps, providers, essential


def closure(roots, deps, providers):
    """Every installed package reachable from roots through Depends/Pre-Depends."""
    def resolve(name):  # a real installed package and/or installed providers of a virtual one
        found = set(providers.get(name, ()))
        if name in deps:
            found.add(name)
        return found

    seen, todo = set(), []
    for r in roots:
        todo.extend(resolve(r))
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        for group in deps.get(pkg, ()):
            for alt in group:  # every installed alternative counts
                todo.extend(resolve(alt) - seen)
    return seen


# ---------------------------------------------------------------------------------------------
# 1. The files the build uses from outside the source and build trees.

def outside(path, build_dir):
    path = os.path.normpath(path)
    for root in (REPO_ROOT, build_dir):
        if path == root or path.startswith(root + os.sep):
            return False
    return True


def split_commands(command):
    """`: && /usr/bin/c++ ... && cd x && cmake ...` -> list of argv lists."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    cmds, cur = [], []
    for t in tokens:
        if t in ("&&", "||", ";", "|"):
            if cur:
                cmds.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        cmds.append(cur)
    return cmds


def compiler_search_dirs(cxx, cache):
    if cxx not in cache:
        p = run([cxx, "-print-search-dirs"], check=False)
        dirs = []
        for line in p.stdout.splitlines():
            if line.startswith("libraries:"):
                dirs = [d for d in line.split("=", 1)[-1].split(":") if d]
        cache[cxx] = [os.path.normpath(d) for d in dirs]
    return cache[cxx]


def print_file_name(cxx, name, cache):
    key = (cxx, name)
    if key not in cache:
        p = run([cxx, f"-print-file-name={name}"], check=False)
        out = p.stdout.strip()
        cache[key] = out if os.path.isabs(out) and os.path.exists(out) else None
    return cache[key]


def clang_sanitizer_runtime(cxx, argv, cache):
    """clang links its sanitizer/libFuzzer runtimes statically from its runtime dir (GCC's libasan
    and libubsan are shared: ldd finds them)."""
    if "clang" not in os.path.basename(cxx):
        return []
    sanitizers = set()
    for tok in argv:
        if tok.startswith("-fsanitize="):
            sanitizers.update(tok.split("=", 1)[1].split(","))
    stems = [s for san in sorted(sanitizers) for s in SANITIZER_RUNTIME.get(san, ())]
    if not stems:
        return []
    key = (cxx, "-print-runtime-dir")
    if key not in cache:
        cache[key] = run([cxx, "-print-runtime-dir"], check=False).stdout.strip()
    rtdir = cache[key]
    found = [os.path.join(rtdir, f"libclang_rt.{s}-x86_64.a") for s in stems]
    return [f for f in found if os.path.isfile(f)]


def link_step_files(build_dir, verbose):
    """Absolute files on the link command lines, -l libraries, the compiler runtime; and the
    executables the build links (for ldd)."""
    p = run([NINJA, "-n", "-C", build_dir, "-t", "commands"])
    files = {}        # path -> what used it
    outputs = []      # linked executables
    search_cache, pfn_cache = {}, {}
    for line in p.stdout.splitlines():
        for argv in split_commands(line):
            if not argv:
                continue
            is_compile = "-c" in argv
            prog = argv[0]
            if os.path.isabs(prog):
                files.setdefault(prog, "tool")
            if is_compile:
                continue  # headers come from ninja -t deps; -I dirs are not files
            is_compiler_link = "-o" in argv and re.search(r"(c\+\+|g\+\+|gcc|cc|clang[^/]*)$", prog)
            ldirs, static = [], "-static" in argv
            for i, tok in enumerate(argv[1:], 1):
                # Absolute paths, bare or inside a flag (-Wl,-rpath,/x, --sysroot=/x, -L/x).
                for m in re.finditer(r"(?:^|[=,])(/[^,=\s]+)", tok) if not tok.startswith("-L") else ():
                    path = m.group(1)
                    if os.path.isfile(path):
                        files.setdefault(path, "link line")
                if tok.startswith("-L"):
                    ldirs.append(tok[2:] or argv[i + 1])
            if not is_compiler_link:
                continue
            out = argv[argv.index("-o") + 1]
            outputs.append(out if os.path.isabs(out) else os.path.join(build_dir, out))
            sdirs = [d if os.path.isabs(d) else os.path.join(build_dir, d) for d in ldirs]
            sdirs += compiler_search_dirs(prog, search_cache)
            libs = [tok[2:] or argv[i + 1] for i, tok in enumerate(argv) if tok.startswith("-l")]
            for lib in libs:
                names = [lib[1:]] if lib.startswith(":") else (
                    [f"lib{lib}.a"] if static else [f"lib{lib}.so", f"lib{lib}.a"])
                hit = next((os.path.join(d, n) for n in names for d in sdirs
                            if os.path.exists(os.path.join(d, n))), None)
                if hit is None:
                    raise CheckError(f"cannot resolve -l{lib} of the link step for {out}")
                files.setdefault(os.path.normpath(hit), f"-l{lib}")
            for name in IMPLICIT_RUNTIME:
                hit = print_file_name(prog, name, pfn_cache)
                if hit:
                    files.setdefault(os.path.normpath(hit), "compiler runtime")
            for path in clang_sanitizer_runtime(prog, argv, pfn_cache):
                files.setdefault(path, "sanitizer runtime")
    if verbose:
        print(f"link steps: {len(outputs)} linked executables, {len(files)} files", file=sys.stderr)
    return files, outputs


def ldd_files(executables, verbose):
    files, not_found = {}, []
    absent = [os.path.relpath(e) for e in executables if not os.path.exists(e)]
    if absent:
        print(f"warning: {len(absent)} linked program(s) not built, so not checked with ldd: "
              + " ".join(sorted(absent)[:5]) + (" ..." if len(absent) > 5 else ""), file=sys.stderr)
    for exe in executables:
        if not os.path.exists(exe):
            continue
        p = run(["ldd", exe], check=False)
        if p.returncode != 0:
            continue  # a static executable or not ELF
        for line in p.stdout.splitlines():
            line = line.strip()
            m = re.match(r"(\S+) => not found", line)
            if m:
                not_found.append((m.group(1), exe))
                continue
            m = re.match(r"(?:\S+ => )?(/\S+) \(0x", line)
            if m:
                files.setdefault(os.path.normpath(m.group(1)), f"ldd {os.path.basename(exe)}")
    if verbose:
        print(f"ldd: {len(files)} shared libraries", file=sys.stderr)
    return files, not_found


def header_files(build_dir, verbose):
    # -n: dry run, so ninja neither recompacts nor writes its logs.
    p = run([NINJA, "-n", "-C", build_dir, "-t", "deps"])
    files, objects = {}, 0
    for line in p.stdout.splitlines():
        if not line.startswith(" ") and "#deps" in line:
            objects += 1
            continue
        path = line.strip()
        if path.startswith("/"):
            files.setdefault(os.path.normpath(path), "#include")
    if objects == 0:
        raise CheckError(f"`ninja -t deps` in {build_dir} lists no object files: build first")
    if verbose:
        print(f"headers: {len(files)} absolute paths from {objects} object files", file=sys.stderr)
    return files


def configure_files(build_dir):
    """Inputs of build.ninja's RERUN_CMAKE edge: the CMake package files and modules used."""
    files = {}
    with open(os.path.join(build_dir, "build.ninja"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^build build\.ninja\S*: RERUN_CMAKE \|(.*?)$", text, re.M)
    if m:
        for path in m.group(1).split():
            if path.startswith("/") and os.path.isfile(path):
                files.setdefault(os.path.normpath(path), "cmake configure")
    return files


# ---------------------------------------------------------------------------------------------
# 2. Owners.

def dpkg_search(paths):
    """{path: [package, ...]} for the paths dpkg knows; batched `dpkg -S` calls."""
    owners, paths = {}, sorted(set(paths))
    for i in range(0, len(paths), 500):
        batch = paths[i:i + 500]
        p = run(["dpkg-query", "-S", "--"] + batch, check=False)
        for line in p.stdout.splitlines():
            if line.startswith("diversion by"):
                continue
            pkgs, sep, path = line.partition(": ")
            if not sep:
                continue
            owners.setdefault(path, []).extend(strip_name(x) for x in pkgs.split(","))
    return owners


def usrmerge_twin(path):
    if path.startswith("/usr/"):
        rest = path[len("/usr"):]
        if re.match(r"/(s?bin|lib[^/]*)/", rest):
            return rest
    elif re.match(r"/(s?bin|lib[^/]*)/", path):
        return "/usr" + path
    return None


def owners_of(paths):
    result = dpkg_search(paths)
    found = {p: result[p] for p in paths if p in result}
    retry = {}
    for p in paths:
        if p in found:
            continue
        cands = []
        real = os.path.realpath(p)
        for c in (real, usrmerge_twin(p), usrmerge_twin(real)):
            if c and c != p and c not in cands:
                cands.append(c)
        retry[p] = cands
    if retry:
        result = dpkg_search([c for cs in retry.values() for c in cs])
        for p, cands in retry.items():
            for c in cands:
                if c in result:
                    found[p] = result[c]
                    break
    return found


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build_dir")
    ap.add_argument("--setup", default=os.path.join(REPO_ROOT, "scripts", "setup.sh"),
                    help="the set-up script whose PACKAGES array is checked (default: %(default)s)")
    ap.add_argument("--ninja", default="ninja", help="the build's ninja (default: %(default)s)")
    ap.add_argument("--tool", action="append", default=[],
                    help="a program the suite runs besides the build (clang-format, clang-tidy, "
                         "node, prometheus...): its package must be installed by the set-up too")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args()
    global NINJA
    NINJA = args.ninja
    if shutil.which("dpkg-query") is None:
        print("setup_packages_check: skipped: no dpkg-query (scripts/setup.sh is for Debian)")
        return 77
    start = time.monotonic()
    build_dir = os.path.realpath(args.build_dir)
    if not os.path.isfile(os.path.join(build_dir, "build.ninja")):
        raise CheckError(f"{build_dir}: no build.ninja (a CMake Ninja build directory is needed)")
    for tool in (NINJA, "ldd", "bash"):
        if shutil.which(tool) is None:
            raise CheckError(f"{tool} is not on PATH")

    listed = setup_packages(args.setup)
    deps, providers, essential = installed_packages()
    allowed = closure(listed, deps, providers)
    base = closure(essential, deps, providers)

    used = {}
    link, executables = link_step_files(build_dir, args.verbose)
    lddf, not_found = ldd_files(executables, args.verbose)
    tools = {}
    for tool in args.tool:
        found = shutil.which(tool) or tool
        if not os.path.exists(found):
            raise CheckError(f"{tool}: not found (a program the suite runs)")
        tools[os.path.realpath(found)] = "a program the suite runs"
    for src in (configure_files(build_dir), link, lddf, header_files(build_dir, args.verbose),
                tools):
        for path, why in src.items():
            if outside(path, build_dir):
                used.setdefault(path, why)

    owners = owners_of(list(used))
    missing = {}     # package -> (example file, why)
    unowned_fail, unowned_warn = [], []
    for path in sorted(used):
        pkgs = owners.get(path)
        if not pkgs:
            (unowned_fail if path.startswith(SYSTEM_PREFIXES) else unowned_warn).append(path)
            continue
        if any(p in allowed or p in base for p in pkgs):
            continue
        missing.setdefault(pkgs[0], (path, used[path]))

    # Name only what to add: a missing package that another missing one depends on comes with it.
    for pkg in list(missing):
        if any(pkg in closure([other], deps, providers) for other in missing if other != pkg):
            del missing[pkg]

    setup_rel = os.path.relpath(os.path.realpath(args.setup), REPO_ROOT)
    if setup_rel.startswith(".."):
        setup_rel = args.setup
    for path in unowned_warn:
        print(f"warning: {path} ({used[path]}) is owned by no Debian package", file=sys.stderr)
    failures = 0
    for lib, exe in sorted(set(not_found)):
        print(f"FAIL: {lib} (needed by {exe}) is not found by the dynamic loader")
        failures += 1
    for path in unowned_fail:
        print(f"FAIL: {path} ({used[path]}) is owned by no Debian package: installed by hand?")
        failures += 1
    for pkg, (path, why) in sorted(missing.items()):
        print(f"FAIL: {pkg} (owns {path}, {why}) is not installed by {setup_rel}: "
              f"add it to PACKAGES")
        failures += 1

    elapsed = time.monotonic() - start
    owner_pkgs = sorted({ps[0] for ps in owners.values()})
    print(f"setup_packages_check: {len(used)} files from outside the tree, owned by "
          f"{len(owner_pkgs)} packages; {len(listed)} listed in {setup_rel}, "
          f"{len(allowed)} with dependencies (+{len(base - allowed)} essential); "
          f"{failures} problem(s); {elapsed:.1f} s")
    if args.verbose:
        print("owning packages: " + " ".join(owner_pkgs), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckError as e:
        print(f"setup_packages_check: error: {e}", file=sys.stderr)
        sys.exit(2)
