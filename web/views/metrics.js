// Metric explorer: pick a metric, optionally a service, and plot every series with uPlot.
import { h, replace, notice, errorNotice, loading, field, select } from '../dom.js';
import { get, isAbort, requestSlot } from '../api.js';
import { timeWindow, rangeLabel } from '../state.js';
import { hashFor } from '../route.js';
import { fmtNumber, fmtCount, SERIES_COLORS } from '../format.js';
import uPlot from '../vendor/uplot/uPlot.esm.js';
import { anomalyMarks } from './anomalies.js';

const MAX_SERIES = 50;
const TYPE_LABEL = { gauge: 'gauge', sum: 'sum', histogram: 'histogram', exponential_histogram: 'exp histogram', summary: 'summary' };

export function seriesLabel(s, withService) {
  const attrs = Object.entries(s.attributes || {}).sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  const parts = [];
  if (withService) parts.push(s.service || '(no service)');
  if (attrs.length) parts.push(`{${attrs.join(', ')}}`);
  return parts.join(' ') || '(no attributes)';
}

/** uPlot's aligned data: one x array (seconds) and one y array per series, null where absent. */
export function align(series) {
  const ts = new Set();
  for (const s of series) for (const p of s.points || []) ts.add(Number(p.t));
  const xs = [...ts].sort((a, b) => a - b);
  const idx = new Map(xs.map((t, i) => [t, i]));
  const ys = series.map((s) => {
    const y = new Array(xs.length).fill(null);
    for (const p of s.points || []) {
      const v = p.value === null || p.value === undefined ? null : Number(p.value);
      y[idx.get(Number(p.t))] = Number.isFinite(v) ? v : null;
    }
    return y;
  });
  return [xs.map((t) => t / 1000), ...ys];
}

const isCumulative = (t) => t === 2 || /cumul/i.test(String(t ?? ''));
const isDelta = (t) => t === 1 || /delta/i.test(String(t ?? ''));

/** Per-second rate of a monotonic sum's points; a counter reset restarts from zero. */
export function toRate(points) {
  const sorted = [...points].sort((a, b) => a.t - b.t);
  return sorted.map((p, i) => {
    const v = Number(p.value);
    if (isDelta(p.temporality)) {
      const startNs = Number(p.start_time_unix_nano || 0);
      const endNs = Number(p.time_unix_nano || 0);
      const secs = startNs > 0 && endNs > startNs ? (endNs - startNs) / 1e9
        : i > 0 ? (p.t - sorted[i - 1].t) / 1000 : 0;
      return { ...p, value: secs > 0 ? v / secs : null };
    }
    if (i === 0) return { ...p, value: null };
    const prev = sorted[i - 1];
    const dt = (p.t - prev.t) / 1000;
    const dv = v >= Number(prev.value) ? v - Number(prev.value) : v;
    return { ...p, value: dt > 0 ? dv / dt : null };
  });
}

export default function mount(root, { params }, ctx) {
  let name = params.get('name') || '';
  let service = params.get('service') || '';
  let metrics = null;
  let chart = null;
  let resizeObs = null;
  let asRate = params.get('rate') !== '0';
  let lastRes = null;
  let lastWin = null;
  // Anomalies of the shown series (marked on the chart) and the forecast overlay.
  let showForecast = params.get('forecast') === '1';
  let lastMarks = [];
  let lastForecast = null;
  const listSlot = requestSlot(ctx.signal);
  const pointSlot = requestSlot(ctx.signal);

  const search = h('input', { type: 'search', class: 'input', placeholder: 'filter metrics', 'aria-label': 'filter metrics', oninput: () => renderList() });
  const list = h('div', { class: 'metric-list', role: 'listbox', 'aria-label': 'metrics' }, loading('loading metrics…'));
  const head = h('div', { class: 'metric-head' });
  const chartWrap = h('div', { class: 'chart-wrap' });
  const status = h('div', { class: 'chart-status' });
  replace(root,
    h('div', { class: 'page-head' }, h('h1', null, 'Metrics'), h('span', { class: 'panel-sub' }, 'every series of a metric over the time range')),
    h('div', { class: 'metrics-layout' },
      h('section', { class: 'panel metric-side' }, h('div', { class: 'panel-head' }, search), list),
      h('section', { class: 'panel metric-main' }, head, status, chartWrap)));

  async function loadList() {
    try {
      const res = await get('metrics', {}, { signal: listSlot.next() });
      metrics = (res.metrics || []).slice().sort((a, b) => String(a.name).localeCompare(String(b.name)));
      renderList();
      if (!name && metrics.length) {
        name = metrics[0].name;
        history.replaceState(null, '', hashFor('metrics', { name }));
      }
      renderHead();
      if (name) loadPoints();
      else showEmpty();
    } catch (e) {
      if (isAbort(e)) return;
      replace(list, h('div', { class: 'kv-empty' }, 'metric list unavailable'));
      replace(head, h('h2', null, name || 'Metrics'));
      destroyChart();
      replace(status, errorNotice(e));
    }
  }

  function showEmpty() {
    destroyChart();
    replace(status, notice('empty', 'no metrics yet', 'point an OTLP exporter at 127.0.0.1:4317 (gRPC) or 127.0.0.1:4318 (HTTP /v1/metrics)'));
  }

  function renderList() {
    if (!metrics) return;
    const f = search.value.trim().toLowerCase();
    const shown = metrics.filter((m) => !f || String(m.name).toLowerCase().includes(f));
    if (!metrics.length) { replace(list, h('div', { class: 'kv-empty' }, 'no metrics')); return; }
    if (!shown.length) { replace(list, h('div', { class: 'kv-empty' }, 'no metric matches')); return; }
    replace(list, shown.map((m) => h('a', {
      class: `metric-item ${m.name === name ? 'active' : ''}`, role: 'option', 'aria-selected': String(m.name === name),
      href: hashFor('metrics', { name: m.name }), dataset: { metric: m.name }, title: m.description || m.name,
      onclick: (ev) => { ev.preventDefault(); choose(m.name, ''); },
    },
    h('span', { class: 'metric-name' }, m.name),
    h('span', { class: `type-badge type-${m.type}` }, TYPE_LABEL[m.type] || m.type || '?'))));
  }

  function choose(n, svc) {
    name = n;
    service = svc;
    history.pushState(null, '', hashFor('metrics', { name, service }));
    renderList();
    renderHead();
    loadPoints();
  }

  function renderHead() {
    const m = metrics?.find((x) => x.name === name);
    if (!name) { replace(head); return; }
    const services = m?.services || [];
    const svcSelect = select({ class: 'input', name: 'service', 'aria-label': 'service' },
      [['', 'all services'], ...services.map((s) => [s, s]), ...(service && !services.includes(service) ? [[service, service]] : [])], service);
    svcSelect.addEventListener('change', () => choose(name, svcSelect.value));
    replace(head,
      h('div', { class: 'metric-title' },
        h('h2', null, name),
        m ? h('span', { class: `type-badge type-${m.type}` }, TYPE_LABEL[m.type] || m.type) : null,
        m?.unit ? h('span', { class: 'unit' }, m.unit) : null,
        h('div', { class: 'spacer' }),
        field('Service', svcSelect, 'inline')),
      m?.description ? h('div', { class: 'muted metric-desc' }, m.description) : null,
      m && !['gauge', 'sum'].includes(m.type) ? h('div', { class: 'muted small' }, `plotting the mean (sum / count) of each ${TYPE_LABEL[m.type]} point`) : null);
  }

  async function loadPoints() {
    if (!chart) replace(status, loading('loading points…'));
    try {
      const win = timeWindow();
      const signal = pointSlot.next();
      const res = await get('metrics/points', { name, service, ...win }, { signal });
      lastMarks = await loadMarks(win, signal);
      lastForecast = showForecast ? await loadForecast(res, win, signal) : null;
      lastRes = res;
      lastWin = win;
      draw(res, win);
    } catch (e) {
      if (isAbort(e)) return;
      destroyChart();
      replace(status, errorNotice(e));
    }
  }

  /** Anomalies found on this metric in the window; the chart is still drawn when this fails. */
  async function loadMarks(win, signal) {
    try {
      const r = await get('anomalies', { metric: name, service, ...win, limit: 500 }, { signal });
      return r.anomalies || [];
    } catch (e) {
      if (isAbort(e)) throw e;
      return [];
    }
  }

  /** Holt-Winters forecast of the one shown series, a quarter of the window ahead. */
  async function loadForecast(res, win, signal) {
    const shown = (res.series || []).filter((s) => (s.points || []).length);
    if (res.type === 'sum' && asRate) return { note: 'no forecast of a rate; untick per-second rate' };
    if (shown.length !== 1) return { note: `forecast needs one series (${shown.length} shown): pick a service` };
    try {
      return await get('forecast', {
        metric: name, series: shown[0].series_id, start: win.start, end: win.end,
        horizon: Math.max(60_000, Math.round((win.end - win.start) / 4)),
      }, { signal });
    } catch (e) {
      if (isAbort(e)) throw e;
      return { note: `no forecast: ${e.message.replace(/^\d+: /, '')}` };
    }
  }

  function destroyChart() {
    chart?.destroy();
    chart = null;
    resizeObs?.disconnect();
    resizeObs = null;
    replace(chartWrap);
  }

  function draw(res, win) {
    let series = (res.series || []).filter((s) => (s.points || []).length);
    destroyChart();
    if (!series.length) {
      replace(status, notice('empty', `no points for ${name} in the ${rangeLabel()}`, 'widen the time range or pick another service'));
      return;
    }
    const total = series.length;
    series = series.slice(0, MAX_SERIES);
    const points = series.reduce((n, s) => n + s.points.length, 0);
    // Counters read better as a rate; the raw cumulative value stays one click away.
    const monotonic = res.type === 'sum' && series.some((s) => s.points.some((p) => p.is_monotonic === true || p.is_monotonic === 'true'));
    const rate = monotonic && asRate;
    if (rate) series = series.map((s) => ({ ...s, points: toRate(s.points) }));
    const rateToggle = monotonic
      ? h('label', { class: 'toggle' },
        h('input', {
          type: 'checkbox', name: 'rate', checked: asRate,
          onchange: (ev) => {
            asRate = ev.target.checked;
            history.replaceState(null, '', hashFor('metrics', { name, service, rate: asRate ? '' : '0' }));
            draw(lastRes, lastWin);
          },
        }),
        ' per-second rate')
      : null;
    const ids = new Set(series.map((s) => s.series_id));
    const marks = lastMarks.filter((m) => ids.has(m.series_id));
    const fc = lastForecast?.forecast && series.length === 1 ? lastForecast : null;
    const forecastToggle = h('label', { class: 'toggle' },
      h('input', {
        type: 'checkbox', name: 'forecast', checked: showForecast,
        onchange: (ev) => {
          showForecast = ev.target.checked;
          history.replaceState(null, '', hashFor('metrics', { name, service, rate: asRate ? '' : '0', forecast: showForecast ? '1' : '' }));
          loadPoints();
        },
      }),
      ' forecast');
    replace(status, h('div', { class: 'results-summary chart-summary' },
      h('span', null, `${fmtCount(total)} series · ${fmtCount(points)} points · ${rangeLabel()}`,
        total > MAX_SERIES ? h('span', { class: 'warn' }, ` · showing the first ${MAX_SERIES}; filter by service to see the rest`) : null,
        marks.length ? h('a', { class: 'anomaly-count', href: hashFor('anomalies', { service }) }, ` · ${marks.length} ${marks.length === 1 ? 'anomaly' : 'anomalies'}`) : null,
        showForecast && lastForecast?.note ? h('span', { class: 'muted forecast-note' }, lastForecast.note) : null,
        fc ? h('span', { class: 'muted forecast-note' }, `forecast: Holt-Winters, ${Math.round(100 * fc.level)} % band`) : null),
      h('span', { class: 'spacer' }),
      forecastToggle,
      rateToggle));
    if (fc) {
      const f = fc.forecast;
      const at = (arr) => ({ points: f.t.map((t, i) => ({ t, value: arr[i] })) });
      series = [...series, at(f.mean), at(f.lower), at(f.upper)];
    }
    const withService = !service && new Set(series.map((s) => s.service)).size > 1;
    const unit = rate ? `${res.unit && res.unit !== '1' ? res.unit : ''}/s` : (res.unit || '');
    const fmtVal = (v) => (v === null || v === undefined ? '–' : `${fmtNumber(v)}${unit ? ' ' + unit : ''}`);
    const data = align(series);
    const shownCount = fc ? series.length - 3 : series.length;
    const opts = {
      width: Math.max(300, chartWrap.clientWidth || 800),
      height: 340,
      cursor: { drag: { x: true, y: false }, focus: { prox: 24 } },
      focus: { alpha: 0.3 },
      scales: { x: { time: true, range: (u, min, max) => (min === max ? [win.start / 1000, win.end / 1000] : [min, max]) } },
      legend: { live: true },
      axes: [
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e5e7eb' } },
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e5e7eb' }, size: 70, values: (u, vals) => vals.map((v) => fmtNumber(v)) },
      ],
      series: [
        { label: 'time' },
        ...series.slice(0, shownCount).map((s, i) => ({
          label: seriesLabel(s, withService),
          stroke: SERIES_COLORS[i % SERIES_COLORS.length],
          width: 1.5,
          spanGaps: true,
          points: { show: data[0].length < 60, size: 4 },
          value: (u, v) => fmtVal(v),
        })),
        ...(fc ? [
          { label: 'forecast', stroke: '#7c3aed', width: 1.5, dash: [6, 4], spanGaps: true, points: { show: false }, value: (u, v) => fmtVal(v) },
          { label: `forecast low (${Math.round(100 * fc.level)} %)`, stroke: 'rgba(124, 58, 237, 0.35)', width: 1, spanGaps: true, points: { show: false }, value: (u, v) => fmtVal(v) },
          { label: `forecast high (${Math.round(100 * fc.level)} %)`, stroke: 'rgba(124, 58, 237, 0.35)', width: 1, spanGaps: true, points: { show: false }, value: (u, v) => fmtVal(v) },
        ] : []),
      ],
      bands: fc ? [{ series: [shownCount + 3, shownCount + 2], fill: 'rgba(124, 58, 237, 0.10)' }] : [],
      plugins: [anomalyMarks(marks)],
    };
    chart = new uPlot(opts, data, chartWrap);
    resizeObs = new ResizeObserver(() => {
      if (chart && chartWrap.clientWidth) chart.setSize({ width: chartWrap.clientWidth, height: 340 });
    });
    resizeObs.observe(chartWrap);
  }

  loadList();
  return {
    refresh: () => { if (name) loadPoints(); loadListQuiet(); },
    destroy: () => { listSlot.abort(); pointSlot.abort(); destroyChart(); },
  };

  async function loadListQuiet() {
    try {
      const res = await get('metrics', {}, { signal: ctx.signal });
      metrics = (res.metrics || []).slice().sort((a, b) => String(a.name).localeCompare(String(b.name)));
      renderList();
    } catch { /* the chart refresh reports errors */ }
  }
}
