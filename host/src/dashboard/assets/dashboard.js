// The sluice dashboard: reads /admin/dashboard/events (server-sent events,
// one snapshot a second) with fetch(), so the admin token travels in the
// Authorization header and never in a URL. The token is kept in this tab's
// sessionStorage. Rates and windowed quantiles are computed here from the
// counters and histogram buckets of successive snapshots.
'use strict';

(() => {
  const TOKEN_KEY = 'sluice.admin_token';
  // Quantiles and hit ratios cover this much history.
  const WINDOW_MS = 10000;
  // Chart points (one per snapshot).
  const POINTS = 60;
  const $ = (sel, root) => (root || document).querySelector(sel);
  const snaps = [];
  const charts = { rps: [[]], latency: [[], []], cache: [[], []], errors: [[], []] };
  let controller = null;
  let retryTimer = null;

  // === sign in ===

  function showLogin(message) {
    $('#board').hidden = true;
    $('#logout').hidden = true;
    $('#login').hidden = false;
    const err = $('#login-error');
    err.hidden = !message;
    err.textContent = message || '';
    setLive(false);
  }

  function showBoard() {
    $('#login').hidden = true;
    $('#board').hidden = false;
    $('#logout').hidden = false;
  }

  function setLive(on) {
    const pill = $('#live');
    pill.textContent = on ? 'live' : 'offline';
    pill.classList.toggle('good', on);
  }

  $('#login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('#token').value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('#token').value = '';
    connect();
  });

  $('#logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    if (controller) controller.abort();
    showLogin('');
  });

  // === the event stream ===

  function retry() {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, 1000);
  }

  async function connect() {
    clearTimeout(retryTimer);
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      showLogin('');
      return;
    }
    if (controller) controller.abort();
    const mine = new AbortController();
    controller = mine;
    let resp;
    try {
      resp = await fetch('/admin/dashboard/events', {
        headers: { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' },
        cache: 'no-store',
        signal: mine.signal,
      });
    } catch (e) {
      if (!mine.signal.aborted) {
        setLive(false);
        retry();
      }
      return;
    }
    if (resp.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin('That token was refused.');
      return;
    }
    if (!resp.ok || !resp.body) {
      setLive(false);
      retry();
      return;
    }
    showBoard();
    setLive(true);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = frame
            .split('\n')
            .filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5).trimStart())
            .join('\n');
          if (data) update(JSON.parse(data));
        }
      }
    } catch (e) {
      if (mine.signal.aborted) return;
    }
    if (controller === mine) {
      setLive(false);
      retry();
    }
  }

  // === reading metrics ===

  function family(s, name) {
    return (s && s.metrics && s.metrics[name]) || null;
  }

  function total(s, name, keep) {
    const f = family(s, name);
    if (!f) return 0;
    let sum = 0;
    for (const x of f.series) {
      if (x.value != null && (!keep || keep(x.labels))) sum += x.value;
    }
    return sum;
  }

  // Buckets of every series of a histogram (those `keep` accepts), added
  // up: {count, buckets}.
  function histogram(s, name, keep) {
    const f = family(s, name);
    const byBound = new Map();
    let count = 0;
    if (f) {
      for (const x of f.series) {
        if (keep && !keep(x.labels)) continue;
        count += x.count || 0;
        for (const [le, c] of x.buckets || []) byBound.set(le, (byBound.get(le) || 0) + c);
      }
    }
    const buckets = [...byBound.entries()].sort((a, b) => a[0] - b[0]);
    return { count, buckets };
  }

  // The snapshot at least WINDOW_MS older than the latest (or the oldest).
  function base() {
    const last = snaps[snaps.length - 1];
    let pick = snaps[0];
    for (const s of snaps) {
      if (last.at_ms - s.at_ms >= WINDOW_MS) pick = s;
    }
    return pick;
  }

  function windowQuantile(q, name) {
    return quantile(q, histogram(snaps[snaps.length - 1], name), histogram(base(), name));
  }

  // The q-quantile of the observations in `now` and not in `then`
  // (interpolated within a bucket); null without observations.
  function quantile(q, now, then) {
    const count = now.count - then.count;
    if (count <= 0) return null;
    const before = new Map(then.buckets);
    const rank = q * count;
    let lower = 0;
    let below = 0;
    for (const [le, cum] of now.buckets) {
      const c = cum - (before.get(le) || 0);
      if (c >= rank) return lower + (le - lower) * ((rank - below) / Math.max(c - below, 1e-12));
      lower = le;
      below = c;
    }
    return lower;
  }

  // Per second between the last two snapshots.
  function rate(name, keep) {
    if (snaps.length < 2) return null;
    const a = snaps[snaps.length - 2];
    const b = snaps[snaps.length - 1];
    const dt = (b.at_ms - a.at_ms) / 1000;
    if (dt <= 0) return null;
    return Math.max(0, total(b, name, keep) - total(a, name, keep)) / dt;
  }

  function windowDelta(name, keep) {
    return total(snaps[snaps.length - 1], name, keep) - total(base(), name, keep);
  }

  // === formatting ===

  function num(n) {
    if (n == null || !isFinite(n)) return '–';
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + 'M';
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    if (Number.isInteger(n)) return String(n);
    return n < 10 ? n.toFixed(2) : n.toFixed(1);
  }

  function seconds(s) {
    if (s == null) return '–';
    if (s < 0.001) return (s * 1e6).toFixed(0) + ' µs';
    if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 1 : 0) + ' ms';
    return s.toFixed(2) + ' s';
  }

  function usd(n) {
    if (n == null || !isFinite(n)) return '–';
    if (n === 0) return '$0';
    return '$' + (n >= 1 ? n.toFixed(2) : n.toPrecision(3));
  }

  function percent(r) {
    return r == null ? '–' : (r * 100).toFixed(r === 1 || r === 0 ? 0 : 1) + '%';
  }

  function set(name, text) {
    for (const el of document.querySelectorAll('[data-metric="' + name + '"]')) el.textContent = text;
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text != null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function row(cells) {
    const tr = document.createElement('tr');
    for (const c of cells) {
      const td = document.createElement('td');
      if (c instanceof Node) td.appendChild(c);
      else td.textContent = c;
      tr.appendChild(td);
    }
    return tr;
  }

  function fill(body, rows) {
    body.replaceChildren(...rows);
  }

  function when(ms) {
    return new Date(ms).toLocaleTimeString();
  }

  // === charts (inline SVG) ===

  const SVG = 'http://www.w3.org/2000/svg';

  function push(name, values) {
    charts[name].forEach((line, i) => {
      line.push(values[i]);
      if (line.length > POINTS) line.shift();
    });
  }

  function draw(name, fmt) {
    const svg = $('[data-chart="' + name + '"]');
    const lines = charts[name];
    let max = 0;
    for (const line of lines) for (const v of line) if (v != null && v > max) max = v;
    const top = max > 0 ? max * 1.15 : 1;
    const nodes = lines.map((line, i) => {
      const path = document.createElementNS(SVG, 'polyline');
      const pts = [];
      // The newest point at the right edge, one step a snapshot.
      const offset = POINTS - line.length;
      line.forEach((v, x) => {
        if (v == null) return;
        pts.push((((x + offset) * 300) / (POINTS - 1)).toFixed(1) + ',' + (80 - (v / top) * 76).toFixed(1));
      });
      path.setAttribute('points', pts.join(' '));
      path.setAttribute('class', 'line line' + i);
      return path;
    });
    const label = document.createElementNS(SVG, 'text');
    label.setAttribute('x', '298');
    label.setAttribute('y', '10');
    label.setAttribute('class', 'axis');
    label.textContent = 'max ' + fmt(max);
    svg.replaceChildren(...nodes, label);
  }

  // === panels ===

  function update(s) {
    snaps.push(s);
    while (snaps.length > 2 && s.at_ms - snaps[0].at_ms > WINDOW_MS + 5000) snaps.shift();
    $('#node').textContent = 'v' + s.version + ' · ' + when(s.at_ms);

    // Traffic.
    const throttled = (l) => l.status === '429';
    const rps = rate('sluice_requests');
    set('rps', num(rps));
    set('requests-total', num(total(s, 'sluice_requests')));
    set('throttled-rate', num(rate('sluice_requests', throttled)));
    set('throttled-total', num(total(s, 'sluice_requests', throttled)));
    push('rps', [rps]);
    draw('rps', num);

    // Latency.
    const p50 = windowQuantile(0.5, 'sluice_request_duration_seconds');
    const p99 = windowQuantile(0.99, 'sluice_request_duration_seconds');
    set('p50', seconds(p50));
    set('p99', seconds(p99));
    push('latency', [p50, p99]);
    draw('latency', seconds);

    // Cache: hits over lookups (bypasses are not lookups).
    const outcome = (o) => (l) => l.outcome === o;
    const hits = windowDelta('sluice_cache_outcomes', outcome('hit'));
    const semantic = windowDelta('sluice_cache_outcomes', outcome('semantic-hit'));
    const misses = windowDelta('sluice_cache_outcomes', outcome('miss'));
    const lookups = hits + semantic + misses;
    const exactRatio = lookups > 0 ? hits / lookups : null;
    const semanticRatio = lookups > 0 ? semantic / lookups : null;
    set('exact-ratio', percent(exactRatio));
    set('semantic-ratio', percent(semanticRatio));
    set('coalesced', num(total(s, 'sluice_coalesced_requests')));
    push('cache', [exactRatio, semanticRatio]);
    draw('cache', percent);

    // Errors.
    const failed = (l) => l.outcome !== 'ok';
    const upRate = rate('sluice_upstream_attempts', failed);
    set('upstream-errors-rate', num(upRate));
    set('upstream-errors', num(total(s, 'sluice_upstream_attempts', failed)));
    set('internal-errors', num(total(s, 'sluice_request_errors', (l) => l.origin === 'internal')));
    push('errors', [upRate, rate('sluice_requests', throttled)]);
    draw('errors', num);

    providers(s);
    plugins(s);
    state(s);
    budgets(s);
    jobs(s);
  }

  function providers(s) {
    const rows = (s.providers || []).map((p) => {
      const mine = (l) => l.provider === p.name;
      const breaker = el('span', p.circuit, 'pill ' + (p.circuit === 'closed' ? 'good' : 'bad'));
      if (p.circuit !== 'closed' && p.probe_in_ms != null) {
        breaker.textContent += ' · probe in ' + seconds(p.probe_in_ms / 1000);
      }
      const keys = el('span');
      (p.key_rest_ms || []).forEach((rest, i) => {
        const k = el('span', 'key ' + (i + 1) + (rest > 0 ? ' rests ' + seconds(rest / 1000) : ''), 'pill ' + (rest > 0 ? 'bad' : 'good'));
        keys.appendChild(k);
      });
      if (!p.keys) keys.textContent = 'none';
      return row([
        p.name,
        breaker,
        num(rate('sluice_upstream_attempts', mine)),
        num(total(s, 'sluice_upstream_attempts', (l) => mine(l) && l.outcome !== 'ok')),
        num(total(s, 'sluice_upstream_attempts', (l) => mine(l) && l.outcome === 'rate_limited')),
        keys,
      ]);
    });
    fill($('[data-table="providers"]'), rows);
  }

  function plugins(s) {
    const rows = (s.plugins || []).map((p) =>
      row([
        p.slot,
        el('code', (p.hash || '').slice(0, 12)),
        String(p.source),
        num(p.calls),
        num(p.failures),
        p.p99_us == null || !p.calls ? '–' : seconds(p.p99_us / 1e6),
      ]),
    );
    fill($('[data-table="plugins"]'), rows);

    const items = [];
    const book = s.releases && s.releases.book;
    if (book && book.slots) {
      const parts = Object.entries(book.slots).map(([slot, r]) => {
        const cur = r.current ? '#' + r.current.seq : 'configured';
        return slot + ' ' + cur + ' (' + (r.previous || []).length + ' earlier)';
      });
      items.push(el('li', 'release book v' + book.version + ': ' + parts.join(', '), 'muted'));
    } else if (s.releases && s.releases.error) {
      items.push(el('li', 'release book: ' + s.releases.error, 'bad'));
    }
    for (const h of (s.history || []).slice(0, 12)) {
      const li = el('li', when(h.at_ms) + ' ' + h.slot + ' ' + h.event + ' ' + h.hash.slice(0, 12) + ' from ' + h.source);
      if (h.reason) {
        li.appendChild(el('span', ': ' + h.reason));
        li.className = 'bad';
      }
      items.push(li);
    }
    if (!items.length) items.push(el('li', 'no reloads since start', 'muted'));
    fill($('[data-list="history"]'), items);
  }

  function state(s) {
    const st = s.state || {};
    let status = st.shared ? (st.degraded ? 'degraded' : 'healthy') : 'local';
    set('state-status', status);
    $('[data-metric="state-status"]').className = st.degraded ? 'bad' : '';
    set('state-backend', st.backend + (st.shared ? ' · on error: ' + st.on_error : ''));
    set('fallbacks', num(st.fallbacks));
    set('state-errors', num(st.errors));
    set('state-last-error', st.degraded && st.last_error ? st.last_error : '');
  }

  // Spend per tenant (this node's counters) and each configured budget's
  // current periods (from the shared state): shown once there is either.
  function budgets(s) {
    const panel = $('[data-panel="budgets"]');
    const list = s.budgets || [];
    const tenants = new Set(list.map((b) => b.tenant));
    for (const name of ['sluice_spend_usd', 'sluice_saved_usd', 'sluice_budget_refusals']) {
      const f = family(s, name);
      for (const x of (f && f.series) || []) if (x.value > 0) tenants.add(x.labels.tenant);
    }
    panel.hidden = !tenants.size;
    if (panel.hidden) return;
    set('spend-total', usd(total(s, 'sluice_spend_usd')));
    set('saved-total', usd(total(s, 'sluice_saved_usd')));
    set('budget-refusals', num(total(s, 'sluice_budget_refusals')));
    set('budget-alerts', num(total(s, 'sluice_alerts', (l) => l.kind === 'budget')));
    const byTenant = new Map(list.map((b) => [b.tenant, b]));
    const rows = [...tenants].sort().map((tenant) => {
      const mine = (l) => l.tenant === tenant;
      const b = byTenant.get(tenant);
      const cells = [
        tenant,
        usd(total(s, 'sluice_spend_usd', mine)),
        usd(total(s, 'sluice_saved_usd', mine)),
        num(total(s, 'sluice_budget_refusals', mine)),
      ];
      for (const period of ['day', 'month', 'total']) {
        const p = b && (b.periods || []).find((x) => x.period === period);
        let cell;
        if (b && b.error) {
          cell = el('span', 'unavailable', 'bad');
          cell.title = b.error;
        } else if (!p) {
          cell = el('span', 'no cap', 'muted');
        } else {
          const used = p.limit_usd > 0 ? p.spent_usd / p.limit_usd : 1;
          cell = el('span', usd(p.spent_usd) + ' of ' + usd(p.limit_usd) + ' · ' + percent(used), used >= 0.95 ? 'bad' : '');
        }
        cell.dataset.period = period;
        cells.push(cell);
      }
      const tr = row(cells);
      tr.dataset.tenant = tenant;
      return tr;
    });
    fill($('[data-table="budgets"]'), rows);
  }

  // The job queue (read from the shared state) and this node's job
  // counters: shown while jobs are on.
  function jobs(s) {
    const panel = $('[data-panel="jobs"]');
    panel.hidden = !s.jobs;
    if (!s.jobs) return;
    const depths = s.jobs.depths || null;
    set('jobs-error', s.jobs.error ? 'queue: ' + s.jobs.error : '');
    const depth = (p) => (depths ? depths[p] : total(s, 'sluice_jobs_queue_depth', (l) => l.priority === p));
    const priorities = ['critical', 'high', 'normal', 'low', 'bulk'];
    const status = (v) => (l) => l.status === v;
    set('jobs-queued', num(priorities.reduce((sum, p) => sum + depth(p), 0)));
    set('jobs-accepted', num(total(s, 'sluice_jobs_accepted')));
    set('jobs-succeeded', num(total(s, 'sluice_jobs_finished', status('succeeded'))));
    set('jobs-failed', num(total(s, 'sluice_jobs_finished', status('failed'))));
    set('jobs-dead', num(total(s, 'sluice_jobs_dead_letters')));
    set('jobs-webhook-errors', num(total(s, 'sluice_job_webhook_deliveries', (l) => l.result === 'error')));
    // Quantiles over every observation since this node started.
    const none = { count: 0, buckets: [] };
    const rows = priorities.map((priority) => {
      const mine = (l) => l.priority === priority;
      const tr = row([
        priority,
        num(depth(priority)),
        num(total(s, 'sluice_jobs_accepted', mine)),
        seconds(quantile(0.99, histogram(s, 'sluice_jobs_wait_seconds', mine), none)),
        seconds(quantile(0.99, histogram(s, 'sluice_jobs_run_seconds', mine), none)),
      ]);
      tr.dataset.priority = priority;
      return tr;
    });
    fill($('[data-table="jobs"]'), rows);
  }

  connect();
})();
