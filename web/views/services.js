// Services: RED metrics (rate, errors, duration percentiles) per service over the time range.
import { h, replace, notice, errorNotice, loading } from '../dom.js';
import { get, isAbort, requestSlot } from '../api.js';
import { timeWindow, rangeLabel } from '../state.js';
import { hashFor } from '../route.js';
import { fmtRate, fmtPercent, fmtDurationMs, fmtCount, colorFor } from '../format.js';

export const EMPTY_HINT = 'no spans yet — point an OTLP exporter at 127.0.0.1:4317 (gRPC) or 127.0.0.1:4318 (HTTP)';

const COLUMNS = [
  // key, label, align, format
  ['service', 'Service', 'left'],
  ['rate', 'Rate', 'right', fmtRate],
  ['error_rate', 'Error rate', 'right'],
  ['errors', 'Errors', 'right', fmtCount],
  ['spans', 'Requests', 'right', fmtCount],
  ['p50_ms', 'P50', 'right', fmtDurationMs],
  ['p95_ms', 'P95', 'right', fmtDurationMs],
  ['p99_ms', 'P99', 'right', fmtDurationMs],
];

export default function mount(root, { params }, ctx) {
  let sort = { key: params.get('sort') || 'service', desc: params.get('desc') === '1' };
  let filter = '';
  let data = null;
  let alertsBy = new Map(); // service → {count, severity (the highest)}
  const slot = requestSlot(ctx.signal);

  const body = h('div', { class: 'panel-body' }, loading('loading services…'));
  const filterInput = h('input', {
    type: 'search', class: 'input input-sm', placeholder: 'filter services', 'aria-label': 'filter services',
    oninput: () => { filter = filterInput.value.trim().toLowerCase(); render(); },
  });
  const subtitle = h('span', { class: 'panel-sub' });
  replace(root,
    h('div', { class: 'page-head' },
      h('h1', null, 'Services'),
      subtitle,
      h('div', { class: 'spacer' }),
      filterInput),
    h('section', { class: 'panel' }, body));

  async function load() {
    subtitle.textContent = `RED metrics of entry spans, ${rangeLabel()}`;
    try {
      const win = timeWindow();
      const signal = slot.next();
      const [res, alerts] = await Promise.all([
        get('services', win, { signal }),
        get('security/alerts', { ...win, limit: 5000 }, { signal }).catch((e) => {
          if (isAbort(e)) throw e;
          return { alerts: [] };
        }),
      ]);
      data = res.services || [];
      alertsBy = new Map();
      const rank = ['info', 'low', 'medium', 'high', 'critical'];
      for (const a of alerts.alerts || []) {
        const s = alertsBy.get(a.service) || { count: 0, severity: 'info' };
        s.count += Number(a.count) || 1;
        if (rank.indexOf(a.severity) > rank.indexOf(s.severity)) s.severity = a.severity;
        alertsBy.set(a.service, s);
      }
      render();
    } catch (e) {
      if (isAbort(e)) return;
      replace(body, errorNotice(e));
    }
  }

  function render() {
    subtitle.textContent = `RED metrics of entry spans, ${rangeLabel()}`;
    if (!data.length) {
      replace(body, notice('empty', 'no services in this time range', EMPTY_HINT));
      return;
    }
    const rows = data
      .filter((s) => !filter || String(s.service).toLowerCase().includes(filter))
      .sort((a, b) => {
        const x = a[sort.key], y = b[sort.key];
        const c = typeof x === 'string' || typeof y === 'string'
          ? String(x ?? '').localeCompare(String(y ?? ''))
          : (Number(x) || 0) - (Number(y) || 0);
        return sort.desc ? -c : c;
      });
    const maxRate = Math.max(...data.map((s) => Number(s.rate) || 0), 1e-9);

    const head = h('tr', null, COLUMNS.map(([key, label, align]) => {
      const active = sort.key === key;
      return h('th', {
        class: `sortable ${align} ${active ? 'sorted' : ''}`,
        'aria-sort': active ? (sort.desc ? 'descending' : 'ascending') : 'none',
        onclick: () => {
          sort = { key, desc: active ? !sort.desc : key !== 'service' };
          render();
        },
      }, label, h('span', { class: 'sort-arrow' }, active ? (sort.desc ? '▼' : '▲') : ''));
    }), h('th', { class: 'right' }, ''));

    const tbody = h('tbody', null, rows.map((s) => {
      const err = Number(s.error_rate) || 0;
      return h('tr', {
        class: 'clickable', dataset: { service: s.service },
        onclick: (ev) => {
          if (ev.target.closest('a')) return;
          ctx.navigate(hashFor('traces', { service: s.service }));
        },
      },
      h('td', null,
        h('span', { class: 'swatch', style: { background: colorFor(s.service) } }),
        h('a', { class: 'service-link', href: hashFor('traces', { service: s.service }) }, s.service)),
      h('td', { class: 'right num' },
        h('span', { class: 'inline-bar' }, h('span', { style: { width: `${Math.max(2, (Number(s.rate) || 0) / maxRate * 100)}%` } })),
        fmtRate(s.rate)),
      h('td', { class: `right num ${err >= 0.05 ? 'bad' : err > 0 ? 'warn' : ''}` }, fmtPercent(s.error_rate)),
      h('td', { class: `right num ${Number(s.errors) > 0 ? 'bad' : 'muted'}` }, fmtCount(s.errors)),
      h('td', { class: 'right num' }, fmtCount(s.spans)),
      h('td', { class: 'right num' }, fmtDurationMs(s.p50_ms)),
      h('td', { class: 'right num' }, fmtDurationMs(s.p95_ms)),
      h('td', { class: 'right num' }, fmtDurationMs(s.p99_ms)),
      h('td', { class: 'right actions' },
        h('a', { href: hashFor('traces', { service: s.service, status: 'error' }), title: 'error traces' }, 'errors'),
        h('a', { href: hashFor('logs', { service: s.service }), title: 'logs of this service' }, 'logs'),
        h('a', { href: hashFor('security', { tab: 'events', service: s.service }), title: 'security events of this service' }, 'security'),
        h('a', { href: hashFor('anomalies', { service: s.service }), title: 'anomalies on this service\'s rate, errors, latency and metrics' }, 'anomalies'),
        alertsBy.has(s.service)
          ? h('a', { class: `sev sec-sev sec-sev-${alertsBy.get(s.service).severity} service-alerts`, href: hashFor('security', { service: s.service }), title: 'security alerts of this service' },
            `${fmtCount(alertsBy.get(s.service).count)} alert${alertsBy.get(s.service).count === 1 ? '' : 's'}`)
          : null));
    }));

    const table = h('table', { class: 'table services-table' }, h('thead', null, head), tbody);
    replace(body, rows.length ? table : notice('empty', 'no service matches the filter'));
  }

  load();
  return { refresh: load, destroy: () => slot.abort() };
}
