// Logs: filter by service, minimum severity, body text and trace id; rows expand to attributes.
import { h, replace, notice, errorNotice, loading, field, select, kvTable } from '../dom.js';
import { get, isAbort, requestSlot } from '../api.js';
import { timeWindow, rangeLabel } from '../state.js';
import { hashFor } from '../route.js';
import { fmtTime, fmtCount, colorFor, severityOf, shortId } from '../format.js';

const SEVERITY_OPTIONS = [['', 'any'], ['debug', '≥ debug'], ['info', '≥ info'], ['warn', '≥ warn'], ['error', '≥ error'], ['fatal', 'fatal']];

export default function mount(root, { params }, ctx) {
  const p = (k) => params.get(k) || '';
  // An explicit window (from "logs for this trace") overrides the shared range until cleared.
  let fixed = p('start') && p('end') ? { start: Number(p('start')), end: Number(p('end')) } : null;
  const slot = requestSlot(ctx.signal);
  const expanded = new Set();

  const serviceList = h('datalist', { id: 'dl-log-services' });
  const inService = h('input', { class: 'input', name: 'service', list: 'dl-log-services', value: p('service'), placeholder: 'any service', autocomplete: 'off' });
  const inSeverity = select({ class: 'input', name: 'severity' }, SEVERITY_OPTIONS, p('severity'));
  const inText = h('input', { class: 'input input-wide', name: 'q', type: 'search', value: p('q'), placeholder: 'text in body (case-insensitive)' });
  const inTrace = h('input', { class: 'input input-trace mono', name: 'trace_id', value: p('trace_id'), placeholder: '32 hex digits', autocomplete: 'off', spellcheck: 'false' });
  const inLimit = select({ class: 'input', name: 'limit' }, ['100', '250', '500', '1000'], p('limit') || '100');
  const windowChip = h('span', { class: 'window-chip' });

  const form = h('form', { class: 'filters', onsubmit: (ev) => { ev.preventDefault(); submit(); } },
    field('Service', inService),
    field('Min severity', inSeverity),
    field('Search', inText, 'grow'),
    field('Trace ID', inTrace),
    field('Limit', inLimit),
    h('div', { class: 'field field-actions' },
      h('button', { type: 'submit', class: 'btn btn-primary' }, 'Search logs'),
      h('button', { type: 'button', class: 'btn', onclick: () => { for (const i of [inService, inText, inTrace]) i.value = ''; inSeverity.value = ''; inLimit.value = '100'; fixed = null; submit(); } }, 'Clear')),
    serviceList);
  inSeverity.addEventListener('change', submit);

  const summary = h('div', { class: 'results-summary' });
  const body = h('div', { class: 'panel-body' }, loading('loading logs…'));
  replace(root,
    h('div', { class: 'page-head' }, h('h1', null, 'Logs'), h('span', { class: 'panel-sub' }, 'newest first')),
    h('section', { class: 'panel' }, form),
    h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, summary, h('div', { class: 'spacer' }), windowChip), body));

  function current() {
    return {
      service: inService.value.trim(),
      severity: inSeverity.value,
      q: inText.value.trim(),
      trace_id: inTrace.value.trim(),
      limit: inLimit.value === '100' ? '' : inLimit.value,
      ...(fixed ? { start: fixed.start, end: fixed.end } : {}),
    };
  }

  function submit() {
    const hash = hashFor('logs', current());
    if (hash !== location.hash) history.pushState(null, '', hash);
    load();
  }

  function renderWindowChip() {
    if (!fixed) { replace(windowChip); return; }
    replace(windowChip,
      h('span', { class: 'chip chip-plain', title: 'time window of the trace; the range picker is ignored until cleared' },
        `${fmtTime(fixed.start, { millis: false })} – ${fmtTime(fixed.end, { millis: false })}`,
        h('button', { type: 'button', class: 'chip-x', 'aria-label': 'use the shared time range', onclick: () => { fixed = null; submit(); } }, '×')));
  }

  async function loadServices() {
    try {
      const res = await get('services', timeWindow(), { signal: ctx.signal });
      replace(serviceList, (res.services || []).map((s) => h('option', { value: s.service })));
    } catch (e) {
      if (!isAbort(e)) console.warn('services list:', e.message);
    }
  }

  async function load() {
    renderWindowChip();
    const q = current();
    const win = fixed || timeWindow();
    try {
      const res = await get('logs', { ...q, limit: q.limit || 100, start: win.start, end: win.end }, { signal: slot.next() });
      render(res.logs || [], Number(q.limit || 100));
    } catch (e) {
      if (isAbort(e)) return;
      summary.textContent = 'search failed';
      replace(body, errorNotice(e));
    }
  }

  function render(logs, limit) {
    const where = fixed ? 'the trace\'s time window' : `the ${rangeLabel()}`;
    summary.textContent = `${fmtCount(logs.length)} log record${logs.length === 1 ? '' : 's'}${logs.length >= limit ? ` (limit ${limit} reached)` : ''} · ${where}`;
    if (!logs.length) {
      const filtered = ['service', 'severity', 'q', 'trace_id'].some((k) => current()[k]);
      replace(body, filtered
        ? notice('empty', `no logs match these filters in ${where}`, 'widen the time range or relax a filter')
        : notice('empty', `no logs in ${where}`, 'no logs yet — point an OTLP exporter at 127.0.0.1:4317 (gRPC) or 127.0.0.1:4318 (HTTP /v1/logs)'));
      return;
    }
    const tbody = h('tbody');
    logs.forEach((l) => {
      const key = `${l.time_unix_nano}|${l.service}|${l.span_id}|${bodyText(l.body).slice(0, 64)}`;
      const sev = severityOf(l.severity_number, l.severity_text);
      const row = h('tr', {
        class: `clickable log-row ${sev.cls}-row`, dataset: { traceId: l.trace_id || '' },
        onclick: (ev) => {
          if (ev.target.closest('a')) return;
          if (expanded.has(key)) expanded.delete(key); else expanded.add(key);
          toggle();
        },
      },
      h('td', { class: 'num nowrap', title: l.time_unix_nano ? `${l.time_unix_nano} ns` : '' }, fmtTime(l.time_ms)),
      h('td', { class: 'nowrap' }, h('span', { class: 'swatch', style: { background: colorFor(l.service) } }), l.service || ''),
      h('td', null, h('span', { class: `sev ${sev.cls}` }, sev.name)),
      h('td', { class: 'log-body' }, highlight(bodyText(l.body), current().q)),
      h('td', { class: 'nowrap' }, l.trace_id
        ? h('a', { class: 'mono trace-link', href: hashFor('trace', l.span_id ? { span: l.span_id } : {}, l.trace_id), title: `open trace ${l.trace_id}` }, shortId(l.trace_id, 12))
        : h('span', { class: 'muted' }, '–')));
      const detail = h('tr', { class: 'log-detail' }, h('td', { colspan: '5' },
        h('div', { class: 'log-detail-grid' },
          h('div', null, h('h4', null, 'Body'), h('pre', { class: 'log-pre' }, bodyText(l.body))),
          h('div', null, h('h4', null, 'Attributes'), kvTable(l.attributes, 'no attributes')),
          h('div', null, h('h4', null, 'Resource'), kvTable(l.resource, 'no resource attributes'),
            h('h4', null, 'Scope'), kvTable(Object.fromEntries(Object.entries(l.scope || {}).filter(([, v]) => v)), 'none'),
            l.event_name ? h('div', { class: 'small muted' }, 'event ', h('span', { class: 'mono' }, l.event_name)) : null,
            l.span_id ? h('div', { class: 'small muted' }, 'span ', h('span', { class: 'mono' }, l.span_id)) : null))));
      const toggle = () => { detail.hidden = !expanded.has(key); row.classList.toggle('expanded', expanded.has(key)); };
      toggle();
      tbody.append(row, detail);
    });
    replace(body, h('table', { class: 'table logs-table' },
      h('thead', null, h('tr', null, h('th', null, 'Time'), h('th', null, 'Service'), h('th', null, 'Severity'), h('th', null, 'Body'), h('th', null, 'Trace'))),
      tbody));
  }

  loadServices();
  load();
  return {
    refresh: (why) => {
      if (why === 'range' && fixed) { fixed = null; submit(); return; }
      if (why !== 'auto' || !form.contains(document.activeElement)) load();
    },
    destroy: () => slot.abort(),
  };
}

function bodyText(b) {
  if (b === null || b === undefined) return '';
  return typeof b === 'string' ? b : JSON.stringify(b);
}

/** Text nodes with the (case-insensitive) matches of `needle` wrapped in <mark>; never parses HTML. */
function highlight(text, needle) {
  if (!needle) return text;
  const out = [];
  const lower = text.toLowerCase();
  const n = needle.toLowerCase();
  let at = 0;
  for (let i = lower.indexOf(n); i >= 0 && out.length < 200; i = lower.indexOf(n, i + n.length)) {
    if (i > at) out.push(text.slice(at, i));
    out.push(h('mark', null, text.slice(i, i + n.length)));
    at = i + n.length;
  }
  out.push(text.slice(at));
  return out;
}
