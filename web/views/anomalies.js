// Anomalies: episodes the streaming detector found on stored series (metrics and services' RED
// series), newest first; a detail shows the series with the expected band and the anomaly
// marked, and the evidence ranked from its window.
import { h, replace, notice, errorNotice, loading, kvTable } from '../dom.js';
import { get, isAbort, requestSlot } from '../api.js';
import { timeWindow, rangeLabel } from '../state.js';
import { hashFor } from '../route.js';
import { fmtNumber, fmtTime, fmtAgo, fmtDurationMs } from '../format.js';
import uPlot from '../vendor/uplot/uPlot.esm.js';

const RED_LABEL = { 'red.rate': 'request rate (/s)', 'red.error_ratio': 'error ratio', 'red.p99_ms': 'p99 latency (ms)' };

export function anomalyLabel(a) {
  const attrs = Object.entries(a.attributes || {}).sort(([x], [y]) => x.localeCompare(y))
    .map(([k, v]) => `${k}=${v}`);
  const metric = RED_LABEL[a.metric] || a.metric;
  return `${metric}${attrs.length ? ` {${attrs.join(', ')}}` : ''}`;
}

const severityBadge = (a) => h('span', { class: `anomaly-sev anomaly-sev-${a.severity}` }, a.severity);

/**
 * uPlot plugin: shades each anomaly's [start, end] (with a line at its peak) and, when given, the
 * expected band around it. `marks`: [{start_ms, end_ms, peak_ms, expected_low, expected_high}].
 */
export function anomalyMarks(marks, { band = false } = {}) {
  return {
    hooks: {
      drawClear: [(u) => {
        const { ctx } = u;
        const { top, height } = u.bbox;
        ctx.save();
        for (const m of marks) {
          let x0 = u.valToPos(m.start_ms / 1000, 'x', true);
          let x1 = u.valToPos(Math.max(m.end_ms, m.start_ms) / 1000, 'x', true);
          const px = Math.max(1, devicePixelRatio || 1);
          if (x1 - x0 < 6 * px) { x0 -= 3 * px; x1 += 3 * px; }
          ctx.fillStyle = m.status === 'open' ? 'rgba(220, 38, 38, 0.16)' : 'rgba(234, 88, 12, 0.13)';
          ctx.fillRect(x0, top, x1 - x0, height);
          if (band && Number.isFinite(m.expected_low) && Number.isFinite(m.expected_high)) {
            const y0 = u.valToPos(m.expected_high, 'y', true);
            const y1 = u.valToPos(m.expected_low, 'y', true);
            ctx.fillStyle = 'rgba(37, 99, 235, 0.12)';
            ctx.fillRect(u.bbox.left, y0, u.bbox.width, Math.max(1, y1 - y0));
          }
          const xp = u.valToPos(m.peak_ms / 1000, 'x', true);
          ctx.strokeStyle = 'rgba(220, 38, 38, 0.7)';
          ctx.setLineDash([4, 3]);
          ctx.beginPath();
          ctx.moveTo(xp, top);
          ctx.lineTo(xp, top + height);
          ctx.stroke();
          ctx.setLineDash([]);
        }
        ctx.restore();
      }],
    },
  };
}

export default function mount(root, { arg, params }, ctx) {
  return arg ? detail(root, arg, ctx) : list(root, params, ctx);
}

function list(root, params, ctx) {
  let service = params.get('service') || '';
  let openOnly = params.get('open') === 'true';
  const slot = requestSlot(ctx.signal);
  const body = h('div', { class: 'panel-body' }, loading('loading anomalies…'));
  const subtitle = h('span', { class: 'panel-sub' });
  const svcInput = h('input', {
    type: 'search', class: 'input input-sm', placeholder: 'service', 'aria-label': 'service', value: service,
    onchange: () => { service = svcInput.value.trim(); sync(); load(); },
  });
  const openBox = h('input', {
    type: 'checkbox', name: 'open', checked: openOnly,
    onchange: () => { openOnly = openBox.checked; sync(); load(); },
  });
  const loadBody = h('div', { class: 'panel-body' }, loading('fitting load to latency…'));
  const loadPanel = loadLatency(loadBody, ctx);
  replace(root,
    h('div', { class: 'page-head' },
      h('h1', null, 'Anomalies'),
      subtitle,
      h('div', { class: 'spacer' }),
      h('label', { class: 'toggle' }, openBox, ' open only'),
      svcInput),
    h('section', { class: 'panel' }, body),
    h('section', { class: 'panel load-latency' },
      h('div', { class: 'panel-head' }, h('h2', null, 'Load to latency'),
        h('span', { class: 'panel-sub' }, 'p99 against request rate (Universal Scalability Law fit over the last 7 days): the knee, the rate at which p99 reaches the objective, and when traffic gets there')),
      loadBody));

  function sync() {
    history.replaceState(null, '', hashFor('anomalies', { service, open: openOnly ? 'true' : '' }));
  }

  async function load() {
    loadPanel.load(service);
    subtitle.textContent = `found by the streaming detector on stored series, ${rangeLabel()}`;
    try {
      const res = await get('anomalies', { ...timeWindow(), service, open: openOnly ? 'true' : '' }, { signal: slot.next() });
      render(res.anomalies || []);
    } catch (e) {
      if (isAbort(e)) return;
      replace(body, errorNotice(e));
    }
  }

  function render(rows) {
    if (!rows.length) {
      replace(body, notice('empty', `no anomalies in the ${rangeLabel()}`,
        'oxeye scores every stored metric series and every service\'s rate, error ratio and p99 latency every 30 s; a series needs about 150 points before it is judged'));
      return;
    }
    const head = h('tr', null, ['Severity', 'Status', 'Service', 'Series', 'Start', 'Duration', 'Peak', 'Expected'].map((l) => h('th', null, l)));
    const tbody = h('tbody', null, rows.map((a) => {
      const href = hashFor('anomalies', {}, a.id);
      return h('tr', { class: 'clickable', dataset: { anomaly: a.id }, onclick: (ev) => { if (!ev.target.closest('a')) ctx.navigate(href); } },
        h('td', null, severityBadge(a)),
        h('td', null, h('span', { class: `anomaly-status anomaly-status-${a.status}` }, a.status)),
        h('td', null, a.service || '–'),
        h('td', null, h('a', { href }, anomalyLabel(a))),
        h('td', { title: fmtTime(a.start_ms) }, `${fmtTime(a.start_ms, { millis: false })} (${fmtAgo(a.start_ms)})`),
        h('td', { class: 'num' }, fmtDurationMs(Math.max(0, a.end_ms - a.start_ms))),
        h('td', { class: 'num' }, fmtNumber(a.peak_value)),
        h('td', { class: 'num muted' }, `${fmtNumber(a.expected_low)} – ${fmtNumber(a.expected_high)}`));
    }));
    replace(body, h('table', { class: 'table anomalies-table' }, h('thead', null, head), tbody));
  }

  load();
  return { refresh: load, destroy: () => { slot.abort(); loadPanel.destroy(); } };
}

const rateLabel = (r) => (Number.isFinite(r) ? `${fmtNumber(r)}/s` : '–');

/**
 * The load-to-latency panel: every service's fit in a table; with one service (the page's
 * filter), its observed (rate, p99) samples, the fitted curve and the objective on a chart.
 */
function loadLatency(body, ctx) {
  const slot = requestSlot(ctx.signal);
  let chart = null;
  function destroyChart() {
    chart?.destroy();
    chart = null;
  }
  async function load(service) {
    try {
      const res = await get('load-latency', { service }, { signal: slot.next() });
      const rows = service ? [res] : (res.services || []);
      render(rows, service ? res : null);
    } catch (e) {
      if (isAbort(e)) return;
      destroyChart();
      if (e.status === 404) {
        replace(body, notice('empty', `no spans of ${service} in the last 7 days`, 'load to latency needs the service\'s entry spans'));
      } else {
        replace(body, errorNotice(e));
      }
    }
  }
  function render(rows, one) {
    destroyChart();
    if (!rows.length) {
      replace(body, notice('empty', 'no services with spans in the last 7 days', 'load to latency is fitted from each service\'s entry spans'));
      return;
    }
    const head = h('tr', null, ['Service', 'Samples', 'Rate now', 'Knee', 'p99 objective', 'Reached at', 'Reached in', 'Fit error']
      .map((l) => h('th', null, l)));
    const tbody = h('tbody', null, rows.map((r) => {
      const at = r.rate_at_objective;
      const cross = r.objective_crossing;
      const limited = at && at.limited_by === 'AlreadyExceeded' ? 'already exceeded'
        : at ? rateLabel(at.rate) + (at.limited_by === 'Capacity' ? ' (knee)' : '') : '–';
      return h('tr', { dataset: { service: r.service } },
        h('td', null, h('a', { href: hashFor('anomalies', { service: r.service }) }, r.service)),
        h('td', { class: 'num' }, String(r.samples)),
        h('td', { class: 'num' }, rateLabel(r.current_rate)),
        h('td', { class: 'num' }, rateLabel(r.capacity_rate)),
        h('td', { class: 'num' }, fmtDurationMs(r.objective_ms)),
        h('td', { class: 'num' }, r.fit ? limited : 'too few samples'),
        h('td', { class: 'num' }, cross ? `${fmtDurationMs(cross.in_ms)} (${Math.round(cross.crossing.confidence * 100)} % sure)` : 'not within 7 d'),
        h('td', { class: 'num muted' }, r.fit ? `${(r.fit.median_relative_error * 100).toFixed(1)} %` : '–'));
    }));
    const table = h('table', { class: 'table load-latency-table' }, h('thead', null, head), tbody);
    if (!one || !one.curve) {
      replace(body, table);
      return;
    }
    const wrap = h('div', { class: 'chart-wrap' });
    replace(body, table, wrap);
    // One x axis for both: observed samples as points, the fitted curve as a line.
    const pts = [];
    for (const o of one.observed || []) pts.push([o.rate, o.p99_ms, null]);
    for (const c of one.curve) pts.push([c.rate, null, c.p99_ms]);
    pts.sort((a, b) => a[0] - b[0]);
    const data = [pts.map((p) => p[0]), pts.map((p) => p[1]), pts.map((p) => p[2]), pts.map(() => one.objective_ms)];
    const opts = {
      width: Math.max(300, wrap.clientWidth || 800),
      height: 260,
      scales: { x: { time: false } },
      legend: { live: true },
      axes: [
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, label: 'requests/s', values: (u, vals) => vals.map((v) => fmtNumber(v)) },
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, size: 70, label: 'p99 ms', values: (u, vals) => vals.map((v) => fmtNumber(v)) },
      ],
      series: [
        { label: 'rate', value: (u, v) => rateLabel(v) },
        { label: 'observed p99', stroke: '#2563eb', paths: () => null, points: { show: true, size: 4, fill: '#2563eb' }, value: (u, v) => fmtNumber(v) },
        { label: 'fitted p99', stroke: '#ea580c', width: 1.5, spanGaps: true, points: { show: false }, value: (u, v) => fmtNumber(v) },
        { label: 'objective', stroke: '#dc2626', dash: [5, 4], width: 1, points: { show: false }, value: (u, v) => fmtNumber(v) },
      ],
    };
    chart = new uPlot(opts, data, wrap);
    wrap.dataset.points = String(pts.length);
  }
  return { load, destroy: () => { slot.abort(); destroyChart(); } };
}

function detail(root, id, ctx) {
  const slot = requestSlot(ctx.signal);
  let chart = null;
  let resizeObs = null;
  const head = h('div', { class: 'page-head' }, h('a', { href: '#/anomalies', class: 'back' }, '← anomalies'), h('h1', null, 'Anomaly'));
  const summary = h('section', { class: 'panel anomaly-summary' }, loading('loading anomaly…'));
  const chartWrap = h('div', { class: 'chart-wrap' });
  const evidence = h('section', { class: 'panel anomaly-evidence' }, h('div', { class: 'panel-head' }, h('h2', null, 'Evidence')), loading('ranking evidence…'));
  replace(root, head, summary, h('section', { class: 'panel' }, chartWrap), evidence);

  function destroyChart() {
    chart?.destroy();
    chart = null;
    resizeObs?.disconnect();
    resizeObs = null;
  }

  async function load() {
    const signal = slot.next();
    try {
      const res = await get(`anomalies/${encodeURIComponent(id)}`, {}, { signal });
      renderSummary(res.anomaly);
      drawChart(res);
    } catch (e) {
      if (isAbort(e)) return;
      replace(summary, errorNotice(e));
      return;
    }
    try {
      const ev = await get(`anomalies/${encodeURIComponent(id)}/evidence`, {}, { signal });
      renderEvidence(ev);
    } catch (e) {
      if (isAbort(e)) return;
      replace(evidence, h('div', { class: 'panel-head' }, h('h2', null, 'Evidence')), errorNotice(e));
    }
  }

  function renderSummary(a) {
    const seriesLink = a.source === 'metric'
      ? h('a', { href: hashFor('metrics', { name: a.metric, service: a.service }) }, 'open in the metric explorer')
      : h('a', { href: hashFor('traces', { service: a.service, start: a.start_ms - 60e3, end: a.end_ms + 60e3 }) }, 'traces of the service in the window');
    replace(summary,
      h('div', { class: 'anomaly-title' },
        severityBadge(a),
        h('h2', null, `${a.service ? a.service + ' · ' : ''}${anomalyLabel(a)}`),
        h('span', { class: `anomaly-status anomaly-status-${a.status}` }, a.status)),
      h('div', { class: 'anomaly-facts' },
        h('span', null, `from ${fmtTime(a.start_ms)} to ${fmtTime(a.end_ms)} (${fmtDurationMs(Math.max(0, a.end_ms - a.start_ms))}, ${a.points} points)`),
        h('span', null, `peak ${fmtNumber(a.peak_value)} at ${fmtTime(a.peak_ms)}; expected ${fmtNumber(a.expected_low)} – ${fmtNumber(a.expected_high)}`),
        h('span', null, `score ${fmtNumber(a.score)}`),
        seriesLink),
      Object.keys(a.attributes || {}).length ? kvTable(a.attributes) : null);
  }

  function drawChart(res) {
    destroyChart();
    const pts = res.points || [];
    if (!pts.length) {
      replace(chartWrap, notice('empty', 'the series has no points left in the window', 'retention may have dropped them'));
      return;
    }
    const a = res.anomaly;
    const xs = pts.map((p) => p[0] / 1000);
    const ys = pts.map((p) => (Number.isFinite(p[1]) ? p[1] : null));
    const lo = pts.map(() => a.expected_low);
    const hi = pts.map(() => a.expected_high);
    const opts = {
      width: Math.max(300, chartWrap.clientWidth || 800),
      height: 300,
      scales: { x: { time: true } },
      legend: { live: true },
      axes: [
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' } },
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, size: 70, values: (u, vals) => vals.map((v) => fmtNumber(v)) },
      ],
      series: [
        { label: 'time' },
        { label: anomalyLabel(a), stroke: '#2563eb', width: 1.5, spanGaps: true, value: (u, v) => fmtNumber(v) },
        { label: 'expected low', stroke: 'rgba(37, 99, 235, 0.35)', dash: [4, 4], width: 1, points: { show: false }, value: (u, v) => fmtNumber(v) },
        { label: 'expected high', stroke: 'rgba(37, 99, 235, 0.35)', dash: [4, 4], width: 1, points: { show: false }, value: (u, v) => fmtNumber(v) },
      ],
      bands: [{ series: [3, 2], fill: 'rgba(37, 99, 235, 0.08)' }],
      plugins: [anomalyMarks([a])],
    };
    replace(chartWrap);
    chart = new uPlot(opts, [xs, ys, lo, hi], chartWrap);
    chartWrap.dataset.points = String(pts.length);
    resizeObs = new ResizeObserver(() => {
      if (chart && chartWrap.clientWidth) chart.setSize({ width: chartWrap.clientWidth, height: 300 });
    });
    resizeObs.observe(chartWrap);
  }

  function renderEvidence(ev) {
    const items = ev.evidence || [];
    const sources = ev.sources || {};
    const looked = [
      `deploys: ${sources.deploys?.versions_seen ?? 0} versions seen`,
      `profiles: ${sources.profiles?.stacks ?? 0} stacks`,
      sources.alerts?.unavailable ? `alerts: ${sources.alerts.unavailable}` : `alerts: ${sources.alerts?.found ?? 0}`,
      `resources: ${sources.resources?.series ?? 0} series compared`,
    ].join(' · ');
    replace(evidence,
      h('div', { class: 'panel-head' }, h('h2', null, 'Evidence'), h('span', { class: 'panel-sub' }, 'ranked by how strongly each points at this anomaly')),
      items.length
        ? h('ol', { class: 'evidence-list' }, items.map((it) => h('li', { class: `evidence evidence-${it.kind}`, dataset: { kind: it.kind } },
          h('span', { class: 'evidence-kind' }, it.kind),
          h('span', { class: 'evidence-weight', title: 'weight' }, `${Math.round(100 * it.weight)} %`),
          h('a', { href: it.link }, it.title))))
        : notice('empty', 'no evidence found in the window', 'nothing deployed, no function grew, no alert and no resource moved with it'),
      h('div', { class: 'muted small evidence-sources' }, looked));
  }

  load();
  return { refresh: load, destroy: () => { slot.abort(); destroyChart(); } };
}
