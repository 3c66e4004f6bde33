// Trace search: filters → newest matching traces, a duration scatter and a results table.
import { h, replace, notice, errorNotice, loading, field, select } from '../dom.js';
import { get, isAbort, requestSlot } from '../api.js';
import { timeWindow, rangeLabel, rememberSearch } from '../state.js';
import { hashFor } from '../route.js';
import { fmtDurationMs, fmtTime, fmtAgo, colorFor, shortId, fmtCount } from '../format.js';
import { EMPTY_HINT } from './services.js';
import uPlot from '../vendor/uplot/uPlot.esm.js';

const FILTER_KEYS = ['service', 'operation', 'status', 'min_duration_ms', 'max_duration_ms', 'limit'];

export default function mount(root, { params }, ctx) {
  const f = Object.fromEntries(FILTER_KEYS.map((k) => [k, params.get(k) || '']));
  f.attr = params.getAll('attr');
  const slot = requestSlot(ctx.signal);
  const opSlot = requestSlot(ctx.signal);
  let chart = null;
  let resizeObs = null;

  const serviceList = h('datalist', { id: 'dl-services' });
  const opList = h('datalist', { id: 'dl-operations' });
  const inService = h('input', { class: 'input', name: 'service', list: 'dl-services', value: f.service, placeholder: 'any service', autocomplete: 'off' });
  const inOperation = h('input', { class: 'input', name: 'operation', list: 'dl-operations', value: f.operation, placeholder: 'any operation', autocomplete: 'off' });
  const inStatus = select({ class: 'input', name: 'status' },
    [['', 'any'], ['error', 'error'], ['ok', 'ok'], ['unset', 'unset']], f.status);
  const inMin = h('input', { class: 'input input-num', name: 'min_duration_ms', type: 'number', min: '0', step: 'any', value: f.min_duration_ms, placeholder: 'ms' });
  const inMax = h('input', { class: 'input input-num', name: 'max_duration_ms', type: 'number', min: '0', step: 'any', value: f.max_duration_ms, placeholder: 'ms' });
  const inAttr = h('input', { class: 'input input-wide', name: 'attr', value: f.attr.join(' '), placeholder: 'key=value (space-separated)', autocomplete: 'off' });
  const inLimit = select({ class: 'input', name: 'limit' }, ['20', '50', '100', '500'], f.limit || '20');

  const form = h('form', { class: 'filters', onsubmit: (ev) => { ev.preventDefault(); submit(); } },
    field('Service', inService),
    field('Operation', inOperation),
    field('Status', inStatus),
    field('Min duration', inMin),
    field('Max duration', inMax),
    field('Attributes', inAttr, 'grow'),
    field('Limit', inLimit),
    h('div', { class: 'field field-actions' },
      h('button', { type: 'submit', class: 'btn btn-primary' }, 'Find traces'),
      h('button', { type: 'button', class: 'btn', onclick: () => { form.reset(); for (const i of [inService, inOperation, inMin, inMax, inAttr]) i.value = ''; inStatus.value = ''; inLimit.value = '20'; submit(); } }, 'Clear')),
    serviceList, opList);

  const summary = h('div', { class: 'results-summary' });
  const chartBox = h('div', { class: 'scatter' });
  const results = h('div', { class: 'panel-body' }, loading('searching traces…'));
  replace(root,
    h('div', { class: 'page-head' }, h('h1', null, 'Traces'), h('span', { class: 'panel-sub' }, 'search spans by service, operation, duration, status and attributes')),
    h('section', { class: 'panel' }, form),
    h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, summary), chartBox, results));

  inService.addEventListener('change', () => loadOperations(inService.value.trim()));

  function current() {
    return {
      service: inService.value.trim(),
      operation: inOperation.value.trim(),
      status: inStatus.value,
      min_duration_ms: inMin.value.trim(),
      max_duration_ms: inMax.value.trim(),
      attr: inAttr.value.split(/\s+/).filter(Boolean),
      limit: inLimit.value === '20' ? '' : inLimit.value,
    };
  }

  function submit() {
    const hash = hashFor('traces', current());
    if (hash !== location.hash) history.pushState(null, '', hash);
    search();
  }

  async function loadServices() {
    try {
      const res = await get('services', timeWindow(), { signal: ctx.signal });
      replace(serviceList, (res.services || []).map((s) => h('option', { value: s.service })));
    } catch (e) {
      if (!isAbort(e)) console.warn('services list:', e.message);
    }
  }

  async function loadOperations(service) {
    if (!service) { replace(opList); return; }
    try {
      const res = await get('operations', { service, ...timeWindow() }, { signal: opSlot.next() });
      replace(opList, (res.operations || []).map((o) => h('option', { value: o })));
    } catch (e) {
      if (!isAbort(e)) console.warn('operations list:', e.message);
    }
  }

  async function search() {
    rememberSearch(location.hash || '#/traces');
    const q = current();
    for (const a of q.attr) {
      if (!a.includes('=')) {
        replace(results, notice('error', 'invalid attribute filter', `expected key=value, found "${a}"`));
        return;
      }
    }
    if (results.querySelector('table') === null) replace(results, loading('searching traces…'));
    try {
      const win = timeWindow();
      const res = await get('traces', { ...q, limit: q.limit || 20, ...win }, { signal: slot.next() });
      render(res.traces || [], Number(q.limit || 20), win);
    } catch (e) {
      if (isAbort(e)) return;
      summary.textContent = 'search failed';
      destroyChart();
      replace(results, errorNotice(e));
    }
  }

  function render(traces, limit, win) {
    summary.textContent = `${fmtCount(traces.length)} trace${traces.length === 1 ? '' : 's'}${traces.length >= limit ? ` (limit ${limit} reached, newest first)` : ''} · ${rangeLabel()}`;
    if (!traces.length) {
      destroyChart();
      const filtered = Object.values(current()).some((v) => (Array.isArray(v) ? v.length : v));
      replace(results, filtered
        ? notice('empty', `no traces match these filters in the ${rangeLabel()}`, 'widen the time range or relax a filter')
        : notice('empty', `no traces in the ${rangeLabel()}`, EMPTY_HINT));
      return;
    }
    drawScatter(traces, win);
    const maxDur = Math.max(...traces.map((t) => Number(t.duration_ms) || 0), 1e-9);
    const table = h('table', { class: 'table traces-table' },
      h('thead', null, h('tr', null,
        h('th', null, 'Trace'), h('th', null, 'Services'), h('th', { class: 'right' }, 'Spans'),
        h('th', { class: 'dur-col' }, 'Duration'), h('th', { class: 'right' }, 'Start'))),
      h('tbody', null, traces.map((t) => {
        const href = hashFor('trace', {}, t.trace_id);
        const errs = Number(t.error_count) || 0;
        return h('tr', {
          class: `clickable ${errs ? 'has-error' : ''}`, dataset: { traceId: t.trace_id },
          onclick: (ev) => { if (!ev.target.closest('a')) ctx.navigate(href); },
        },
        h('td', { class: 'trace-cell' },
          h('a', { href, class: 'trace-link' },
            h('span', { class: 'swatch', style: { background: colorFor(t.root_service) } }),
            h('span', { class: 'root-service' }, t.root_service || '<unknown>'),
            h('span', { class: 'root-name' }, t.root_name || '<missing root>')),
          h('span', { class: 'mono muted trace-id', title: t.trace_id }, shortId(t.trace_id, 12))),
        h('td', null, h('div', { class: 'chips' }, (t.services || []).map((s) =>
          h('span', { class: 'chip', style: { '--c': colorFor(s) } }, s)))),
        h('td', { class: 'right num' }, fmtCount(t.span_count),
          errs ? h('span', { class: 'err-badge', title: `${errs} error span${errs === 1 ? '' : 's'}` }, `${errs} err`) : null),
        h('td', { class: 'dur-col' }, h('div', { class: 'dur' },
          h('span', { class: 'dur-bar' }, h('span', { style: { width: `${Math.max(1, (Number(t.duration_ms) || 0) / maxDur * 100)}%`, background: errs ? 'var(--err)' : colorFor(t.root_service) } })),
          h('span', { class: 'num' }, fmtDurationMs(t.duration_ms)))),
        h('td', { class: 'right num', title: new Date(Number(t.start_ms)).toISOString() },
          fmtTime(t.start_ms), h('div', { class: 'muted small' }, fmtAgo(t.start_ms))));
      })));
    replace(results, table);
  }

  function destroyChart() {
    chart?.destroy();
    chart = null;
    resizeObs?.disconnect();
    resizeObs = null;
    chartBox.classList.remove('shown');
  }

  // Duration-over-time scatter (like Jaeger's): ok and error traces as two point series.
  function drawScatter(traces, win) {
    destroyChart();
    chartBox.classList.add('shown');
    const sorted = [...traces].sort((a, b) => a.start_ms - b.start_ms);
    const xs = sorted.map((t) => t.start_ms / 1000);
    const ok = sorted.map((t) => (Number(t.error_count) ? null : Number(t.duration_ms)));
    const bad = sorted.map((t) => (Number(t.error_count) ? Number(t.duration_ms) : null));
    const points = (color) => ({ paths: () => null, points: { show: true, size: 7, stroke: color, fill: color + '99', width: 1 } });
    const opts = {
      width: Math.max(300, chartBox.clientWidth || 800),
      height: 130,
      legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { size: 9 } },
      scales: { x: { time: true, range: () => [win.start / 1000, win.end / 1000] }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e5e7eb' } },
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e5e7eb' }, size: 60, values: (u, vals) => vals.map((v) => fmtDurationMs(v)) },
      ],
      series: [{}, { label: 'ok', ...points('#4e79a7') }, { label: 'error', ...points('#d64545') }],
    };
    chart = new uPlot(opts, [xs, ok, bad], chartBox);
    chart.over.addEventListener('click', () => {
      const i = chart.cursor.idx;
      if (i !== null && i !== undefined && sorted[i]) ctx.navigate(hashFor('trace', {}, sorted[i].trace_id));
    });
    chart.over.title = 'click a point to open its trace';
    resizeObs = new ResizeObserver(() => {
      if (chart && chartBox.clientWidth) chart.setSize({ width: chartBox.clientWidth, height: 130 });
    });
    resizeObs.observe(chartBox);
  }

  loadServices();
  loadOperations(f.service);
  search();
  return {
    refresh: (why) => { if (why !== 'auto' || !document.activeElement || !form.contains(document.activeElement)) search(); },
    destroy: () => { slot.abort(); destroyChart(); },
  };
}
