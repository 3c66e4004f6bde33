// Dashboard shell: hash router, shared time range / auto-refresh, server status.
import { h, replace, errorNotice, notice } from './dom.js';
import { get, isAbort } from './api.js';
import { RANGES, REFRESH, state, setRange, setRefresh, onStateChange } from './state.js';
import { fmtUptime } from './format.js';
import { parseHash, hashFor } from './route.js';
import services from './views/services.js';
import traces from './views/traces.js';
import trace from './views/trace.js';
import logs from './views/logs.js';
import metrics from './views/metrics.js';
import profiles from './views/profiles.js';
import security from './views/security.js';
import anomalies from './views/anomalies.js';

const ROUTES = { services, traces, trace, logs, metrics, profiles, security, anomalies };

const viewEl = document.getElementById('view');
let current = null; // {name, instance, abort}
let timer = null;

function route() {
  const { name, arg, params } = parseHash();
  const mount = ROUTES[name];
  if (current) {
    current.abort.abort();
    try { current.instance?.destroy?.(); } catch (e) { console.warn(e); }
    current = null;
  }
  for (const a of document.querySelectorAll('#nav a')) {
    const active = a.dataset.route === name || (name === 'trace' && a.dataset.route === 'traces');
    a.classList.toggle('active', active);
  }
  if (!mount) {
    replace(viewEl, notice('error', 'unknown page', `no view called "${name}"`),
      h('p', null, h('a', { href: '#/services' }, 'go to services')));
    return;
  }
  const abort = new AbortController();
  const root = h('div', { class: `page page-${name}` });
  replace(viewEl, root);
  const ctx = { signal: abort.signal, navigate: (hash) => { location.hash = hash; }, hashFor };
  let instance = null;
  try {
    instance = mount(root, { arg, params }, ctx);
  } catch (e) {
    replace(root, errorNotice(e));
  }
  current = { name, instance, abort };
  document.title = `oxeye · ${name}`;
}

function refreshCurrent(reason) {
  if (!current?.instance?.refresh) return;
  current.instance.refresh(reason);
}

function schedule() {
  clearInterval(timer);
  const secs = Number(state.refresh);
  if (secs > 0) {
    timer = setInterval(() => {
      if (document.visibilityState === 'visible') {
        refreshCurrent('auto');
        updateStatus();
      }
    }, secs * 1000);
  }
}

async function updateStatus() {
  const el = document.getElementById('server-status');
  try {
    const s = await get('status');
    el.className = 'server-status ok';
    replace(el, h('span', { class: 'dot' }), `v${s.version ?? '?'} · up ${fmtUptime(s.uptime_s)}`);
    el.title = `data dir: ${s.data_dir ?? '?'}`;
  } catch (e) {
    if (isAbort(e)) return;
    el.className = 'server-status down';
    replace(el, h('span', { class: 'dot' }), 'server unreachable');
    el.title = e.message;
  }
}

function setupControls() {
  const rp = document.getElementById('range-picker');
  for (const [key, label] of RANGES) rp.appendChild(h('option', { value: key }, label));
  rp.value = state.range;
  rp.addEventListener('change', () => setRange(rp.value));

  const fp = document.getElementById('refresh-picker');
  for (const [key, label] of REFRESH) fp.appendChild(h('option', { value: key }, key === '0' ? 'Auto-refresh off' : `Every ${label}`));
  fp.value = state.refresh;
  fp.addEventListener('change', () => setRefresh(fp.value));

  document.getElementById('refresh-now').addEventListener('click', () => {
    refreshCurrent('manual');
    updateStatus();
  });

  onStateChange((what) => {
    rp.value = state.range;
    fp.value = state.refresh;
    if (what === 'range') refreshCurrent('range');
    if (what === 'refresh') schedule();
  });
}

setupControls();
window.addEventListener('hashchange', route);
if (!location.hash) history.replaceState(null, '', '#/services');
route();
schedule();
updateStatus();
