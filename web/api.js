// HTTP API client (docs/api.md). Paths are relative so the dashboard works behind a path prefix.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** GET api/v1/<path>; params: object whose array values repeat the key; empty values are dropped. */
export async function get(path, params = {}, { signal } = {}) {
  const url = new URL(`api/v1/${path}`, document.baseURI);
  for (const [k, v] of Object.entries(params)) {
    for (const one of Array.isArray(v) ? v : [v]) {
      if (one === undefined || one === null || one === '') continue;
      url.searchParams.append(k, String(one));
    }
  }
  let res;
  try {
    res = await fetch(url, { signal, headers: { accept: 'application/json' } });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(`cannot reach the oxeye server (${e.message})`, 0);
  }
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    if (res.ok) throw new ApiError(`expected JSON from ${url.pathname}, got: ${text.slice(0, 120)}`, res.status);
  }
  if (!res.ok) {
    const msg = body && typeof body.error === 'string' ? body.error : (text.slice(0, 200) || res.statusText);
    throw new ApiError(`${res.status}: ${msg}`, res.status);
  }
  return body;
}

export const isAbort = (e) => e && e.name === 'AbortError';

/**
 * One request at a time per slot: next() aborts the previous request and returns a signal that
 * also aborts when the view is left (parent signal), so a stale answer never overwrites a newer one.
 */
export function requestSlot(parent) {
  let ac = null;
  return {
    next() {
      ac?.abort();
      ac = new AbortController();
      return parent ? AbortSignal.any([parent, ac.signal]) : ac.signal;
    },
    abort() { ac?.abort(); },
  };
}
