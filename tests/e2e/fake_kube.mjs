// A small fake of the Kubernetes API server for discovery tests, written from the published API
// conventions (https://kubernetes.io/docs/reference/using-api/api-concepts/): pods and
// InferencePools (inference.networking.k8s.io/v1) in namespaces, list with labelSelector and
// fieldSelector=metadata.name, watch with resourceVersion, allowWatchBookmarks and timeoutSeconds
// (chunked JSON lines: ADDED, MODIFIED, DELETED, BOOKMARK, ERROR), a global resourceVersion, and
// compaction: a watch from a version older than the compacted one gets an ERROR event with a 410
// Status, as the real server answers. Bearer-token auth; TLS when given a key and certificate.
// Test controls: pods turning Ready and NotReady, deletions, dropping every open watch, compaction.
import http from 'node:http';
import https from 'node:https';

export class FakeKube {
  constructor({ token = '', tls = null, bookmarkMs = 200 } = {}) {
    this.token = token;
    this.rv = 1;
    this.compactedRv = 0;
    this.objects = new Map(); // key `${kind}/${ns}/${name}` -> object
    this.log = []; // { rv, key, type, object }
    this.watches = new Set();
    this.requests = []; // { method, path, query } in arrival order
    this.bookmarkMs = bookmarkMs;
    const handler = (req, res) => this.handle(req, res);
    this.server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  }

  listen() {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => {
      this.port = this.server.address().port;
      resolve(this.port);
    }));
  }

  close() {
    for (const w of this.watches) w.res.destroy();
    this.server.closeAllConnections?.();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  // --- objects ---------------------------------------------------------------------------------
  put(kind, ns, obj) {
    const key = `${kind}/${ns}/${obj.metadata.name}`;
    const type = this.objects.has(key) ? 'MODIFIED' : 'ADDED';
    this.rv += 1;
    const stored = structuredClone(obj);
    stored.metadata.namespace = ns;
    stored.metadata.resourceVersion = String(this.rv);
    this.objects.set(key, stored);
    this.emit(key, type, stored);
    return stored;
  }

  remove(kind, ns, name) {
    const key = `${kind}/${ns}/${name}`;
    const obj = this.objects.get(key);
    if (!obj) return;
    this.objects.delete(key);
    this.rv += 1;
    const gone = structuredClone(obj);
    gone.metadata.resourceVersion = String(this.rv);
    this.emit(key, 'DELETED', gone);
  }

  pool(ns, name, labels, ports) {
    return this.put('inferencepools', ns, {
      apiVersion: 'inference.networking.k8s.io/v1', kind: 'InferencePool', metadata: { name },
      spec: { selector: { matchLabels: labels }, targetPorts: ports.map((number) => ({ number })),
              endpointPickerRef: { name: `${name}-epp`, port: { number: 9002 } } },
    });
  }

  pod(ns, name, { ip, labels, ready }) {
    return this.put('pods', ns, {
      apiVersion: 'v1', kind: 'Pod', metadata: { name, labels },
      spec: { containers: [{ name: 'vllm', image: 'vllm/vllm-openai' }] },
      status: {
        phase: 'Running', podIP: ip, podIPs: [{ ip }],
        conditions: [{ type: 'PodScheduled', status: 'True' }, { type: 'Ready', status: ready ? 'True' : 'False' }],
      },
    });
  }

  // Other objects changed (the version moves on; nothing any watch here selects).
  bump(n = 1) { this.rv += n; }

  // Every open watch ends abruptly (an API server restart, a load balancer timeout).
  dropWatches() {
    for (const w of this.watches) w.res.socket?.destroy();
    this.watches.clear();
  }

  // History before now is gone: watches from older versions get 410.
  compact() {
    this.bump(5);
    this.compactedRv = this.rv;
  }

  count(pred) { return this.requests.filter(pred).length; }

  // --- HTTP --------------------------------------------------------------------------------------
  emit(key, type, object) {
    this.log.push({ rv: this.rv, key, type, object });
    for (const w of this.watches) if (w.match(key, object)) w.send({ type, object });
  }

  static status(res, code, reason, message) {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason, message, code }));
  }

  handle(req, res) {
    const url = new URL(req.url, 'http://x');
    const q = Object.fromEntries(url.searchParams);
    this.requests.push({ method: req.method, path: url.pathname, query: q });
    if (this.token && req.headers.authorization !== `Bearer ${this.token}`) {
      return FakeKube.status(res, 401, 'Unauthorized', 'Unauthorized');
    }
    let m = url.pathname.match(/^\/api\/v1\/namespaces\/([^/]+)\/pods$/);
    let kind = 'pods';
    let name = null;
    if (!m) {
      m = url.pathname.match(/^\/apis\/inference\.networking\.k8s\.io\/v1\/namespaces\/([^/]+)\/inferencepools(?:\/([^/]+))?$/);
      kind = 'inferencepools';
      if (m) name = m[2] ?? null;
    }
    if (!m || req.method !== 'GET') return FakeKube.status(res, 404, 'NotFound', 'the server could not find the requested resource');
    const ns = m[1];
    if (name) {
      const obj = this.objects.get(`${kind}/${ns}/${name}`);
      if (!obj) return FakeKube.status(res, 404, 'NotFound', `${kind} "${name}" not found`);
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify(obj));
    }
    const labels = (q.labelSelector ?? '').split(',').filter(Boolean).map((kv) => kv.split('='));
    const field = (q.fieldSelector ?? '').match(/^metadata\.name=(.+)$/);
    const match = (key, obj) => key.startsWith(`${kind}/${ns}/`) &&
      labels.every(([k, v]) => obj.metadata.labels?.[k] === v) && (!field || obj.metadata.name === field[1]);
    if (q.watch !== '1' && q.watch !== 'true') {
      const items = [...this.objects.entries()].filter(([k, o]) => match(k, o)).map(([, o]) => o);
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({
        kind: kind === 'pods' ? 'PodList' : 'InferencePoolList', apiVersion: 'v1',
        metadata: { resourceVersion: String(this.rv) }, items,
      }));
    }
    // watch
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    const from = Number(q.resourceVersion ?? '0');
    const w = {
      res, match,
      send: (ev) => res.write(JSON.stringify(ev) + '\n'),
    };
    if (from > 0 && from < this.compactedRv) {
      w.send({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure',
                                         reason: 'Expired', message: `too old resource version: ${from} (${this.compactedRv})`, code: 410 } });
      return res.end();
    }
    for (const e of this.log) if (e.rv > from && match(e.key, e.object)) w.send({ type: e.type, object: e.object });
    this.watches.add(w);
    const timers = [];
    if (q.allowWatchBookmarks === 'true') {
      timers.push(setInterval(() => w.send({ type: 'BOOKMARK', object: {
        kind: kind === 'pods' ? 'Pod' : 'InferencePool', apiVersion: 'v1',
        metadata: { resourceVersion: String(this.rv), annotations: { 'k8s.io/initial-events-end': 'true' } } } }), this.bookmarkMs));
    }
    if (q.timeoutSeconds) timers.push(setTimeout(() => res.end(), Number(q.timeoutSeconds) * 1000));
    const done = () => { for (const t of timers) clearInterval(t); this.watches.delete(w); };
    res.on('close', done);
    req.on('close', done);
  }
}
