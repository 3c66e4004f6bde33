// Security: alerts (severity, filters, a timeline), the event explorer, one alert with its
// service's RED metrics and busiest functions around it, and the learned baselines per executable.
import { h, replace, notice, errorNotice, loading, field, select, kvTable } from '../dom.js';
import { get, isAbort, requestSlot, ApiError } from '../api.js';
import { timeWindow, rangeLabel } from '../state.js';
import { hashFor } from '../route.js';
import { fmtTime, fmtCount, fmtRate, fmtPercent, fmtDurationMs } from '../format.js';
import uPlot from '../vendor/uplot/uPlot.esm.js';

export const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'];
const SEVERITY_COLORS = { info: '#6b7280', low: '#3f5f8f', medium: '#b7791f', high: '#d9480f', critical: '#b42323' };
const KINDS = ['exec', 'exit', 'connect', 'accept', 'file_open', 'privilege_change', 'ptrace', 'module_load'];
const TABS = [['alerts', 'Alerts'], ['events', 'Events'], ['baselines', 'Baselines']];
const STATUSES = ['open', 'acknowledged', 'resolved'];
const TOKEN_KEY = 'oxeye.apiToken';

const sevBadge = (s) => h('span', { class: `sev sec-sev sec-sev-${s}`, dataset: { severity: s } }, s);

export default function mount(root, { arg, params }, ctx) {
  if (arg) return mountAlert(root, arg, ctx);
  const p = (k) => params.get(k) || '';
  const tab = TABS.some(([t]) => t === p('tab')) ? p('tab') : 'alerts';
  const slot = requestSlot(ctx.signal);
  let chart = null;
  let lastAction = '';

  const tabs = h('div', { class: 'sec-tabs', role: 'tablist' }, TABS.map(([t, label]) =>
    h('a', { href: hashFor('security', { tab: t, service: p('service') }), class: `sec-tab ${t === tab ? 'active' : ''}`, role: 'tab', dataset: { tab: t } }, label)));
  const body = h('div', { class: 'panel-body' }, loading());
  const summary = h('div', { class: 'results-summary' });
  let form = null;
  let current = () => ({});

  if (tab === 'alerts') {
    const inSeverity = select({ class: 'input', name: 'severity' }, [['', 'any'], ...SEVERITIES.map((s) => [s, `≥ ${s}`])], p('severity'));
    const inService = h('input', { class: 'input', name: 'service', value: p('service'), placeholder: 'any service' });
    const inKind = h('input', { class: 'input', name: 'kind', value: p('kind'), placeholder: 'rule id or anomaly' });
    const inSource = select({ class: 'input', name: 'source' }, [['', 'rules and anomalies'], ['rule', 'rules'], ['anomaly', 'anomalies']], p('source'));
    const inStatus = select({ class: 'input', name: 'status' }, [['', 'any status'], ...STATUSES], p('status'));
    current = () => ({ severity: inSeverity.value, service: inService.value.trim(), kind: inKind.value.trim(), source: inSource.value, status: inStatus.value });
    form = filterForm([field('Min severity', inSeverity), field('Service', inService), field('Kind', inKind), field('Source', inSource), field('Status', inStatus)], 'Show alerts');
    for (const i of [inSeverity, inSource, inStatus]) i.addEventListener('change', () => submit());
  } else if (tab === 'events') {
    const inKind = select({ class: 'input', name: 'kind' }, [['', 'any kind'], ...KINDS], p('kind'));
    const inService = h('input', { class: 'input', name: 'service', value: p('service'), placeholder: 'any service' });
    const inPid = h('input', { class: 'input input-sm', name: 'pid', value: p('pid'), placeholder: 'pid', inputmode: 'numeric' });
    const inExe = h('input', { class: 'input', name: 'exe', value: p('exe'), placeholder: '/usr/bin/…' });
    const inText = h('input', { class: 'input input-wide', name: 'q', type: 'search', value: p('q'), placeholder: 'path, executable, arguments, address' });
    current = () => ({ kind: inKind.value, service: inService.value.trim(), pid: inPid.value.trim(), exe: inExe.value.trim(), q: inText.value.trim() });
    form = filterForm([field('Kind', inKind), field('Service', inService), field('Pid', inPid), field('Executable', inExe), field('Search', inText, 'grow')], 'Search events');
    inKind.addEventListener('change', () => submit());
  }

  function filterForm(fields, label) {
    return h('form', { class: 'filters', onsubmit: (ev) => { ev.preventDefault(); submit(); } },
      fields,
      h('div', { class: 'field field-actions' }, h('button', { type: 'submit', class: 'btn btn-primary' }, label)));
  }

  function submit() {
    const hash = hashFor('security', { tab, ...current() });
    if (hash !== location.hash) history.pushState(null, '', hash);
    load();
  }

  const timeline = h('div', { class: 'chart-wrap sec-timeline' });
  replace(root,
    h('div', { class: 'page-head' }, h('h1', null, 'Security'), tabs),
    form ? h('section', { class: 'panel' }, form) : null,
    tab === 'alerts' ? h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('span', null, 'Alerts over time')), timeline) : null,
    h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, summary), body));

  async function load() {
    try {
      if (tab === 'alerts') {
        const win = timeWindow();
        const res = await get('security/alerts', { ...current(), ...win }, { signal: slot.next() });
        renderAlerts(res.alerts || [], win);
      } else if (tab === 'events') {
        const res = await get('security/events', { ...current(), ...timeWindow() }, { signal: slot.next() });
        renderEvents(res.events || []);
      } else {
        const res = await get('security/baselines', {}, { signal: slot.next() });
        renderBaselines(res.baselines || []);
      }
    } catch (e) {
      if (isAbort(e)) return;
      summary.textContent = 'request failed';
      replace(body, errorNotice(e));
    }
  }

  function renderAlerts(alerts, win) {
    summary.textContent = `${fmtCount(alerts.length)} alert${alerts.length === 1 ? '' : 's'} · ${rangeLabel()}`;
    drawTimeline(alerts, win);
    if (!alerts.length) {
      replace(body, notice('empty', `no alerts in the ${rangeLabel()}`, 'alerts appear when a rule matches or a learned baseline is departed from (oxeye up as root)'));
      return;
    }
    replace(body, h('table', { class: 'table sec-alerts' },
      h('thead', null, h('tr', null, ['Time', 'Severity', 'Kind', 'Service', 'Process', 'Summary', 'Count', 'Status', ''].map((c) => h('th', null, c)))),
      h('tbody', null, alerts.map((a) => h('tr', {
        class: `clickable sec-row-${a.severity} sec-status-${a.status}`, dataset: { alertId: a.id, severity: a.severity, status: a.status },
        onclick: () => ctx.navigate(hashFor('security', {}, a.id)),
      },
      h('td', { class: 'nowrap' }, fmtTime(a.time_ms)),
      h('td', null, sevBadge(a.severity)),
      h('td', null, h('span', { class: 'mono' }, a.kind), h('span', { class: 'muted' }, ` ${a.source}`)),
      h('td', null, a.service ? h('a', { href: hashFor('security', { tab: 'events', service: a.service }), onclick: (ev) => ev.stopPropagation() }, a.service) : ''),
      h('td', { class: 'mono' }, `${a.exe || a.comm} (${a.pid})`),
      h('td', { class: 'sec-summary' }, h('a', { href: hashFor('security', {}, a.id), onclick: (ev) => ev.stopPropagation() }, a.summary)),
      h('td', { class: 'right num' }, fmtCount(a.count)),
      h('td', { class: 'sec-status' }, a.status),
      h('td', { class: 'right actions nowrap', onclick: (ev) => ev.stopPropagation() }, alertActions(a, load)))))));
  }

  function drawTimeline(alerts, win) {
    chart?.destroy();
    chart = null;
    replace(timeline);
    const buckets = 60;
    const step = (win.end - win.start) / buckets;
    const xs = Array.from({ length: buckets }, (_, i) => (win.start + i * step) / 1000);
    const bySeverity = SEVERITIES.map(() => new Array(buckets).fill(0));
    for (const a of alerts) {
      const b = Math.min(buckets - 1, Math.max(0, Math.floor((a.time_ms - win.start) / step)));
      const s = SEVERITIES.indexOf(a.severity);
      if (s >= 0) bySeverity[s][b] += Number(a.count) || 1;
    }
    const opts = {
      width: Math.max(300, timeline.clientWidth || 800), height: 140,
      series: [{}, ...SEVERITIES.map((s) => ({ label: s, stroke: SEVERITY_COLORS[s], fill: `${SEVERITY_COLORS[s]}33`, paths: uPlot.paths?.bars?.({ size: [0.8, 40] }) }))],
      axes: [{}, { size: 40 }],
      legend: { show: true },
    };
    chart = new uPlot(opts, [xs, ...bySeverity], timeline);
  }

  function renderEvents(events) {
    summary.textContent = `${fmtCount(events.length)} event${events.length === 1 ? '' : 's'} · newest first · ${rangeLabel()}`;
    if (!events.length) {
      replace(body, notice('empty', `no security events match in the ${rangeLabel()}`));
      return;
    }
    const expanded = new Set();
    const rows = h('tbody');
    const draw = () => replace(rows, events.flatMap((e, i) => {
      const row = h('tr', { class: 'clickable', dataset: { kind: e.kind, pid: String(e.pid) }, onclick: () => { expanded.has(i) ? expanded.delete(i) : expanded.add(i); draw(); } },
        h('td', { class: 'nowrap' }, fmtTime(e.time_ms)),
        h('td', { class: 'mono' }, e.kind),
        h('td', null, e.service),
        h('td', { class: 'mono' }, `${e.exe || e.comm} (${e.pid})`),
        h('td', { class: 'mono sec-what' }, describe(e)),
        h('td', { class: 'right num' }, String(e.result)));
      if (!expanded.has(i)) return [row];
      return [row, h('tr', { class: 'detail-row' }, h('td', { colspan: 6 }, kvTable({
        uid: e.uid, euid: e.euid, ppid: e.ppid, tid: e.tid, host: e.host, container: e.container_id, cwd: e.cwd, details: e.details,
      })))];
    }));
    draw();
    replace(body, h('table', { class: 'table sec-events' },
      h('thead', null, h('tr', null, ['Time', 'Kind', 'Service', 'Process', 'What', 'Result'].map((c) => h('th', null, c)))), rows));
  }

  function renderBaselines(list) {
    summary.textContent = `${fmtCount(list.length)} executable${list.length === 1 ? '' : 's'} with a baseline${lastAction ? ` · ${lastAction}` : ''}`;
    if (!list.length) {
      replace(body, notice('empty', 'no baselines yet', 'each executable learns its syscalls, peers and children from its first sight'));
      return;
    }
    list.sort((a, b) => String(a.exe).localeCompare(String(b.exe)));
    replace(body, h('table', { class: 'table sec-baselines' },
      h('thead', null, h('tr', null, ['Executable', 'State', 'Children', 'Peers', 'Syscall classes', ''].map((c) => h('th', null, c)))),
      h('tbody', null, list.map((b) => {
        const status = h('span', { class: 'muted sec-action-status' });
        return h('tr', { dataset: { exe: b.exe } },
          h('td', { class: 'mono' }, b.exe),
          h('td', null, b.learning ? `learning until ${fmtTime(b.learning_ends_ms, { millis: false })}` : `learned ${fmtTime(b.learned_ms, { millis: false })}`),
          h('td', { class: 'mono small' }, (b.children || []).join(', ') || '—'),
          h('td', { class: 'mono small' }, (b.peers || []).join(', ') || '—'),
          h('td', { class: 'small' }, (b.syscalls || []).map((s) => `${s.class} ${fmtRate(s.median_per_s)}`).join(', ') || '—'),
          h('td', { class: 'right actions nowrap' },
            h('button', { type: 'button', class: 'btn btn-sm sec-reset', title: 'forget everything it learned: it learns from scratch (to accept one anomaly as normal, use its alert)', onclick: () => act(b.exe, 'reset', status) }, 'Reset'),
            status));
      }))));
  }

  async function act(exe, action, status) {
    status.textContent = '…';
    try {
      await post(`security/baselines/${encodeURIComponent(exe)}/${action}`);
      lastAction = `${exe} reset: it learns again`;
      load();
    } catch (e) {
      status.textContent = e.message;
    }
  }

  load();
  return { refresh: load, destroy: () => { slot.abort(); chart?.destroy(); } };
}

/**
 * The buttons that change an alert: acknowledge, resolve or reopen it, and for an anomaly
 * "Accept as normal", which adds exactly what it found to the executable's baseline.
 */
function alertActions(a, reload) {
  const status = h('span', { class: 'muted sec-action-status' });
  const act = async (action) => {
    status.textContent = '…';
    try {
      await post(`security/alerts/${encodeURIComponent(a.id)}/${action}`);
      reload();
    } catch (e) {
      status.textContent = e.message;
    }
  };
  const button = (action, label, title) => h('button', { type: 'button', class: `btn btn-sm sec-${action}`, title, onclick: () => act(action) }, label);
  return [
    a.status === 'open' ? button('acknowledge', 'Acknowledge', 'someone is looking at it') : null,
    a.status !== 'resolved' ? button('resolve', 'Resolve', 'dealt with') : button('reopen', 'Reopen', 'not dealt with after all'),
    a.departure && a.status !== 'resolved' ? button('accept', 'Accept as normal', `add exactly this to ${a.departure.exe}'s baseline (the rest stays as learned) and resolve the alert`) : null,
    status,
  ];
}

/** A POST that needs the API token, asked for once and kept for the browser session. */
async function post(path) {
  for (let attempt = 0; attempt < 2; attempt++) {
    let token = '';
    try { token = sessionStorage.getItem(TOKEN_KEY) || ''; } catch { /* storage may be off */ }
    if (!token) {
      token = (window.prompt('API token (in <data-dir>/api-token):') || '').trim();
      if (!token) throw new ApiError('the API token is needed for this', 401);
      try { sessionStorage.setItem(TOKEN_KEY, token); } catch { /* ignore */ }
    }
    const res = await fetch(new URL(`api/v1/${path}`, document.baseURI), { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    const body = await res.json().catch(() => ({}));
    if (res.status === 401) {
      try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* ignore */ }
      continue;
    }
    if (!res.ok) throw new ApiError(`${res.status}: ${body.error || res.statusText}`, res.status);
    return body;
  }
  throw new ApiError('401: the API token was refused', 401);
}

function describe(e) {
  switch (e.kind) {
    case 'exec': return [e.path, ...(e.args || []).slice(1)].join(' ');
    case 'connect': return `${e.protocol} ${e.local} → ${e.remote}`;
    case 'accept': return `${e.protocol} ${e.remote} → ${e.local}`;
    case 'file_open': return e.path;
    case 'privilege_change': return e.path;
    case 'ptrace': return `${e.path} pid ${(e.args || [])[0] ?? ''}`;
    default: return '';
  }
}

function mountAlert(root, id, ctx) {
  const slot = requestSlot(ctx.signal);
  const charts = [];
  replace(root, loading('loading alert…'));

  async function load() {
    try {
      const d = await get(`security/alerts/${encodeURIComponent(id)}`, {}, { signal: slot.next() });
      render(d);
    } catch (e) {
      if (isAbort(e)) return;
      replace(root, h('p', null, h('a', { href: hashFor('security') }, '← alerts')), errorNotice(e));
    }
  }

  function render(d) {
    const a = d.alert;
    for (const c of charts.splice(0)) c.destroy();
    const red = h('div', { class: 'chart-wrap sec-red' });
    const top = d.top_functions || [];
    replace(root,
      h('p', null, h('a', { href: hashFor('security') }, '← alerts')),
      h('div', { class: 'page-head' }, h('h1', { class: 'sec-alert-title' }, sevBadge(a.severity), ' ', a.summary)),
      h('section', { class: 'panel sec-alert-detail' }, kvTable({
        time: fmtTime(a.time_ms), kind: `${a.kind} (${a.source})`, service: a.service, host: a.host,
        process: `${a.exe || a.comm} (pid ${a.pid})`, container: a.container_id, count: a.count,
        score: a.score ?? '', expected: a.expected, seen: a.seen, id: a.id,
        status: a.status_changed_ms ? `${a.status} (since ${fmtTime(a.status_changed_ms)})` : a.status,
      }), h('div', { class: 'actions sec-alert-actions' }, alertActions(a, load))),
      h('section', { class: 'panel' },
        h('div', { class: 'panel-head' }, h('span', null, `${a.service || 'service'}: rate, errors and p99 of entry spans, ±15 min`)),
        d.red?.some((p) => p.rate > 0) ? red : notice('empty', `no spans from ${a.service || 'this service'} around the alert`)),
      h('section', { class: 'panel sec-top' },
        h('div', { class: 'panel-head' }, h('span', null, `Top CPU functions, ±15 min (by ${d.profile_scope})`)),
        top.length ? h('table', { class: 'table' },
          h('thead', null, h('tr', null, h('th', null, 'Function'), h('th', { class: 'right' }, 'Self'), h('th', { class: 'right' }, 'Total'))),
          h('tbody', null, top.map((f) => h('tr', null,
            h('td', { class: 'mono' }, f.function),
            h('td', { class: 'right num' }, fmtPercent(f.self_share)),
            h('td', { class: 'right num' }, fmtPercent(f.total_share))))))
          : notice('empty', 'no CPU samples of this service around the alert')),
      h('section', { class: 'panel' },
        h('div', { class: 'panel-head' }, h('span', null, 'Evidence')),
        h('pre', { class: 'sec-evidence mono' }, JSON.stringify(a.evidence, null, 2))),
      h('section', { class: 'panel' },
        h('div', { class: 'panel-head' }, h('span', null, `Events of pid ${a.pid} around the alert`)),
        (d.process_events || []).length ? h('table', { class: 'table sec-events' },
          h('tbody', null, d.process_events.map((e) => h('tr', null,
            h('td', { class: 'nowrap' }, fmtTime(e.time_ms)), h('td', { class: 'mono' }, e.kind), h('td', { class: 'mono' }, describe(e))))))
          : notice('empty', 'none stored')));
    if (d.red?.some((p) => p.rate > 0)) {
      const xs = d.red.map((p) => p.t / 1000);
      charts.push(new uPlot({
        width: Math.max(300, red.clientWidth || 800), height: 180,
        series: [{},
          { label: 'rate', stroke: '#3f5f8f', value: (u, v) => (v == null ? '' : fmtRate(v)) },
          { label: 'error rate', stroke: '#b42323', scale: 'frac', value: (u, v) => (v == null ? '' : fmtPercent(v)) },
          { label: 'p99', stroke: '#b7791f', scale: 'ms', value: (u, v) => (v == null ? '' : fmtDurationMs(v)) }],
        scales: { frac: { range: [0, 1] } },
        axes: [{}, { size: 50 }, { scale: 'ms', side: 1, size: 50, values: (u, vals) => vals.map((v) => `${v} ms`) }],
      }, [xs, d.red.map((p) => p.rate), d.red.map((p) => p.error_rate), d.red.map((p) => p.p99_ms)], red));
    }
  }

  load();
  return { refresh: load, destroy: () => { slot.abort(); for (const c of charts) c.destroy(); } };
}
