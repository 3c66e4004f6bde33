// Hash routes: '#/<view>[/<arg>]?<params>'.

/** '#/trace/abc?x=1' → {name: 'trace', arg: 'abc', params: URLSearchParams} */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, '');
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  const [name, ...rest] = path.split('/');
  return { name: name || 'services', arg: rest.map(decodeURIComponent).join('/'), params };
}

/** Builds '#/name[/arg]?params', dropping empty values. */
export function hashFor(name, params = {}, arg) {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const one of Array.isArray(v) ? v : [v]) {
      if (one !== undefined && one !== null && one !== '') sp.append(k, String(one));
    }
  }
  const qs = sp.toString();
  return `#/${name}${arg ? '/' + encodeURIComponent(arg) : ''}${qs ? '?' + qs : ''}`;
}
