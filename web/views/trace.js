// Trace waterfall: the span tree with bars on a shared time axis, and a detail panel per span.
import { h, replace, notice, errorNotice, loading, kvTable } from '../dom.js';
import { get, isAbort } from '../api.js';
import { hashFor } from '../route.js';
import { lastSearchHash } from '../state.js';
import { fmtDurationMs, fmtTime, colorFor, shortId } from '../format.js';
import { flameGraph } from '../flame.js';

const isError = (s) => /ERROR$/i.test(String(s.status_code ?? '')) || s.status_code === 2;
const kindName = (k) => String(k ?? '').replace(/^SPAN_KIND_/, '').toLowerCase() || 'unspecified';
const statusName = (c) => String(c ?? '').replace(/^STATUS_CODE_/, '').toLowerCase() || 'unset';

function bigOr(str, fallback) {
  try {
    if (str !== undefined && str !== null && str !== '') return BigInt(str);
  } catch { /* fall through */ }
  return fallback;
}

/** Adds .startNs (BigInt), .durNs (Number) to each span and returns trace bounds. */
function normalize(spans) {
  let min = null, max = null;
  for (const s of spans) {
    s.startNs = bigOr(s.start_time_unix_nano, BigInt(Math.round(Number(s.start_ms || 0) * 1e6)));
    let end = bigOr(s.end_time_unix_nano, null);
    if (end === null) {
      const dns = s.duration_ns !== undefined ? Number(s.duration_ns) : Number(s.duration_ms || 0) * 1e6;
      end = s.startNs + BigInt(Math.round(dns));
    }
    if (end < s.startNs) end = s.startNs;
    s.endNs = end;
    s.durNs = Number(end - s.startNs);
    if (min === null || s.startNs < min) min = s.startNs;
    if (max === null || end > max) max = end;
  }
  return { startNs: min ?? 0n, totalNs: Math.max(1, Number((max ?? 0n) - (min ?? 0n))) };
}

/** Depth-first rows [{span, depth, hasChildren}] ordered by start; orphans become roots. */
function buildTree(spans) {
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    const p = s.parent_span_id;
    if (p && byId.has(p) && p !== s.span_id) {
      if (!children.has(p)) children.set(p, []);
      children.get(p).push(s);
    } else {
      roots.push(s);
    }
  }
  const byStart = (a, b) => (a.startNs < b.startNs ? -1 : a.startNs > b.startNs ? 1 : 0);
  roots.sort(byStart);
  for (const list of children.values()) list.sort(byStart);
  const rows = [];
  const seen = new Set();
  const stack = roots.map((s) => [s, 0]).reverse();
  while (stack.length) {
    const [s, depth] = stack.pop();
    if (seen.has(s.span_id)) continue; // guards against cycles in bad data
    seen.add(s.span_id);
    const kids = children.get(s.span_id) || [];
    rows.push({ span: s, depth, hasChildren: kids.length > 0, orphan: depth === 0 && !!s.parent_span_id });
    for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
  }
  return rows;
}

function niceStep(totalMs, target = 5) {
  const raw = totalMs / target;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

export default function mount(root, { arg, params }, ctx) {
  const traceId = arg;
  let selected = params.get('span') || null;
  const collapsed = new Set();
  let data = null;

  replace(root, loading(`loading trace ${traceId}…`));
  if (!traceId) {
    replace(root, notice('error', 'no trace id', 'open a trace from the trace search'));
    return {};
  }

  async function load() {
    try {
      const res = await get(`traces/${encodeURIComponent(traceId)}`, {}, { signal: ctx.signal });
      const spans = res.spans || [];
      if (!spans.length) {
        replace(root, notice('empty', `trace ${traceId} has no spans`));
        return;
      }
      const bounds = normalize(spans);
      data = { spans, ...bounds, rows: buildTree(spans), byId: new Map(spans.map((s) => [s.span_id, s])) };
      if (selected && !data.byId.has(selected)) selected = null;
      renderAll();
    } catch (e) {
      if (isAbort(e)) return;
      if (e.status === 404) {
        replace(root, notice('empty', `trace ${traceId} not found`, `${e.message} — it may be outside retention, or its spans have not arrived yet`),
          h('p', null, h('a', { href: '#/traces' }, '← back to trace search')));
      } else {
        replace(root, errorNotice(e));
      }
    }
  }

  let waterfallEl, detailEl;

  function renderAll() {
    const { spans, totalNs, startNs } = data;
    const rootRow = data.rows[0].span;
    const services = [...new Set(spans.map((s) => s.service))];
    const errors = spans.filter(isError).length;
    const startMs = Number(startNs / 1000000n);
    const endMs = startMs + totalNs / 1e6;
    const logsHref = hashFor('logs', { trace_id: traceId, start: Math.floor(startMs - 60_000), end: Math.ceil(endMs + 60_000) });

    const header = h('div', { class: 'trace-head' },
      h('div', { class: 'trace-title' },
        h('span', { class: 'swatch lg', style: { background: colorFor(rootRow.service) } }),
        h('h1', null, h('span', { class: 'muted' }, `${rootRow.service}: `), rootRow.name),
        errors ? h('span', { class: 'err-badge' }, `${errors} error${errors === 1 ? '' : 's'}`) : null),
      h('div', { class: 'trace-meta' },
        meta('Trace ID', h('span', { class: 'mono', id: 'trace-id' }, traceId)),
        meta('Start', fmtTime(startMs)),
        meta('Duration', fmtDurationMs(totalNs / 1e6)),
        meta('Spans', String(spans.length)),
        meta('Services', String(services.length)),
        h('div', { class: 'spacer' }),
        h('a', { class: 'btn', href: logsHref, id: 'trace-logs-link' }, 'Logs for this trace'),
        h('a', { class: 'btn', href: lastSearchHash() }, 'Back to search')),
      h('div', { class: 'chips legend' }, services.map((s) => h('span', { class: 'chip', style: { '--c': colorFor(s) } }, s))));

    waterfallEl = h('div', { class: 'waterfall', role: 'tree', onkeydown: onKey });
    detailEl = h('aside', { class: 'span-detail', 'aria-label': 'span detail' });
    replace(root, header, h('div', { class: 'trace-body' }, h('section', { class: 'panel waterfall-panel' }, waterfallEl), detailEl));
    renderWaterfall();
    renderDetail();
  }

  function meta(label, value) {
    return h('div', { class: 'meta' }, h('span', { class: 'meta-label' }, label), h('span', { class: 'meta-value' }, value));
  }

  function renderWaterfall() {
    const { totalNs, startNs } = data;
    const totalMs = totalNs / 1e6;
    const step = niceStep(totalMs);
    const ticks = [];
    for (let t = 0; t <= totalMs + 1e-9 && ticks.length < 12; t += step) ticks.push(t);

    const ruler = h('div', { class: 'wf-row wf-ruler' },
      h('div', { class: 'wf-label' }, h('span', { class: 'muted' }, 'Service & operation'),
        h('span', { class: 'wf-tools' },
          h('button', { type: 'button', class: 'link-btn', onclick: () => { collapsed.clear(); renderWaterfall(); } }, 'expand all'),
          h('button', { type: 'button', class: 'link-btn', onclick: () => { data.rows.forEach((r) => r.hasChildren && r.depth >= 1 && collapsed.add(r.span.span_id)); renderWaterfall(); } }, 'collapse'))),
      h('div', { class: 'wf-timeline' }, ticks.map((t) =>
        h('span', { class: 'wf-tick', style: { left: `${(t / totalMs) * 100}%` } }, fmtDurationMs(t)))));

    const rows = [];
    let hideBelow = null; // depth under which rows are hidden (collapsed ancestor)
    for (const row of data.rows) {
      const s = row.span;
      if (hideBelow !== null) {
        if (row.depth > hideBelow) continue;
        hideBelow = null;
      }
      const isCollapsed = collapsed.has(s.span_id);
      if (isCollapsed) hideBelow = row.depth;
      const offNs = Number(s.startNs - startNs);
      const left = (offNs / totalNs) * 100;
      const width = Math.max((s.durNs / totalNs) * 100, 0.15);
      const err = isError(s);
      const color = colorFor(s.service);
      const durText = fmtDurationMs(s.durNs / 1e6);
      // Duration label: right of the bar, else inside it when wide enough, else left of it.
      const place = left + width < 82 ? 'right' : width > 14 ? 'inside' : 'left';

      const events = (s.events || []).map((ev) => {
        const t = bigOr(ev.time_unix_nano, null);
        if (t === null) return null;
        const pos = (Number(t - startNs) / totalNs) * 100;
        return h('span', { class: 'wf-event', style: { left: `${Math.min(100, Math.max(0, pos))}%` }, title: `event: ${ev.name}` });
      });

      rows.push(h('div', {
        class: `wf-row wf-span ${err ? 'is-error' : ''} ${selected === s.span_id ? 'selected' : ''}`,
        role: 'treeitem', tabindex: '0', 'aria-selected': String(selected === s.span_id),
        dataset: { spanId: s.span_id, service: s.service },
        onclick: () => select(s.span_id),
        onkeydown: (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); select(s.span_id); } },
      },
      h('div', { class: 'wf-label', style: { paddingLeft: `${6 + row.depth * 14}px` }, title: `${s.service}: ${s.name}` },
        row.hasChildren
          ? h('button', {
            type: 'button', class: 'wf-toggle', 'aria-label': isCollapsed ? 'expand' : 'collapse',
            onclick: (ev) => { ev.stopPropagation(); if (isCollapsed) collapsed.delete(s.span_id); else collapsed.add(s.span_id); renderWaterfall(); },
          }, isCollapsed ? '▸' : '▾')
          : h('span', { class: 'wf-toggle-pad' }),
        h('span', { class: 'wf-color', style: { background: color } }),
        err ? h('span', { class: 'wf-err-icon', title: `error: ${s.status_message || 'status ERROR'}` }, '!') : null,
        h('span', { class: 'wf-service' }, s.service),
        h('span', { class: 'wf-name' }, s.name),
        row.orphan ? h('span', { class: 'tag', title: `parent ${s.parent_span_id} is not in this trace` }, 'orphan') : null,
        isCollapsed ? h('span', { class: 'tag' }, 'collapsed') : null),
      h('div', { class: 'wf-timeline' },
        ticks.map((t) => h('span', { class: 'wf-grid', style: { left: `${(t / totalMs) * 100}%` } })),
        h('span', { class: 'wf-bar', style: { left: `${left}%`, width: `${width}%`, background: err ? undefined : color } }),
        events,
        h('span', {
          class: `wf-dur ${place}`,
          style: place === 'right' ? { left: `calc(${left + width}% + 4px)` }
            : place === 'inside' ? { right: `calc(${100 - left - width}% + 6px)` }
              : { right: `calc(${100 - left}% + 4px)` },
        }, durText))));
    }
    replace(waterfallEl, ruler, rows);
  }

  // Arrow keys move the selection through the visible rows.
  function onKey(ev) {
    if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp' && ev.key !== 'Escape') return;
    ev.preventDefault();
    if (ev.key === 'Escape') { if (selected) select(selected); return; }
    const rows = [...waterfallEl.querySelectorAll('.wf-span')];
    const i = rows.findIndex((r) => r.dataset.spanId === selected);
    const next = rows[ev.key === 'ArrowDown' ? Math.min(rows.length - 1, i + 1) : Math.max(0, i - 1)];
    if (next && next.dataset.spanId !== selected) {
      select(next.dataset.spanId);
      next.focus();
    }
  }

  function select(spanId) {
    selected = selected === spanId ? null : spanId;
    history.replaceState(null, '', hashFor('trace', selected ? { span: selected } : {}, traceId));
    for (const el of waterfallEl.querySelectorAll('.wf-span')) {
      const on = el.dataset.spanId === selected;
      el.classList.toggle('selected', on);
      el.setAttribute('aria-selected', String(on));
    }
    renderDetail();
  }

  function renderDetail() {
    const s = selected && data.byId.get(selected);
    detailEl.classList.toggle('open', !!s);
    if (!s) {
      replace(detailEl, h('div', { class: 'detail-empty' }, 'Select a span to see its attributes, events, links and resource.'));
      return;
    }
    const offMs = Number(s.startNs - data.startNs) / 1e6;
    const err = isError(s);
    const parent = s.parent_span_id && data.byId.get(s.parent_span_id);

    const section = (title, count, content) => h('details', { class: 'detail-section', open: true },
      h('summary', null, title, count !== null ? h('span', { class: 'count' }, String(count)) : null), content);

    const events = (s.events || []).map((ev) => {
      const t = bigOr(ev.time_unix_nano, null);
      const rel = t === null ? null : Number(t - s.startNs) / 1e6;
      return h('div', { class: 'event' },
        h('div', { class: 'event-head' },
          h('span', { class: 'mono muted' }, rel === null ? '?' : `+${fmtDurationMs(rel)}`),
          h('span', { class: 'event-name' }, ev.name || '(unnamed)')),
        kvTable(ev.attributes, 'no attributes'));
    });

    const links = (s.links || []).map((l) => h('div', { class: 'link-item' },
      h('div', null,
        h('span', { class: 'meta-label' }, 'trace '),
        h('a', { class: 'mono', href: hashFor('trace', l.span_id ? { span: l.span_id } : {}, l.trace_id) }, l.trace_id),
        l.trace_id === traceId ? h('span', { class: 'tag' }, 'this trace') : null),
      h('div', null, h('span', { class: 'meta-label' }, 'span '), h('span', { class: 'mono' }, l.span_id || '–')),
      l.trace_state ? h('div', null, h('span', { class: 'meta-label' }, 'trace state '), h('span', { class: 'mono' }, l.trace_state)) : null,
      kvTable(l.attributes, 'no attributes')));

    const summaryRows = [
      ['Service', h('span', null, h('span', { class: 'swatch', style: { background: colorFor(s.service) } }), s.service)],
      ['Kind', kindName(s.kind)],
      ['Status', h('span', { class: err ? 'bad' : '' }, statusName(s.status_code), s.status_message ? ` — ${s.status_message}` : '')],
      ['Duration', fmtDurationMs(s.durNs / 1e6)],
      ['Start', `+${fmtDurationMs(offMs)} (${fmtTime(Number(s.startNs / 1000000n))})`],
      ['Span ID', h('span', { class: 'mono' }, s.span_id)],
      ['Parent', s.parent_span_id
        ? h('a', { href: '#', class: 'mono', onclick: (ev) => { ev.preventDefault(); if (parent) select(parent.span_id); } },
          s.parent_span_id, parent ? ` (${parent.name})` : ' (not in trace)')
        : h('span', { class: 'muted' }, 'root span')],
    ];
    if (s.trace_state) summaryRows.push(['Trace state', h('span', { class: 'mono' }, s.trace_state)]);

    replace(detailEl,
      h('div', { class: 'detail-head' },
        h('div', { class: 'detail-title' },
          err ? h('span', { class: 'wf-err-icon' }, '!') : null,
          h('span', null, s.name)),
        h('button', { type: 'button', class: 'icon-btn', 'aria-label': 'close', title: 'close', onclick: () => select(s.span_id) }, '×')),
      h('table', { class: 'kv kv-summary' }, h('tbody', null, summaryRows.map(([k, v]) => h('tr', null, h('th', null, k), h('td', null, v))))),
      section('Attributes', Object.keys(s.attributes || {}).length, kvTable(s.attributes, 'no attributes')),
      section('Events', (s.events || []).length, events.length ? events : h('div', { class: 'kv-empty' }, 'no events')),
      section('Links', (s.links || []).length, links.length ? links : h('div', { class: 'kv-empty' }, 'no links')),
      section('Resource', Object.keys(s.resource || {}).length, kvTable(s.resource, 'no resource attributes')),
      section('Scope', null, kvTable(Object.fromEntries(Object.entries(s.scope || {}).filter(([, v]) => v !== '' && v !== null && v !== undefined)), 'no instrumentation scope')),
      section('CPU while it ran', null, spanProfile(s, 'cpu')),
      section('Blocked while it ran (off-CPU)', null, spanProfile(s, 'off_cpu')));
  }

  /**
   * The samples the span's thread took while the span ran (kind cpu), or the time it spent
   * blocked and where (kind off_cpu), as a flame graph.
   */
  function spanProfile(s, kind) {
    const off = kind === 'off_cpu';
    const el = h('div', { class: `span-profile span-profile-${off ? 'off-cpu' : 'cpu'}` }, loading('loading samples…'));
    get(`traces/${encodeURIComponent(traceId)}/spans/${encodeURIComponent(s.span_id)}/profile`, { kind }, { signal: ctx.signal })
      .then((res) => {
        const fg = res.flamegraph;
        const who = res.match === 'thread' ? 'thread' : 'process';
        if (!fg.samples) {
          replace(el, h('div', { class: 'kv-empty' }, res.match === 'none' ? res.note
            : off
              ? `no off-CPU time: the ${who} did not block for 1 ms or more while the span ran (or was not followed: off-CPU profiling follows processes from their first span batch on)`
              : `no CPU samples: the ${who} was not on a CPU while the span ran (or was not profiled)`));
          return;
        }
        const graphEl = h('div', { class: 'flame' });
        const count = `${fg.samples} ${off ? 'block' : 'sample'}${fg.samples === 1 ? '' : 's'}`;
        const what = `${count} · ${fmtDurationMs(fg.total / 1e6)} ${off ? 'blocked' : 'on CPU'}`;
        replace(el, h('div', { class: 'muted span-profile-note' }, `${what} · ${res.note}`), graphEl);
        flameGraph(graphEl, fg.root);
      })
      .catch((e) => { if (!isAbort(e)) replace(el, errorNotice(e)); });
    return el;
  }

  load();
  return {};
}
