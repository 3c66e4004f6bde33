// State shared by all views: the time range and the auto-refresh interval.

export const RANGES = [
  ['15m', 'Last 15 minutes', 15 * 60e3],
  ['1h', 'Last 1 hour', 60 * 60e3],
  ['6h', 'Last 6 hours', 6 * 60 * 60e3],
  ['24h', 'Last 24 hours', 24 * 60 * 60e3],
  ['7d', 'Last 7 days', 7 * 24 * 60 * 60e3],
];

export const REFRESH = [
  ['0', 'Off'],
  ['5', '5s'],
  ['15', '15s'],
  ['30', '30s'],
  ['60', '1m'],
];

function load(key, allowed, fallback) {
  try {
    const v = localStorage.getItem(key);
    if (v !== null && allowed.some((a) => a[0] === v)) return v;
  } catch { /* storage may be disabled */ }
  return fallback;
}

function save(key, v) {
  try { localStorage.setItem(key, v); } catch { /* ignore */ }
}

const listeners = new Set();

export const state = {
  range: load('oxeye.range', RANGES, '1h'),
  refresh: load('oxeye.refresh', REFRESH, '15'),
};

export function setRange(key) {
  state.range = key;
  save('oxeye.range', key);
  listeners.forEach((f) => f('range'));
}

export function setRefresh(key) {
  state.refresh = key;
  save('oxeye.refresh', key);
  listeners.forEach((f) => f('refresh'));
}

export function onStateChange(f) {
  listeners.add(f);
  return () => listeners.delete(f);
}

/** {start, end} in unix ms for the current range, ending now. */
export function timeWindow() {
  const span = (RANGES.find((r) => r[0] === state.range) || RANGES[1])[2];
  const end = Date.now();
  return { start: end - span, end };
}

export function rangeLabel() {
  return (RANGES.find((r) => r[0] === state.range) || RANGES[1])[1].toLowerCase();
}

/** The last trace search (hash), so "back to search" keeps its filters. */
let lastSearch = '#/traces';
export const rememberSearch = (hash) => { lastSearch = hash; };
export const lastSearchHash = () => lastSearch;
