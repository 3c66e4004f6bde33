// Tiny DOM helpers. Every string child becomes a text node: data never reaches innerHTML.

/**
 * h('div', {class: 'x', onclick: fn}, 'text', otherNode, [more, nodes])
 * Attributes: `class`, `style` (object or string), `dataset` (object), `on<event>` (listener),
 * boolean `true` sets an empty attribute, `false`/`null`/`undefined` skip it.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === false || v === null || v === undefined) continue;
      if (k.startsWith('on') && typeof v === 'function') {
        el.addEventListener(k.slice(2), v);
      } else if (k === 'style' && typeof v === 'object') {
        for (const [prop, val] of Object.entries(v)) {
          if (val === undefined || val === null) continue;
          if (prop.startsWith('--')) el.style.setProperty(prop, val);
          else el.style[prop] = val;
        }
      } else if (k === 'dataset') {
        Object.assign(el.dataset, v);
      } else if (k === 'value' || k === 'checked' || k === 'selected') {
        el[k] = v;
      } else {
        el.setAttribute(k, v === true ? '' : String(v));
      }
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

/** A status box: kind is 'empty', 'error' or 'loading'. */
export function notice(kind, title, detail) {
  return h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('div', { class: 'notice-title' }, title),
    detail ? h('div', { class: 'notice-detail' }, detail) : null);
}

export function errorNotice(err) {
  return notice('error', 'request failed', err && err.message ? err.message : String(err));
}

export function loading(what = 'loading…') {
  return h('div', { class: 'loading' }, h('span', { class: 'spinner' }), what);
}

/** <select> from [value, label] pairs or plain strings. */
export function select(attrs, options, current) {
  const el = h('select', attrs);
  for (const o of options) {
    const [value, label] = Array.isArray(o) ? o : [o, o];
    const opt = h('option', { value }, label);
    if (String(value) === String(current ?? '')) opt.selected = true;
    el.appendChild(opt);
  }
  return el;
}

/** A labelled form field. */
export function field(label, control, extraClass) {
  return h('label', { class: `field ${extraClass || ''}` }, h('span', { class: 'field-label' }, label), control);
}

/** Key/value table for attribute maps ({k: v}); values that look like JSON stay monospace. */
export function kvTable(obj, emptyText = 'none') {
  const keys = Object.keys(obj || {}).sort();
  if (!keys.length) return h('div', { class: 'kv-empty' }, emptyText);
  return h('table', { class: 'kv' },
    h('tbody', null, keys.map((k) => h('tr', null,
      h('th', { title: k }, k),
      h('td', null, formatAttr(obj[k]))))));
}

function formatAttr(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
