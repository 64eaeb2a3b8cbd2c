#!/usr/bin/env python3
"""Checks deploy/ against itself and against the kvroute binary (a test, not a read-through).

For each overlay of deploy/kubernetes (rendered here as kustomize would for the features they use:
resources, namespace, labels, images, strategic-merge patches of a ConfigMap's data, and JSON 6902
patches by target regex):
  * every document parses and names apiVersion, kind and metadata.name; no two share kind/name;
  * Deployments: selector matches the pod labels; each Service selects the pods of a Deployment and
    its target ports name container ports; probes use declared ports, gRPC probes the health port
    with the services `liveness` / `readiness`;
  * the EPP's flags: --pool-name names the InferencePool, --grpc-port / --grpc-health-port /
    --metrics-port are its container ports; the pool's endpointPickerRef names the EPP's Service and
    its gRPC port; the router's --pool-name too;
  * the InferencePool selects the engine pods of the overlay, and its target port is a port of
    theirs; the HTTPRoute's backendRef names the pool;
  * RBAC: the Role grants get/list/watch on pods and inferencepools, the RoleBinding binds it to the
    ServiceAccount the EPP and router run as;
  * ServiceMonitors select a Service and scrape a port it has;
  * images resolve through kustomize's `images` to the Tekton task's default image;
  * kvroute itself accepts each container's arguments and config: `kvroute ARGS --check` with the
    overlay's ConfigMap mounted where the container reads it, in a stand-in in-cluster environment;
  * deploy/Dockerfile builds with the set-up script's image mode, runs as non-root on
    bookworm-slim, and deploy/runtime-packages.sh resolves every library of the binary to a package.

Usage: deploy_check.py SOURCE_DIR KVROUTE_BINARY. Exit status 1 with one line per problem.
"""
import copy
import os
import re
import subprocess
import sys
import tempfile

import yaml

problems = []


def check(cond, msg):
    if not cond:
        problems.append(msg)
    return cond


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def render(kdir, seen=None):
    """A kustomization rendered for the features deploy/ uses."""
    k = yaml.safe_load(open(os.path.join(kdir, "kustomization.yaml")))
    docs, images = [], {}
    for r in k.get("resources", []):
        p = os.path.join(kdir, r)
        if os.path.isdir(p):
            sub, sub_images = render(p)
            docs += sub
            images.update(sub_images)
        elif check(os.path.isfile(p), f"{kdir}: resource {r} does not exist"):
            docs += load_docs(p)
    for im in k.get("images", []):
        images[im["name"]] = f'{im.get("newName", im["name"])}:{im.get("newTag", "latest")}'
    for patch in k.get("patches", []):
        p = os.path.join(kdir, patch["path"])
        if not check(os.path.isfile(p), f"{kdir}: patch {patch['path']} does not exist"):
            continue
        body = yaml.safe_load(open(p))
        if isinstance(body, list):  # JSON 6902 against targets
            t = patch.get("target", {})
            hits = [d for d in docs if d["kind"] == t.get("kind") and re.fullmatch(t.get("name", ".*"), d["metadata"]["name"])]
            check(hits, f"{kdir}: patch {patch['path']} matches nothing")
            for d in hits:
                for op in body:
                    check(op["op"] == "add", f"{p}: only add ops are rendered here")
                    parts = op["path"].strip("/").split("/")
                    node = d
                    for key in parts[:-1]:
                        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
                    if parts[-1] == "-":
                        node.append(copy.deepcopy(op["value"]))
                    else:
                        node[parts[-1]] = copy.deepcopy(op["value"])
        else:  # strategic merge of a ConfigMap's data (what deploy/ patches)
            hits = [d for d in docs if d["kind"] == body["kind"] and d["metadata"]["name"] == body["metadata"]["name"]]
            check(len(hits) == 1, f"{kdir}: patch {patch['path']} matches {len(hits)} objects")
            for d in hits:
                d.setdefault("data", {}).update(body.get("data", {}))
    ns = k.get("namespace")
    for d in docs:
        if ns:
            d["metadata"]["namespace"] = ns
    return docs, images


def containers(d):
    return d["spec"]["template"]["spec"]["containers"]


def flag(args, name):
    for a in args:
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def check_overlay(name, docs, images, binary, src):
    where = f"overlay {name}"
    by = {}
    for d in docs:
        if not check(all(k in d for k in ("apiVersion", "kind", "metadata")) and d["metadata"].get("name"),
                     f"{where}: a document lacks apiVersion/kind/metadata.name"):
            continue
        key = (d["kind"], d["metadata"]["name"])
        check(key not in by, f"{where}: {key} twice")
        by[key] = d
    deps = [d for d in docs if d["kind"] == "Deployment"]
    for d in deps:
        sel = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in sel.items()), f"{where}: {d['metadata']['name']} selector does not match its pods")
        for c in containers(d):
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                pr = c.get(probe)
                if not pr:
                    continue
                if "grpc" in pr:
                    check(pr["grpc"]["port"] in ports.values(), f"{where}: {c['name']} {probe} port is not a container port")
                    check(pr["grpc"].get("service") in ("liveness", "readiness"), f"{where}: {c['name']} {probe} service")
                if "httpGet" in pr:
                    port = pr["httpGet"]["port"]
                    check(port in ports or port in ports.values(), f"{where}: {c['name']} {probe} port {port} undeclared")
            img = c["image"]
            if img in images:
                img = images[img]
            if c["image"] == "kvroute":
                tekton = yaml.safe_load(open(os.path.join(src, "deploy/tekton/kvroute-bench-task.yaml")))
                default = [p for p in tekton["spec"]["params"] if p["name"] == "image"][0]["default"]
                check(img == default, f"{where}: image {img} is not the Tekton task's {default}")
    # Services select a Deployment's pods; their target ports are container ports.
    for s in (d for d in docs if d["kind"] == "Service"):
        sel = s["spec"]["selector"]
        match = [d for d in deps if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if check(match, f"{where}: Service {s['metadata']['name']} selects no pods"):
            names = {p["name"] for c in containers(match[0]) for p in c.get("ports", [])}
            for p in s["spec"]["ports"]:
                check(p["targetPort"] in names, f"{where}: Service {s['metadata']['name']} targets unknown port {p['targetPort']}")
    pool = by.get(("InferencePool", "kvroute-pool"))
    epp = by.get(("Deployment", "kvroute-epp"))
    router = by.get(("Deployment", "kvroute-router"))
    if not (check(pool, f"{where}: no InferencePool") and check(epp, f"{where}: no EPP") and check(router, f"{where}: no router")):
        return
    ec = containers(epp)[0]
    args = ec["args"]
    check(args[0] == "epp", f"{where}: the EPP does not run `kvroute epp`")
    check(flag(args, "--pool-name") == pool["metadata"]["name"], f"{where}: EPP --pool-name is not the pool")
    cports = {p["name"]: p["containerPort"] for p in ec["ports"]}
    for f, port, default in (("--grpc-port", "grpc", 9002), ("--grpc-health-port", "grpc-health", 9003), ("--metrics-port", "metrics", 9090)):
        check(int(flag(args, f) or default) == cports.get(port), f"{where}: EPP {f} is not its {port} container port")
    for probe in ("livenessProbe", "readinessProbe"):
        check(ec[probe]["grpc"]["port"] == cports["grpc-health"], f"{where}: EPP {probe} is not on the health port")
    ref = pool["spec"]["endpointPickerRef"]
    svc = by.get(("Service", ref["name"]))
    if check(svc, f"{where}: endpointPickerRef names no Service"):
        grpc = [p for p in svc["spec"]["ports"] if p["name"] == "grpc"]
        check(grpc and grpc[0]["port"] == ref["port"]["number"], f"{where}: endpointPickerRef port is not the EPP Service's grpc port")
        check(grpc and grpc[0]["targetPort"] == "grpc", f"{where}: EPP Service grpc port does not reach ext_proc")
    check(flag(containers(router)[0]["args"], "--pool-name") == pool["metadata"]["name"], f"{where}: router --pool-name is not the pool")
    # The pool selects the overlay's engines, on a port they serve.
    sel = pool["spec"]["selector"]["matchLabels"]
    engines = [d for d in deps if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
    if check(engines, f"{where}: the InferencePool selects no engine pods"):
        for tp in pool["spec"]["targetPorts"]:
            for e in engines:
                check(tp["number"] in [p["containerPort"] for c in containers(e) for p in c.get("ports", [])],
                      f"{where}: target port {tp['number']} is not a port of {e['metadata']['name']}")
    for e in [d for d in deps if d not in engines and d["metadata"]["name"] not in ("kvroute-epp", "kvroute-router")]:
        problems.append(f"{where}: Deployment {e['metadata']['name']} is neither an engine nor kvroute")
    route = by.get(("HTTPRoute", "kvroute-route"))
    if check(route, f"{where}: no HTTPRoute"):
        refs = [b for r in route["spec"]["rules"] for b in r["backendRefs"]]
        check(any(b.get("kind") == "InferencePool" and b.get("group") == "inference.networking.k8s.io" and b["name"] == pool["metadata"]["name"] for b in refs),
              f"{where}: the HTTPRoute does not route to the pool")
    # RBAC
    role = by.get(("Role", "kvroute-discovery"))
    rb = by.get(("RoleBinding", "kvroute-discovery"))
    if check(role and rb, f"{where}: no discovery Role/RoleBinding"):
        grants = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
        for need in (("", "pods"), ("inference.networking.k8s.io", "inferencepools")):
            check({"get", "list", "watch"} <= grants.get(need, set()), f"{where}: the Role lacks get/list/watch on {need}")
        check(rb["roleRef"]["name"] == role["metadata"]["name"], f"{where}: the RoleBinding binds another Role")
        subjects = {s["name"] for s in rb["subjects"] if s["kind"] == "ServiceAccount"}
        for d in (epp, router):
            sa = d["spec"]["template"]["spec"].get("serviceAccountName")
            check(sa in subjects and ("ServiceAccount", sa) in by, f"{where}: {d['metadata']['name']} runs as {sa}, not bound")
    # ServiceMonitors
    for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
        sel = sm["spec"]["selector"]["matchLabels"]
        svcs = [s for s in docs if s["kind"] == "Service" and all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if check(svcs, f"{where}: ServiceMonitor {sm['metadata']['name']} selects no Service"):
            for ep in sm["spec"]["endpoints"]:
                check(any(p["name"] == ep["port"] for s in svcs for p in s["spec"]["ports"]),
                      f"{where}: ServiceMonitor {sm['metadata']['name']} scrapes unknown port {ep['port']}")
    # PodMonitors select the pool's engines, on a port they declare.
    for pm in (d for d in docs if d["kind"] == "PodMonitor"):
        sel = pm["spec"]["selector"]["matchLabels"]
        pods = [d for d in deps if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if check(pods, f"{where}: PodMonitor {pm['metadata']['name']} selects no pods"):
            for ep in pm["spec"]["podMetricsEndpoints"]:
                check(all(any(p.get("name") == ep["port"] for c in containers(d) for p in c.get("ports", [])) for d in pods),
                      f"{where}: PodMonitor {pm['metadata']['name']} scrapes unknown port {ep['port']}")
    # kvroute accepts the arguments and the config, as mounted.
    cm = by.get(("ConfigMap", "kvroute-config"))
    with tempfile.TemporaryDirectory() as tmp:
        sa = os.path.join(tmp, "sa")
        os.makedirs(sa)
        for fname, text in (("token", "t"), ("namespace", "kvroute")):
            open(os.path.join(sa, fname), "w").write(text)
        env = dict(os.environ, KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT="6443",
                   KVROUTE_SERVICE_ACCOUNT_DIR=sa)
        for d in (epp, router):
            c = containers(d)[0]
            mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
            cfg_dir = os.path.join(tmp, "etc")
            os.makedirs(cfg_dir, exist_ok=True)
            for k, v in cm["data"].items():
                open(os.path.join(cfg_dir, k), "w").write(v)
            config_text = cm["data"]["config.yaml"]
            tokenizers = re.findall(r"tokenizer:\s*(\S+)", config_text)
            for t in tokenizers:
                if t != "word":  # a tokenizer on a volume: its mount must cover it
                    check(any(t.startswith(mp + "/") for mp in mounts.values()), f"{where}: tokenizer {t} is on no mounted volume")
            if any(t != "word" for t in tokenizers):
                continue  # the model's files are not here: the volume check above is what can run
            args = [a.replace(mounts.get("config", "/etc/kvroute"), cfg_dir) for a in c["args"]]
            r = subprocess.run([binary] + args + ["--check"], env=env, capture_output=True, text=True, timeout=60)
            check(r.returncode == 0, f"{where}: kvroute {' '.join(args)} --check failed: {r.stdout}{r.stderr}")


def check_dockerfile(src, binary):
    text = open(os.path.join(src, "deploy/Dockerfile")).read()
    check(re.search(r"^FROM debian:bookworm-slim\s*$", text, re.M), "Dockerfile: the runtime stage is not debian:bookworm-slim")
    check("KVROUTE_SETUP_IMAGE=1 bash scripts/setup.sh" in text, "Dockerfile: the build stage does not use the set-up script")
    check(re.search(r"^USER 65532", text, re.M), "Dockerfile: not a non-root user")
    check("deploy/runtime-packages.sh" in text, "Dockerfile: runtime packages not derived from the binary")
    env = dict(os.environ, KVROUTE_SETUP_IMAGE="1", KVROUTE_SETUP_LIST="1")
    image = subprocess.run(["bash", os.path.join(src, "scripts/setup.sh")], env=env, capture_output=True, text=True).stdout.split()
    env["KVROUTE_SETUP_IMAGE"] = "0"
    full = subprocess.run(["bash", os.path.join(src, "scripts/setup.sh")], env=env, capture_output=True, text=True).stdout.split()
    check(image and set(image) <= set(full), "Dockerfile: the image's packages are not the set-up script's")
    for must in ("g++", "cmake", "libgrpc++-dev", "libssl-dev", "libzmq3-dev"):
        check(must in image, f"Dockerfile: the image build lacks {must}")
    for never in ("npm", "nodejs", "prometheus", "valgrind", "clang-tidy-14"):
        check(never not in image, f"Dockerfile: the image build installs test tool {never}")
    r = subprocess.run([os.path.join(src, "deploy/runtime-packages.sh"), binary], capture_output=True, text=True)
    if check(r.returncode == 0, f"runtime-packages.sh failed: {r.stderr}"):
        pkgs = r.stdout.split()
        for must in ("libgrpc++1.51", "libssl3", "libzmq5", "libyaml-cpp0.7"):
            check(must in pkgs, f"runtime-packages.sh misses {must}")
        check(not any(p.endswith("-dev") for p in pkgs), "runtime-packages.sh names a -dev package")


def main():
    src, binary = sys.argv[1], sys.argv[2]
    kdir = os.path.join(src, "deploy/kubernetes/overlays")
    overlays = sorted(os.listdir(kdir))
    check({"sim", "vllm"} <= set(overlays), "deploy/kubernetes/overlays lacks sim or vllm")
    for o in overlays:
        docs, images = render(os.path.join(kdir, o))
        check_overlay(o, docs, images, binary, src)
    # The vLLM overlay: prefix caching, block size 16, KV events, no KV-transfer connector.
    vllm_docs, _ = render(os.path.join(kdir, "vllm"))
    v = [d for d in vllm_docs if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("vllm")]
    if check(v, "vllm overlay: no vLLM Deployment"):
        args = containers(v[0])[0]["args"]
        check("--enable-prefix-caching" in args, "vllm: prefix caching is not on")
        check("--block-size=16" in args, "vllm: block size is not 16")
        check(any(a.startswith("--kv-events-config=") and '"enable_kv_cache_events":true' in a for a in args), "vllm: no KV events")
        check(not any("kv-transfer-config" in a for a in args), "vllm: a KV-transfer connector (disables local prefix caching)")
    check_dockerfile(src, binary)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
