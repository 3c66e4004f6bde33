// Formatting of numbers, durations, times and colours.

export function fmtDurationMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return '–';
  ms = Number(ms);
  if (ms === 0) return '0 ms';
  const abs = Math.abs(ms);
  if (abs < 0.001) return `${(ms * 1e6).toFixed(0)} ns`;
  if (abs < 1) return `${trim(ms * 1000, abs * 1000 < 10 ? 2 : 0)} µs`;
  if (abs < 1000) return `${trim(ms, abs < 10 ? 2 : abs < 100 ? 1 : 0)} ms`;
  if (abs < 60_000) return `${trim(ms / 1000, 2)} s`;
  if (abs < 3_600_000) return `${Math.floor(ms / 60_000)}m ${Math.round((ms % 60_000) / 1000)}s`;
  return `${Math.floor(ms / 3_600_000)}h ${Math.round((ms % 3_600_000) / 60_000)}m`;
}

function trim(x, digits) {
  return Number(x.toFixed(digits)).toString();
}

export function fmtRate(perSec) {
  if (perSec === null || perSec === undefined) return '–';
  const r = Number(perSec);
  if (r === 0) return '0/s';
  if (r < 0.01) return `${(r * 60).toFixed(2)}/min`;
  if (r < 10) return `${r.toFixed(2)}/s`;
  return `${r.toFixed(1)}/s`;
}

export function fmtPercent(frac) {
  if (frac === null || frac === undefined) return '–';
  const p = Number(frac) * 100;
  if (p === 0) return '0%';
  if (p < 0.1) return '<0.1%';
  return `${p < 10 ? p.toFixed(2) : p.toFixed(1)}%`;
}

export function fmtCount(n) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString('en-US');
}

export function fmtNumber(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e9 || a < 1e-3)) return v.toExponential(2);
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
  return Number(v.toFixed(3)).toString();
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** Local wall-clock time; the date is prefixed when it is not today. */
export function fmtTime(ms, { millis = true } = {}) {
  if (ms === null || ms === undefined) return '–';
  const d = new Date(Number(ms));
  const now = new Date();
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${millis ? '.' + pad(d.getMilliseconds(), 3) : ''}`;
  if (d.toDateString() === now.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

export function fmtAgo(ms) {
  const s = Math.round((Date.now() - Number(ms)) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function fmtUptime(s) {
  s = Math.floor(Number(s) || 0);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

// Categorical palette (readable on white and as bar fill); a service keeps its colour across views.
const PALETTE = [
  '#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#edc948',
  '#9c755f', '#e15759', '#6b8fd6', '#ff9da7', '#3d9970', '#bab0ac',
];

export function colorFor(name) {
  let h = 2166136261;
  const s = String(name ?? '');
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return PALETTE[(h >>> 0) % PALETTE.length];
}

export const SERIES_COLORS = PALETTE;

export const SEVERITIES = [
  // [min number, name, css class]
  [21, 'FATAL', 'sev-fatal'],
  [17, 'ERROR', 'sev-error'],
  [13, 'WARN', 'sev-warn'],
  [9, 'INFO', 'sev-info'],
  [5, 'DEBUG', 'sev-debug'],
  [1, 'TRACE', 'sev-trace'],
];

export function severityOf(number, text) {
  const n = Number(number) || 0;
  for (const [min, name, cls] of SEVERITIES) {
    if (n >= min) return { name: text || name, cls };
  }
  // Number unset: guess from the text.
  const t = String(text || '').toUpperCase();
  for (const [, name, cls] of SEVERITIES) {
    if (t.startsWith(name.slice(0, 3))) return { name: text, cls };
  }
  return { name: text || 'UNSET', cls: 'sev-unset' };
}

export function shortId(id, n = 8) {
  return id ? String(id).slice(0, n) : '';
}
