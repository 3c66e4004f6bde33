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
  let graph = null;

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
    h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Top functions')), topEl),
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

  /** Highlights a function of a bottleneck list in the flame graph. */
  function highlight(fn) {
    inSearch.value = fn;
    runSearch();
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

  async function load() {
    const q = current();
    loadBottlenecks(q);
    try {
      const { compare, ...filters } = q;
      const res = await get(compare ? 'profiles/diff' : 'profiles/flamegraph', { ...filters, ...timeWindow() }, { signal: slot.next() });
      replace(legend, compare
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
      replace(summary, `${res.samples.toLocaleString()} samples · ${fmtNs(res.total)} ${res.kind === 'off_cpu' ? 'blocked' : 'on CPU'} · ${rangeLabel()} `, truncated);
      graph = flameGraph(graphEl, res.root, {
        diff: compare ? { total: res.total, baseTotal: res.base_total } : undefined,
        onFrame: (node) => { if (node.name !== 'all') searchResult.textContent = `${node.name}: ${pct(node.value, res.root.value)} of samples`; },
      });
      runSearch();
      replace(topEl, topTable(res.root, 30));
    } catch (e) {
      if (isAbort(e)) return;
      replace(graphEl, errorNotice(e));
    }
  }

  load();
  return { refresh: load, destroy: () => graph?.destroy() };
}
