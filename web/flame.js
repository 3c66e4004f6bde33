// Flame graph on a canvas: root at the top, width = share of time. Click a frame to zoom into it,
// the root (or Reset) to zoom out; search highlights matching frames and reports their share;
// hovering shows self and total time with percentages. Also exports the top-functions table.
import { h, replace } from './dom.js';

const ROW = 18;
const FONT = '11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace';

function hue(name) {
  let x = 0;
  for (let i = 0; i < name.length; i++) x = (x * 31 + name.charCodeAt(i)) >>> 0;
  return x;
}

/** Share change → red (grew) or blue (shrank), saturating at ±10 points; grey when unchanged. */
function diffColour(node, diff) {
  const now = diff.total > 0 ? node.value / diff.total : 0;
  const then = diff.baseTotal > 0 ? (node.base || 0) / diff.baseTotal : 0;
  const d = Math.max(-1, Math.min(1, (now - then) / 0.1));
  const light = 92 - Math.abs(d) * 40;
  return d >= 0 ? `hsl(0, ${Math.round(20 + 60 * d)}%, ${light}%)` : `hsl(215, ${Math.round(20 - 60 * d)}%, ${light}%)`;
}

/** Kernel frames (`_[k]`) orange, JIT (`_[j]`) green, truncation grey, user code warm reds. */
function colour(node, matched, diff) {
  if (matched === false) return '#e3e5e8';
  if (diff) return diffColour(node, diff);
  const n = node.name;
  const x = hue(n);
  if (n === '[truncated]') return '#b8bcc4';
  if (n.endsWith('_[k]')) return `hsl(${28 + (x % 12)}, 80%, ${62 + (x % 10)}%)`;
  if (n.endsWith('_[j]')) return `hsl(${110 + (x % 30)}, 45%, ${58 + (x % 10)}%)`;
  return `hsl(${(x % 40)}, 72%, ${58 + (x % 14)}%)`;
}

function depthOf(node) {
  let d = 0;
  for (const c of node.children || []) d = Math.max(d, depthOf(c));
  return d + 1;
}

function fmtNs(ns) {
  if (ns >= 1e9) return `${(ns / 1e9).toFixed(2)} s`;
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(1)} ms`;
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(1)} µs`;
  return `${ns} ns`;
}

const pct = (part, whole) => (whole > 0 ? `${((100 * part) / whole).toFixed(part * 1000 < whole ? 2 : 1)}%` : '0%');

/**
 * Mounts a flame graph of `root` ({name, value, self, samples, children}) into `container`.
 * With `diff` ({total, baseTotal}) every node also has `base` (its time in the comparison
 * profile) and is coloured by how its share changed.
 * Returns {search(text) -> {matched, share}, reset(), destroy()}.
 */
export function flameGraph(container, root, { onFrame, diff } = {}) {
  const canvas = h('canvas', { class: 'flame-canvas', role: 'img', 'aria-label': 'flame graph' });
  const tip = h('div', { class: 'flame-tip', hidden: true });
  const crumb = h('div', { class: 'flame-crumb' });
  replace(container, crumb, h('div', { class: 'flame-wrap' }, canvas, tip));
  let zoom = [root]; // path from the root to the zoomed frame
  let query = '';
  let rects = []; // [x, y, w, node] of the last draw

  const matches = (node) => query !== '' && node.name.toLowerCase().includes(query);

  function draw() {
    const focus = zoom[zoom.length - 1];
    const rows = zoom.length - 1 + depthOf(focus);
    const width = container.clientWidth || 800;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = width * dpr;
    canvas.height = rows * ROW * dpr;
    canvas.style.width = `${width}px`;
    canvas.style.height = `${rows * ROW}px`;
    const g = canvas.getContext('2d');
    g.scale(dpr, dpr);
    g.font = FONT;
    g.textBaseline = 'middle';
    rects = [];
    const box = (node, x, y, w, matched) => {
      g.fillStyle = colour(node, matched, diff);
      g.fillRect(x, y, Math.max(w - 1, 0.5), ROW - 1);
      rects.push([x, y, w, node]);
      if (w > 30) {
        g.fillStyle = '#1f2328';
        const label = node.name;
        const fit = Math.floor((w - 6) / 6.6);
        g.fillText(label.length > fit ? `${label.slice(0, Math.max(fit - 1, 0))}…` : label, x + 3, y + ROW / 2);
      }
    };
    // The ancestors of the zoomed frame span the full width.
    zoom.slice(0, -1).forEach((n, i) => box(n, 0, i * ROW, width, query ? matches(n) : undefined));
    const walk = (node, x, y, w) => {
      box(node, x, y, w, query ? matches(node) || undefined : undefined);
      let cx = x;
      for (const c of node.children || []) {
        const cw = (w * c.value) / (node.value || 1);
        if (cw >= 0.5) walk(c, cx, y + ROW, cw);
        cx += cw;
      }
    };
    walk(focus, 0, (zoom.length - 1) * ROW, width);
    replace(crumb, zoom.map((n, i) => h('a', {
      href: '#', class: 'flame-crumb-item',
      onclick: (ev) => { ev.preventDefault(); zoom = zoom.slice(0, i + 1); draw(); },
    }, i === 0 ? 'all' : n.name)).flatMap((a, i) => (i ? [' › ', a] : [a])));
  }

  function hit(ev) {
    const r = canvas.getBoundingClientRect();
    const x = ev.clientX - r.left;
    const y = ev.clientY - r.top;
    for (let i = rects.length - 1; i >= 0; i--) {
      const [rx, ry, rw, node] = rects[i];
      if (x >= rx && x < rx + rw && y >= ry && y < ry + ROW) return node;
    }
    return null;
  }

  function pathTo(target, node = root, path = []) {
    const p = [...path, node];
    if (node === target) return p;
    for (const c of node.children || []) {
      const found = pathTo(target, c, p);
      if (found) return found;
    }
    return null;
  }

  canvas.addEventListener('click', (ev) => {
    const node = hit(ev);
    if (!node) return;
    zoom = node === zoom[zoom.length - 1] && zoom.length > 1 ? zoom.slice(0, -1) : (pathTo(node) || [root]);
    draw();
    onFrame?.(node);
  });
  canvas.addEventListener('mousemove', (ev) => {
    const node = hit(ev);
    if (!node) { tip.hidden = true; return; }
    tip.hidden = false;
    replace(tip,
      h('div', { class: 'flame-tip-name' }, node.name),
      h('div', null, `total ${fmtNs(node.value)} (${pct(node.value, root.value)}), ${node.samples} samples`),
      h('div', null, `self ${fmtNs(node.self)} (${pct(node.self, root.value)})`),
      diff ? h('div', null, `share before ${pct(node.base || 0, diff.baseTotal)} → now ${pct(node.value, diff.total)}`) : null);
    const r = canvas.getBoundingClientRect();
    tip.style.left = `${Math.min(ev.clientX - r.left + 12, r.width - 260)}px`;
    tip.style.top = `${ev.clientY - r.top + 14}px`;
  });
  canvas.addEventListener('mouseleave', () => { tip.hidden = true; });
  const onResize = () => draw();
  window.addEventListener('resize', onResize);
  draw();

  return {
    /** Highlights frames whose name contains `text`; returns their share of the whole (no double counting of recursion). */
    search(text) {
      query = (text || '').trim().toLowerCase();
      draw();
      if (!query) return { matched: 0, share: 0 };
      let matched = 0;
      let time = 0;
      const walk = (node) => {
        if (node !== root && matches(node)) {
          matched++;
          time += node.value;
          countRest(node);
          return;
        }
        for (const c of node.children || []) walk(c);
      };
      const countRest = (node) => { for (const c of node.children || []) { if (matches(c)) matched++; countRest(c); } };
      walk(root);
      return { matched, share: root.value > 0 ? time / root.value : 0 };
    },
    reset() { zoom = [root]; draw(); },
    destroy() { window.removeEventListener('resize', onResize); },
  };
}

/** Functions by self and total time (a function counted once per stack for total). */
export function topFunctions(root, limit = 25) {
  const self = new Map();
  const total = new Map();
  const walk = (node, onPath) => {
    if (node !== root) {
      self.set(node.name, (self.get(node.name) || 0) + node.self);
      if (!onPath.has(node.name)) total.set(node.name, (total.get(node.name) || 0) + node.value);
    }
    const next = node === root ? onPath : new Set(onPath).add(node.name);
    for (const c of node.children || []) walk(c, next);
  };
  walk(root, new Set());
  return [...total.keys()]
    .map((name) => ({ name, self: self.get(name) || 0, total: total.get(name) || 0 }))
    .sort((a, b) => b.self - a.self || b.total - a.total)
    .slice(0, limit);
}

export function topTable(root, limit) {
  const rows = topFunctions(root, limit);
  if (!rows.length) return h('div', { class: 'kv-empty' }, 'no samples');
  return h('table', { class: 'table top-functions' },
    h('thead', null, h('tr', null, h('th', null, 'Function'), h('th', { class: 'num' }, 'Self'), h('th', { class: 'num' }, 'Self %'), h('th', { class: 'num' }, 'Total'), h('th', { class: 'num' }, 'Total %'))),
    h('tbody', null, rows.map((r) => h('tr', null,
      h('td', { class: 'mono' }, r.name),
      h('td', { class: 'num' }, fmtNs(r.self)),
      h('td', { class: 'num' }, pct(r.self, root.value)),
      h('td', { class: 'num' }, fmtNs(r.total)),
      h('td', { class: 'num' }, pct(r.total, root.value))))));
}

export { fmtNs, pct };
