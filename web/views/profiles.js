// Profiles: a CPU (or off-CPU) flame graph of every process on the host, narrowed by service,
// process or thread, with search, zoom and a top-functions table.
import { h, replace, notice, errorNotice, loading, field, select } from '../dom.js';
import { get, isAbort, requestSlot } from '../api.js';
import { timeWindow, rangeLabel } from '../state.js';
import { hashFor } from '../route.js';
import { flameGraph, topTable, fmtNs, pct } from '../flame.js';

const KINDS = [['cpu', 'on-CPU'], ['off_cpu', 'off-CPU (blocked)']];
const COMPARE = [['', 'nothing'], ['previous', 'the period before']];

export default function mount(root, { params }, ctx) {
  const p = (k) => params.get(k) || '';
  const slot = requestSlot(ctx.signal);
  const inService = h('input', { class: 'input', name: 'service', value: p('service'), placeholder: 'any service or process name', autocomplete: 'off' });
  const inPid = h('input', { class: 'input input-narrow', name: 'pid', value: p('pid'), placeholder: 'any', inputmode: 'numeric' });
  const inKind = select({ class: 'input', name: 'kind' }, KINDS, p('kind') || 'cpu');
  const inCompare = select({ class: 'input', name: 'compare' }, COMPARE, p('compare'));
  const legend = h('div', { class: 'flame-legend muted' });
  const inSearch = h('input', { class: 'input input-wide', name: 'search', type: 'search', value: p('q'), placeholder: 'highlight functions (substring)' });
  const searchResult = h('span', { class: 'flame-search-result muted' });
  const summary = h('div', { class: 'results-summary' });
  const graphEl = h('div', { class: 'flame' }, loading('loading profile…'));
  const topEl = h('div', { class: 'panel-body' });
  const bottleneckEl = h('div', { class: 'panel-body' });
  const bottleneckSlot = requestSlot(ctx.signal);
  const trafficEl = h('div', { class: 'panel-body' });
  const trafficSlot = requestSlot(ctx.signal);
  const framesEl = h('div', { class: 'panel-body' }, h('div', { class: 'kv-empty' }, 'click a frame of the flame graph'));
  const framesSlot = requestSlot(ctx.signal);
  let graph = null;
  /** A high-traffic window whose diff against normal traffic is shown instead of the usual graph. */
  let windowDiff = null;

  const form = h('form', { class: 'filters', onsubmit: (ev) => { ev.preventDefault(); submit(); } },
    field('Service', inService),
    field('PID', inPid),
    field('Profile', inKind),
    field('Compare with', inCompare),
    h('div', { class: 'field field-actions' },
      h('button', { type: 'submit', class: 'btn btn-primary' }, 'Show'),
      h('button', { type: 'button', class: 'btn', onclick: () => { inService.value = ''; inPid.value = ''; inKind.value = 'cpu'; submit(); } }, 'Clear')));
  inKind.addEventListener('change', submit);
  inCompare.addEventListener('change', submit);
  inSearch.addEventListener('input', runSearch);

  replace(root,
    h('div', { class: 'page-head' }, h('h1', null, 'Profiles'),
      h('span', { class: 'panel-sub' }, 'continuous eBPF profiling of every process; click a frame to zoom')),
    h('section', { class: 'panel' }, form),
    h('section', { class: 'panel' },
      h('div', { class: 'panel-head' }, summary, h('div', { class: 'spacer' }),
        inSearch, searchResult,
        h('button', { type: 'button', class: 'btn', onclick: () => graph?.reset() }, 'Reset zoom')),
      h('div', { class: 'panel-body' }, legend, graphEl)),
    h('section', { class: 'panel frame-traces' },
      h('div', { class: 'panel-head' }, h('h2', null, 'Traces that ran this'),
        h('span', { class: 'panel-sub' }, 'spans whose thread (thread.id) or process (process.pid) was sampled in the selected function while they ran')),
      framesEl),
    h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Top functions')), topEl),
    h('section', { class: 'panel high-traffic' },
      h('div', { class: 'panel-head' }, h('h2', null, 'High traffic'),
        h('span', { class: 'panel-sub' }, 'windows in which a service\'s request rate rose above its baseline and its processes were sampled at the boosted rate')),
      trafficEl),
    h('section', { class: 'panel bottlenecks' },
      h('div', { class: 'panel-head' }, h('h2', null, 'Bottlenecks'),
        h('span', { class: 'panel-sub' }, 'largest self share, and growth against the period of the same length just before')),
      bottleneckEl));

  function current() {
    return { service: inService.value.trim(), pid: inPid.value.trim(), kind: inKind.value === 'cpu' ? '' : inKind.value, compare: inCompare.value };
  }

  function submit() {
    const hash = hashFor('profiles', current());
    if (hash !== location.hash) history.pushState(null, '', hash);
    load();
  }

  function runSearch() {
    if (!graph) return;
    const r = graph.search(inSearch.value);
    searchResult.textContent = inSearch.value.trim()
      ? `${r.matched} frame${r.matched === 1 ? '' : 's'} matched · ${(100 * r.share).toFixed(1)}% of samples`
      : '';
  }

  /** Highlights a function of a bottleneck list in the flame graph and lists the traces that ran it. */
  function highlight(fn) {
    inSearch.value = fn;
    runSearch();
    if (inKind.value !== 'off_cpu') loadFrameTraces(fn);
  }

  const share = (x) => `${(100 * x).toFixed(1)}%`;

  function findingRows(list, grew) {
    return list.map((b) => h('tr', null,
      h('td', { class: 'mono' }, h('a', { href: '#', title: 'highlight in the flame graph', onclick: (ev) => { ev.preventDefault(); highlight(b.function); } }, b.function)),
      h('td', { class: 'num' }, share(b.now.share)),
      h('td', { class: 'num' }, b.now.samples.toLocaleString()),
      h('td', { class: 'num' }, share(b.before.share)),
      h('td', { class: 'num' }, b.before.samples.toLocaleString()),
      grew ? h('td', { class: 'num' }, `+${(100 * b.change).toFixed(1)} pts (z ${b.z.toFixed(1)})`) : null));
  }

  function findingTable(title, list, grew, empty) {
    const head = ['Function', 'Share now', 'Samples', 'Share before', 'Samples before'];
    if (grew) head.push('Change');
    return h('div', { class: 'bottleneck-list' },
      h('h3', null, title),
      list.length
        ? h('table', { class: `table ${grew ? 'bottleneck-grew' : 'bottleneck-largest'}` },
          h('thead', null, h('tr', null, head.map((t, i) => h('th', i ? { class: 'num' } : null, t)))),
          h('tbody', null, findingRows(list, grew)))
        : h('div', { class: 'kv-empty' }, empty));
  }

  async function loadBottlenecks(q) {
    try {
      const res = await get('bottlenecks', { service: q.service, limit: 8, ...timeWindow() }, { signal: bottleneckSlot.next() });
      if (!res.services.length) {
        replace(bottleneckEl, h('div', { class: 'kv-empty' }, 'no profiled service in this range'));
        return;
      }
      const kindKey = q.kind === 'off_cpu' ? 'off_cpu' : 'cpu';
      const what = kindKey === 'off_cpu' ? 'off-CPU (blocked)' : 'on-CPU';
      replace(bottleneckEl, res.services.map((svc) => {
        const r = svc[kindKey];
        return h('div', { class: 'bottleneck-service', 'data-service': svc.service },
          h('h3', null, svc.service, h('span', { class: 'muted' }, ` · ${what} · ${r.total.samples.toLocaleString()} samples now, ${r.total_before.samples.toLocaleString()} before`)),
          h('div', { class: 'bottleneck-tables' },
            findingTable('Largest self share', r.largest, false, 'no samples'),
            findingTable('Grew most', r.grew, true, r.total_before.samples
              ? `no function's share grew beyond noise (z ≥ ${res.min_z}, ≥ ${res.min_samples} samples)`
              : 'no samples in the period before to compare with')));
      }));
    } catch (e) {
      if (isAbort(e)) return;
      replace(bottleneckEl, errorNotice(e));
    }
  }

  const rate = (x) => `${x.toFixed(x < 10 ? 1 : 0)}/s`;
  const clock = (ms) => new Date(ms).toLocaleTimeString();

  async function loadTraffic(q) {
    try {
      const res = await get('profiles/high_traffic', { service: q.service, ...timeWindow() }, { signal: trafficSlot.next() });
      if (!res.windows.length) {
        replace(trafficEl, h('div', { class: 'kv-empty' }, 'no high-traffic window in this range'));
        return;
      }
      replace(trafficEl, h('table', { class: 'table high-traffic-windows' },
        h('thead', null, h('tr', null, ['Service', 'From', 'To', 'Peak', 'Baseline', 'Samples', 'Grew most', ''].map((t, i) => h('th', i >= 3 && i <= 5 ? { class: 'num' } : null, t)))),
        h('tbody', null, res.windows.map((w) => h('tr', { 'data-service': w.service },
          h('td', null, w.service),
          h('td', null, clock(w.start_ms)),
          h('td', null, clock(w.end_ms)),
          h('td', { class: 'num' }, rate(w.peak_rate)),
          h('td', { class: 'num' }, rate(w.baseline_rate)),
          h('td', { class: 'num' }, w.samples.toLocaleString()),
          h('td', { class: 'mono' }, w.diff.grew[0] ? `${w.diff.grew[0].function} (+${(100 * w.diff.grew[0].change).toFixed(1)} pts)` : '—'),
          h('td', null, h('button', { type: 'button', class: 'btn btn-small open-window-diff', onclick: () => showWindow(w) }, 'Diff vs normal')))))));
    } catch (e) {
      if (isAbort(e)) return;
      replace(trafficEl, errorNotice(e));
    }
  }

  /** Shows a window's high-traffic samples against the normal traffic before it. */
  function showWindow(w) {
    windowDiff = w;
    load({ keepPanels: true });
    graphEl.scrollIntoView({ block: 'nearest' });
  }

  async function loadFrameTraces(fn) {
    const q = current();
    const range = windowDiff ? { start: windowDiff.start_ms, end: windowDiff.end_ms } : timeWindow();
    replace(framesEl, loading(`looking for traces that ran ${fn}…`));
    try {
      const res = await get('profiles/traces', { function: fn, service: windowDiff ? windowDiff.service : q.service, ...range }, { signal: framesSlot.next() });
      const head = h('div', { class: 'frame-traces-head muted' },
        h('span', { class: 'mono' }, fn), ` · ${res.samples.toLocaleString()} samples in ${res.processes} process${res.processes === 1 ? '' : 'es'}`);
      if (!res.traces.length) {
        replace(framesEl, head, h('div', { class: 'kv-empty' }, 'no stored span of these processes ran while they were sampled here (spans need process.pid, and thread.id for an exact match)'));
        return;
      }
      replace(framesEl, head, h('table', { class: 'table frame-traces-list' },
        h('thead', null, h('tr', null, ['Trace', 'Span', 'Service', 'Samples here', 'Match'].map((t, i) => h('th', i === 3 ? { class: 'num' } : null, t)))),
        h('tbody', null, res.traces.map((t) => h('tr', null,
          h('td', { class: 'mono' }, h('a', { href: `#/trace/${t.trace_id}` }, t.trace_id.slice(0, 16))),
          h('td', null, t.span_name),
          h('td', null, t.service),
          h('td', { class: 'num' }, t.samples.toLocaleString()),
          h('td', { title: t.match === 'thread' ? 'the span\'s thread was sampled here' : 'the span has no thread.id: any thread of its process' }, t.match))))));
    } catch (e) {
      if (isAbort(e)) return;
      replace(framesEl, errorNotice(e));
    }
  }

  async function load({ keepPanels = false, keepWindow = false } = {}) {
    const q = current();
    if (!keepPanels) {
      if (!keepWindow) windowDiff = null;
      loadBottlenecks(q);
      loadTraffic(q);
    }
    try {
      const { compare, ...filters } = q;
      const w = windowDiff;
      const params = w
        ? { service: w.service, kind: '', label: 'high_traffic', base_label: 'normal', start: w.start_ms, end: w.end_ms, base_start: w.normal.start_ms, base_end: w.normal.end_ms }
        : { ...filters, ...timeWindow() };
      const res = await get(w || compare ? 'profiles/diff' : 'profiles/flamegraph', params, { signal: slot.next() });
      replace(legend, w
        ? [`High traffic of ${w.service}, ${clock(w.start_ms)}–${clock(w.end_ms)}, against its normal traffic of the 10 minutes before (`,
          `${(res.base_samples || 0).toLocaleString()} samples`, '): ', h('span', { class: 'flame-legend-grew' }, 'red'), ' grew, ',
          h('span', { class: 'flame-legend-shrank' }, 'blue'), ' shrank']
        : compare
          ? [h('span', { class: 'flame-legend-grew' }, 'red'), ': larger share of samples than in the period before (',
            `${(res.base_samples || 0).toLocaleString()} samples`, '); ', h('span', { class: 'flame-legend-shrank' }, 'blue'), ': smaller']
          : []);
      graph?.destroy();
      graph = null;
      if (!res.samples) {
        replace(summary, `No samples · ${rangeLabel()}`);
        replace(graphEl, notice('info', 'no profile samples in this range',
          'oxeye profiles every process when it runs as root on a kernel with BTF (see `oxeye doctor`); narrow less or pick a longer range.'));
        replace(topEl);
        return;
      }
      const truncated = res.truncated_share > 0
        ? h('span', { class: 'tag', title: 'stacks that did not reach their thread start (no frame pointers): their callers are unknown' },
          `${(100 * res.truncated_share).toFixed(0)}% truncated`)
        : null;
      replace(summary, `${res.samples.toLocaleString()} sample${res.samples === 1 ? '' : 's'} · ${fmtNs(res.total)} ${res.kind === 'off_cpu' ? 'blocked' : 'on CPU'} · ${rangeLabel()} `, truncated);
      graph = flameGraph(graphEl, res.root, {
        diff: w || compare ? { total: res.total, baseTotal: res.base_total } : undefined,
        onFrame: (node) => {
          if (node.name === 'all' || node.name === '[truncated]') return;
          searchResult.textContent = `${node.name}: ${pct(node.value, res.root.value)} of samples`;
          if (res.kind !== 'off_cpu') loadFrameTraces(node.name);
        },
      });
      runSearch();
      replace(topEl, topTable(res.root, 30));
    } catch (e) {
      if (isAbort(e)) return;
      replace(graphEl, errorNotice(e));
    }
  }

  load();
  // Auto-refresh reloads what is shown, a high-traffic window's diff included.
  return { refresh: () => load({ keepWindow: true }), destroy: () => graph?.destroy() };
}
