// The dashboard page: reads the server-sent events of `<base>/events` and draws each chart as plain SVG (no library:
// about 200 lines here against 50-200 KB for a charting package, and nothing to fetch from a CDN). Every name that
// comes from the app (instances, policies, tags) is set as text, never as HTML.
(() => {
  // The stream is beside this script, wherever the app mounts both (a global prefix, a proxy's path): `<base>/events`.
  const base = new URL('.', document.currentScript.src).pathname.replace(/\/$/, '');
  const SVG = 'http://www.w3.org/2000/svg';
  const COLORS = ['#2563eb', '#d97706', '#059669', '#db2777', '#7c3aed', '#0891b2', '#65a30d', '#dc2626'];
  const SUM_COLOR = '#1d2330';
  const W = 320;
  const H = 120;
  const PAD = { left: 34, right: 6, top: 8, bottom: 16 };

  // All three come with the snapshot (the server's options), before any frame.
  let intervalMs = 1000;
  let history = 120;
  let instanceTtlMs = 5000;
  /** id → frames (oldest first); 'sum' → the sums. */
  const series = new Map();
  const colorOf = new Map();

  const rate = (n, f) => (f.ms > 0 ? (n * 1000) / f.ms : null);
  const sumOf = (o) => Object.values(o).reduce((s, [a, r]) => s + a + r, 0);
  // [failed open, insurance] per policy; absent in a frame of an older release
  const degradedOf = (f) => f.rateLimitDegraded ?? {};
  /** Chart id → [value of a frame (null: no point), whether per-instance lines are drawn]. */
  const METRICS = {
    'hit-ratio': [
      (f) => {
        const c = f.cache;
        const reads = c.hits + c.staleHits + c.misses;
        return reads === 0 ? null : (100 * (c.hits + c.staleHits)) / reads;
      },
      true,
    ],
    'load-latency': [(f) => (f.cache.loads === 0 ? null : f.cache.loadMs / f.cache.loads), true],
    decisions: [(f) => rate(sumOf(f.rateLimit), f), true],
    refusals: [
      (f) =>
        rate(
          Object.values(f.rateLimit).reduce((s, [, r]) => s + r, 0),
          f,
        ),
      false,
    ],
    // decisions Redis could not make (failed open, or decided by the insurance limiter): an outage shows here
    'rate-limit-degraded': [(f) => rate(sumOf(degradedOf(f)), f), true],
    'locks-held': [(f) => f.locks.held, true],
    'locks-waiting': [(f) => f.locks.waiting, true],
    sessions: [(f) => f.sessions.active, false],
    pubsub: [(f) => rate(f.pubsub.published, f), true],
    'redis-latency': [(f) => (f.redis ? f.redis.latencyMs : null), false],
    'redis-memory': [(f) => (f.redis ? f.redis.usedMemory / 1048576 : null), false],
    'redis-ops': [(f) => (f.redis ? f.redis.opsPerSec : null), false],
  };

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    parent.appendChild(node);
    return node;
  }

  function fmt(v) {
    if (v === null || v === undefined) return '–';
    if (Math.abs(v) >= 100) return String(Math.round(v));
    if (Math.abs(v) >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }

  /** A round upper bound for the y axis (1, 2, 5 × 10^n). */
  function niceMax(v) {
    if (v <= 0) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v);
  }

  /** Draws `lines` ([{ color, width, points: [[t, v]] }]) over the last `history` intervals ending at `now`. */
  function draw(svg, lines, now, fixedMax) {
    svg.replaceChildren();
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    const span = history * intervalMs;
    const max = fixedMax ?? niceMax(Math.max(0, ...lines.flatMap((l) => l.points.map((p) => p[1]))));
    const x = (t) => PAD.left + ((t - (now - span)) / span) * (W - PAD.left - PAD.right);
    const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
    for (const v of [0, max / 2, max]) {
      el('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), stroke: '#e3e6ec' }, svg);
      el('text', { x: PAD.left - 4, y: y(v) + 3, 'text-anchor': 'end' }, svg).textContent = fmt(v);
    }
    el('text', { x: PAD.left, y: H - 3 }, svg).textContent = `-${Math.round(span / 1000)} s`;
    el('text', { x: W - PAD.right, y: H - 3, 'text-anchor': 'end' }, svg).textContent = 'now';
    for (const line of lines) {
      // A gap (no reads, no sample) breaks the line instead of drawing a false zero.
      let run = [];
      const flush = () => {
        if (run.length === 1) el('circle', { cx: run[0][0], cy: run[0][1], r: line.width, fill: line.color }, svg);
        else if (run.length > 1) {
          const points = run.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(' ');
          el('polyline', { points, fill: 'none', stroke: line.color, 'stroke-width': line.width }, svg);
        }
        run = [];
      };
      for (const [t, v] of line.points) {
        if (v === null || t < now - span) flush();
        else run.push([x(t), y(Math.min(v, max))]);
      }
      flush();
    }
  }

  function color(id) {
    if (!colorOf.has(id)) colorOf.set(id, COLORS[colorOf.size % COLORS.length]);
    return colorOf.get(id);
  }

  function render() {
    const now = Date.now();
    const sums = series.get('sum') ?? [];
    const instances = [...series.keys()].filter((id) => id !== 'sum');
    for (const [id, [value, perInstance]] of Object.entries(METRICS)) {
      const svg = document.getElementById(`chart-${id}`);
      const lines = [];
      if (perInstance && instances.length > 1) {
        for (const inst of instances) {
          const points = series.get(inst).map((f) => [f.at, value(f)]);
          lines.push({ color: color(inst), width: 1.2, points });
        }
      }
      if (id === 'refusals') {
        const names = new Set(sums.flatMap((f) => Object.keys(f.rateLimit)));
        for (const name of names) {
          const points = sums.map((f) => [f.at, f.rateLimit[name] ? rate(f.rateLimit[name][1], f) : 0]);
          lines.push({ color: color(`policy:${name}`), width: 1.2, points });
        }
      }
      const sumPoints = sums.map((f) => [f.at, value(f)]);
      lines.push({ color: SUM_COLOR, width: 2.2, points: sumPoints });
      draw(svg, lines, now, id === 'hit-ratio' ? 100 : undefined);
      const last = [...sumPoints].reverse().find((p) => p[1] !== null);
      const shown = last ? last[1] : null;
      svg.dataset.last = shown === null ? '' : String(shown);
      svg.dataset.lines = String(lines.length);
      document.getElementById(`v-${id}`).textContent = `${fmt(shown)} ${svg.dataset.unit}`;
    }
    renderTables(sums);
    renderLegend(instances);
  }

  function renderTables(sums) {
    const recent = sums.slice(-Math.round(60000 / intervalMs));
    // cache reads served without the cache (Redis out, failOpen); none from an instance of an older release
    const failedOpen = recent.reduce((n, f) => n + (f.cache.failedOpen ?? 0), 0);
    const failedOpenOut = document.getElementById('cache-failed-open');
    failedOpenOut.dataset.count = String(failedOpen);
    failedOpenOut.textContent = String(failedOpen);
    const tags = new Map();
    const policies = new Map();
    for (const f of recent) {
      for (const [tag, n] of f.tags) tags.set(tag, (tags.get(tag) ?? 0) + n);
      for (const [name, [a, r]] of Object.entries(f.rateLimit)) {
        const p = policies.get(name) ?? [0, 0, 0, 0];
        policies.set(name, [p[0] + a, p[1] + r, p[2], p[3]]);
      }
      for (const [name, [open, insurance]] of Object.entries(degradedOf(f))) {
        const p = policies.get(name) ?? [0, 0, 0, 0];
        policies.set(name, [p[0], p[1], p[2] + open, p[3] + insurance]);
      }
    }
    fill('hot-tags', [...tags].sort((a, b) => b[1] - a[1]).slice(0, 5), (row) => [row[0], row[1]]);
    fill(
      'policies',
      [...policies].sort((a, b) => b[1][1] - a[1][1]),
      (row) => [row[0], ...row[1]],
    );
  }

  function fill(tableId, rows, cells) {
    const body = document.querySelector(`#${tableId} tbody`);
    body.replaceChildren();
    for (const row of rows) {
      const tr = document.createElement('tr');
      cells(row).forEach((value, i) => {
        const td = document.createElement('td');
        if (i > 0) td.className = 'n';
        td.textContent = String(value);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
  }

  function renderLegend(instances) {
    const legend = document.getElementById('legend');
    legend.replaceChildren();
    const add = (text, c) => {
      const span = document.createElement('span');
      span.style.setProperty('--c', c);
      span.textContent = text;
      legend.appendChild(span);
    };
    add('sum', SUM_COLOR);
    for (const id of instances) add(id, color(id));
    const count = document.getElementById('instances');
    count.dataset.count = String(instances.length);
    count.textContent = `${instances.length} instance${instances.length === 1 ? '' : 's'}`;
  }

  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      render();
    });
  }

  function keep(id, frame) {
    const frames = series.get(id) ?? [];
    frames.push(frame);
    if (frames.length > history) frames.splice(0, frames.length - history);
    series.set(id, frames);
  }

  /** Instances silent for instanceTtlMs leave the page, as they leave the server's sum. */
  function expire() {
    const now = Date.now();
    for (const [id, frames] of series) {
      if (id !== 'sum' && now - (frames.at(-1)?.receivedAt ?? 0) > instanceTtlMs) series.delete(id);
    }
  }

  const events = new EventSource(`${base}/events`);
  const status = document.getElementById('status');
  events.addEventListener('open', () => {
    status.textContent = 'live';
    status.className = 'live';
  });
  events.addEventListener('error', () => {
    status.textContent = 'reconnecting…';
    status.className = '';
  });
  events.addEventListener('snapshot', (e) => {
    const snap = JSON.parse(e.data);
    intervalMs = snap.intervalMs;
    history = snap.history;
    instanceTtlMs = snap.instanceTtlMs;
    series.clear();
    const now = Date.now();
    for (const [id, frames] of Object.entries(snap.instances)) {
      series.set(
        id,
        frames.map((f) => ({ ...f, receivedAt: now })),
      );
    }
    series.set('sum', snap.sum);
    schedule();
  });
  events.addEventListener('frame', (e) => {
    const frame = JSON.parse(e.data);
    keep(frame.instance, { ...frame, receivedAt: Date.now() });
    schedule();
  });
  events.addEventListener('sum', (e) => {
    keep('sum', JSON.parse(e.data));
    expire();
    schedule();
  });
})();
