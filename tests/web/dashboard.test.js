// End-to-end test of the dashboard: the real oxeye binary, spans sent over OTLP/HTTP JSON, and the
// pages driven in Debian's Chromium through playwright-core (no browser download).
//
//   OXEYE_BIN=/path/to/oxeye node --test tests/web/
//
// Screenshots go to tests/web/out/. Without OXEYE_BIN the default debug build is used; when neither
// exists the suite is skipped with a message.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.join(HERE, 'out');
const DEFAULT_BIN = '/root/.cache/oxeye/target/debug/oxeye';
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const BIN = process.env.OXEYE_BIN || DEFAULT_BIN;
const skip = !process.env.OXEYE_BIN && !fs.existsSync(DEFAULT_BIN)
  ? `oxeye binary not found: set OXEYE_BIN or build ${DEFAULT_BIN}`
  : false;

const hex = (bytes) => randomBytes(bytes).toString('hex');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// OTLP JSON helpers (ids are hex, times are decimal strings of unix nanoseconds).
const str = (key, v) => ({ key, value: { stringValue: v } });
const int = (key, v) => ({ key, value: { intValue: String(v) } });
const bool = (key, v) => ({ key, value: { boolValue: v } });
const nanos = (ms) => (BigInt(Math.round(ms)) * 1000000n).toString();

const RUN = hex(3);
const FRONTEND = `e2e-frontend-${RUN}`;
const PAYMENTS = `e2e-payments-${RUN}`;
const METRIC = `e2e.requests.${RUN}`;
const TRACE_ID = hex(16);
const ROOT = hex(8);
const CLIENT = hex(8);
const CHARGE = hex(8);
const RENDER = hex(8);
const LOG_BODY = `payment declined for order ${RUN}`;
// The insights job's series: a queue with a 5-minute surge 10 minutes ago, a host CPU that rose
// with it, and a deploy of the queue's service just before.
const QUEUE_SVC = `e2e-queue-${RUN}`;
const QUEUE = `e2e.queue.depth.${RUN}`;
const HISTORY = 400; // minutes of history: more than the detector's warm-up
const SURGE = [388, 393]; // minutes from the start of the history
const HOSTILE = '<img src=x onerror="window.__xss=1"><b>not bold</b>';

function tracePayload(t0) {
  const scope = (name) => ({ name, version: '1.0.0' });
  return {
    resourceSpans: [
      {
        resource: { attributes: [str('service.name', FRONTEND), str('host.name', 'e2e-host')] },
        scopeSpans: [{
          scope: scope('e2e.frontend'),
          spans: [
            {
              traceId: TRACE_ID, spanId: ROOT, name: 'GET /checkout', kind: 2,
              startTimeUnixNano: nanos(t0), endTimeUnixNano: nanos(t0 + 120),
              attributes: [str('http.method', 'GET'), str('http.route', '/checkout'), int('http.status_code', 500),
                str('e2e.comment', HOSTILE)],
              events: [{ timeUnixNano: nanos(t0 + 5), name: 'cache.miss', attributes: [str('cache.key', 'cart:42')] }],
              status: { code: 2, message: 'downstream payment failed' },
            },
            {
              traceId: TRACE_ID, spanId: CLIENT, parentSpanId: ROOT, name: 'POST /charge', kind: 3,
              startTimeUnixNano: nanos(t0 + 10), endTimeUnixNano: nanos(t0 + 90),
              attributes: [str('http.method', 'POST'), str('server.address', 'payments')],
            },
            {
              traceId: TRACE_ID, spanId: RENDER, parentSpanId: ROOT, name: 'render page', kind: 1,
              startTimeUnixNano: nanos(t0 + 95), endTimeUnixNano: nanos(t0 + 115),
              attributes: [bool('cache.hit', false)],
            },
          ],
        }],
      },
      {
        resource: { attributes: [str('service.name', PAYMENTS), str('deployment.environment', 'e2e')] },
        scopeSpans: [{
          scope: scope('e2e.payments'),
          spans: [{
            traceId: TRACE_ID, spanId: CHARGE, parentSpanId: CLIENT, name: 'charge card', kind: 2,
            startTimeUnixNano: nanos(t0 + 15), endTimeUnixNano: nanos(t0 + 85),
            attributes: [str('payment.currency', 'EUR'), int('payment.amount_cents', 4200)],
            events: [{ timeUnixNano: nanos(t0 + 80), name: 'exception', attributes: [str('exception.type', 'CardDeclined'), str('exception.message', 'card declined')] }],
            status: { code: 2, message: 'card declined' },
          }],
        }],
      },
    ],
  };
}

function logPayload(t0) {
  return {
    resourceLogs: [{
      resource: { attributes: [str('service.name', PAYMENTS)] },
      scopeLogs: [{
        scope: { name: 'e2e.logger' },
        logRecords: [{
          timeUnixNano: nanos(t0 + 80), observedTimeUnixNano: nanos(t0 + 81),
          severityNumber: 17, severityText: 'ERROR', body: { stringValue: LOG_BODY },
          traceId: TRACE_ID, spanId: CHARGE, attributes: [str('order.id', RUN)],
        }],
      }],
    }],
  };
}

function metricPayload(t0) {
  const points = [-60_000, -30_000, 0].map((dt, i) => ({
    attributes: [str('http.route', '/checkout')],
    startTimeUnixNano: nanos(t0 - 120_000), timeUnixNano: nanos(t0 + dt), asInt: String(10 * (i + 1)),
  }));
  return {
    resourceMetrics: [{
      resource: { attributes: [str('service.name', FRONTEND)] },
      scopeMetrics: [{
        scope: { name: 'e2e.meter' },
        metrics: [{
          name: METRIC, unit: '{request}', description: 'requests seen by the e2e test',
          sum: { aggregationTemporality: 2, isMonotonic: true, dataPoints: points },
        }],
      }],
    }],
  };
}

/** Deterministic noise in [-0.5, 0.5), so the history is the same on every run. */
function noise(i) {
  const x = Math.sin(i * 12.9898) * 43758.5453;
  return x - Math.floor(x) - 0.5;
}

function gauge(service, name, unit, points) {
  return {
    resourceMetrics: [{
      resource: { attributes: [str('service.name', service)] },
      scopeMetrics: [{
        scope: { name: 'e2e.meter' },
        metrics: [{ name, unit, gauge: { dataPoints: points.map(([t, v]) => ({ timeUnixNano: nanos(t), asDouble: v })) } }],
      }],
    }],
  };
}

function insightPayloads(start) {
  const surging = (i) => i >= SURGE[0] && i < SURGE[1];
  const minutes = [...Array(HISTORY).keys()];
  const queue = minutes.map((i) => [start + i * 60_000, 50 + 5 * Math.sin(i / 20) + noise(i) + (surging(i) ? 60 : 0)]);
  const cpu = minutes.map((i) => [start + i * 60_000, 0.3 + 0.02 * noise(i + 7) + (surging(i) ? 0.6 : 0)]);
  const spans = (version, atMinute) => ({
    resourceSpans: [{
      resource: { attributes: [str('service.name', QUEUE_SVC), str('service.version', version)] },
      scopeSpans: [{
        scope: { name: 'e2e' },
        spans: [0, 1, 2].map((k) => {
          // Inside one minute (the RED bucket), whatever the start: spread over two, the few
          // spans could make enough buckets for a load-to-latency fit.
          const minute = Math.floor((start + atMinute * 60_000) / 60_000) * 60_000;
          const t = minute + 10_000 + k * 1000;
          return { traceId: hex(16), spanId: hex(8), name: 'POST /enqueue', kind: 2, startTimeUnixNano: nanos(t), endTimeUnixNano: nanos(t + 5) };
        }),
      }],
    }],
  });
  return {
    metrics: [gauge(QUEUE_SVC, QUEUE, '{item}', queue), gauge(QUEUE_SVC, 'system.cpu.utilization', '1', cpu)],
    traces: [spans('1.0', 300), spans('2.0', SURGE[0] - 1)],
  };
}

async function post(url, body) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  assert.equal(res.status, 200, `POST ${url} answered ${res.status}: ${text}`);
}

describe('dashboard', { skip, timeout: 240_000 }, () => {
  let server;
  let serverLog = '';
  let serverExit = null;
  let dataDir;
  let browser;
  let page;
  let base;
  let otlpBase;
  const problems = []; // page errors and console errors, checked after every step

  before(async () => {
    fs.rmSync(OUT, { recursive: true, force: true }); // screenshots of this run only
    fs.mkdirSync(OUT, { recursive: true });
    assert.ok(fs.existsSync(BIN), `OXEYE_BIN=${BIN} does not exist`);
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxeye-web-'));
    const [httpPort, grpcPort, otlpHttpPort] = [await freePort(), await freePort(), await freePort()];
    base = `http://127.0.0.1:${httpPort}`;
    server = spawn(BIN, ['up', '--data-dir', dataDir,
      '--http-addr', `127.0.0.1:${httpPort}`,
      '--otlp-grpc-addr', `127.0.0.1:${grpcPort}`,
      '--otlp-http-addr', `127.0.0.1:${otlpHttpPort}`,
      // The job's first run comes one interval after start, after the history below is sent.
      '--insight-interval', '5s',
      // High traffic at 20 requests/s, so the boost test needs no baseline warm-up (minutes);
      // the other tests send a handful of spans.
      '--profile-boost-threshold', '20', '--profile-boost-for', '20s'], { stdio: ['ignore', 'pipe', 'pipe'] });
    server.stdout.on('data', (d) => { serverLog += d; });
    server.stderr.on('data', (d) => { serverLog += d; });
    server.on('exit', (code, signal) => { serverExit = { code, signal }; });
    // Last resort if the runner is interrupted before `after` runs.
    process.once('exit', () => { if (!serverExit) server.kill('SIGKILL'); });

    const deadline = Date.now() + 60_000;
    for (;;) {
      if (serverExit) assert.fail(`oxeye up exited (${JSON.stringify(serverExit)}) before answering:\n${serverLog}`);
      try {
        const res = await fetch(`${base}/api/v1/status`);
        if (res.ok) break;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) assert.fail(`GET /api/v1/status did not answer within 60 s:\n${serverLog}`);
      await sleep(200);
    }

    const t0 = Date.now() - 5_000;
    const otlp = `http://127.0.0.1:${otlpHttpPort}`;
    otlpBase = otlp;
    await post(`${otlp}/v1/traces`, tracePayload(t0));
    await post(`${otlp}/v1/logs`, logPayload(t0));
    await post(`${otlp}/v1/metrics`, metricPayload(t0));
    const insight = insightPayloads(t0 - HISTORY * 60_000);
    for (const m of insight.metrics) await post(`${otlp}/v1/metrics`, m);
    for (const t of insight.traces) await post(`${otlp}/v1/traces`, t);

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
    });
    page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()} (${m.location().url})`); });
    page.on('requestfailed', (r) => {
      // Requests aborted on purpose (view left, newer query) are not failures.
      if (!/ERR_ABORTED/.test(r.failure()?.errorText || '')) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
    });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    if (server && !serverExit) {
      server.kill('SIGTERM');
      const exited = await Promise.race([new Promise((r) => server.once('exit', () => r(true))), sleep(5_000).then(() => false)]);
      if (!exited) server.kill('SIGKILL');
    }
    fs.writeFileSync(path.join(OUT, 'server.log'), serverLog);
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  const noProblems = () => assert.deepEqual(problems, [], 'the page logged errors');
  const shot = (name) => page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });

  /** Reloads the view until selector appears: data may need a moment to become queryable. */
  async function waitWithReload(selector, ms = 20_000) {
    const deadline = Date.now() + ms;
    for (;;) {
      try {
        await page.waitForSelector(selector, { timeout: 3_000 });
        return;
      } catch (e) {
        if (Date.now() > deadline) {
          // Say what the page shows instead (an API error, an empty state) rather than only "timeout".
          const shown = await page.locator('.notice').allInnerTexts().catch(() => []);
          await shot(`failed-${Date.now()}`).catch(() => {});
          throw new Error(`${selector} did not appear within ${ms / 1000} s on ${await page.evaluate(() => location.hash)}` +
            (shown.length ? `; the page shows: ${shown.join(' | ')}` : ''), { cause: e });
        }
        await page.click('#refresh-now');
      }
    }
  }

  // Steps build on each other: after the first failure the dependent ones are skipped, not failed
  // again; `independent` steps (they start from their own URL) still run.
  let brokenAt = null;
  function step(name, fn, { independent = false } = {}) {
    it(name, async (t) => {
      if (brokenAt && !independent) {
        t.skip(`an earlier step failed: ${brokenAt}`);
        return;
      }
      try {
        await fn(t);
      } catch (e) {
        brokenAt ??= name;
        problems.length = 0; // reported with this step; later steps start clean
        throw e;
      }
    });
  }

  step('serves the dashboard and lists the services', async () => {
    await page.goto(`${base}/`);
    await page.waitForFunction(() => location.hash === '#/services');
    await waitWithReload(`.services-table tr[data-service="${FRONTEND}"]`);
    await page.waitForSelector(`.services-table tr[data-service="${PAYMENTS}"]`);
    const row = page.locator(`.services-table tr[data-service="${PAYMENTS}"]`);
    assert.match(await row.innerText(), /100(\.0)?%/, 'payments: its one entry span is an error');
    await shot('services');
    noProblems();
  });

  step('goes from a service to its traces', async () => {
    await page.click(`.services-table tr[data-service="${FRONTEND}"] a.service-link`);
    await page.waitForFunction((svc) => location.hash.startsWith('#/traces') && location.hash.includes(encodeURIComponent(svc)), FRONTEND);
    assert.equal(await page.inputValue('input[name=service]'), FRONTEND);
    await waitWithReload(`.traces-table tr[data-trace-id="${TRACE_ID}"]`);
    const text = await page.innerText(`.traces-table tr[data-trace-id="${TRACE_ID}"]`);
    assert.match(text, /GET \/checkout/);
    assert.match(text, new RegExp(PAYMENTS));
    await shot('traces');
    noProblems();
  });

  step('filters traces by attribute and status', async () => {
    await page.fill('input[name=attr]', 'payment.currency=EUR');
    await page.selectOption('select[name=status]', 'error');
    await page.fill('input[name=service]', '');
    await page.click('form.filters button[type=submit]');
    await page.waitForSelector(`.traces-table tr[data-trace-id="${TRACE_ID}"]`);
    await page.fill('input[name=attr]', 'payment.currency=USD');
    await page.click('form.filters button[type=submit]');
    await page.waitForSelector('.page-traces .notice-empty');
    assert.equal(await page.locator(`.traces-table tr[data-trace-id="${TRACE_ID}"]`).count(), 0);
    noProblems();
  });

  step('opens the waterfall and shows span details', async () => {
    await page.goto(`${base}/#/traces?service=${encodeURIComponent(FRONTEND)}`);
    await page.click(`.traces-table tr[data-trace-id="${TRACE_ID}"] a.trace-link`);
    await page.waitForFunction((id) => location.hash.startsWith(`#/trace/${id}`), TRACE_ID);
    await page.waitForSelector('.wf-span');
    assert.equal(await page.locator('.wf-span').count(), 4);
    // The tree follows parent_span_id: root, client, its server child, then the later sibling.
    const order = await page.locator('.wf-span').evaluateAll((els) => els.map((e) => e.dataset.spanId));
    assert.deepEqual(order, [ROOT, CLIENT, CHARGE, RENDER]);
    assert.ok(await page.locator(`.wf-span[data-span-id="${CHARGE}"].is-error`).count(), 'error span is marked');

    await page.click(`.wf-span[data-span-id="${CHARGE}"]`);
    const detail = page.locator('.span-detail.open');
    await detail.waitFor();
    const text = await detail.innerText();
    assert.match(text, /charge card/);
    assert.match(text, /payment\.currency/);
    assert.match(text, /EUR/);
    assert.match(text, /card declined/);
    assert.match(text, new RegExp(PAYMENTS));
    assert.match(text, /deployment\.environment/, 'resource attributes shown');
    assert.match(text, /e2e\.payments/, 'instrumentation scope shown');

    await page.click(`.wf-span[data-span-id="${ROOT}"]`);
    const rootText = await detail.innerText();
    assert.match(rootText, /cache\.miss/, 'event shown');
    assert.match(rootText, /cart:42/);
    // Data is rendered as text: the hostile attribute value appears literally and creates no element.
    assert.ok(rootText.includes(HOSTILE), 'attribute value shown as text');
    assert.equal(await page.locator('.span-detail img, .span-detail b').count(), 0);
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    await shot('trace');
    noProblems();
  });

  step('shows the logs of the trace', async () => {
    await page.click('#trace-logs-link');
    await page.waitForFunction(() => location.hash.startsWith('#/logs'));
    assert.equal(await page.inputValue('input[name=trace_id]'), TRACE_ID);
    await waitWithReload(`.logs-table tr[data-trace-id="${TRACE_ID}"]`);
    const row = page.locator(`.logs-table tr[data-trace-id="${TRACE_ID}"]`).first();
    const text = await row.innerText();
    assert.match(text, new RegExp(LOG_BODY));
    assert.match(text, /ERROR/);
    await row.click();
    await page.waitForSelector('.log-detail:not([hidden])');
    await shot('logs');
    // The trace link leads back to the waterfall.
    await row.locator('a.trace-link').click();
    await page.waitForFunction((id) => location.hash.startsWith(`#/trace/${id}`), TRACE_ID);
    await page.waitForSelector('.wf-span');
    noProblems();
  });

  step('renders the logs view unfiltered', async () => {
    await page.goto(`${base}/#/logs`);
    await page.waitForSelector('.logs-table, .page-logs .notice');
    await page.selectOption('select[name=severity]', 'error');
    await waitWithReload(`.logs-table tr[data-trace-id="${TRACE_ID}"]`);
    noProblems();
  }, { independent: true });

  step('plots a metric', async () => {
    await page.goto(`${base}/#/metrics`);
    await waitWithReload(`.metric-item[data-metric="${METRIC}"]`);
    await page.click(`.metric-item[data-metric="${METRIC}"]`);
    await page.waitForFunction((m) => decodeURIComponent(location.hash).includes(m), METRIC);
    // The page may still show the chart of the metric it opened with: wait for this one's.
    await page.waitForFunction(
      () => /http\.route=/.test(document.querySelector('.chart-wrap .u-legend')?.innerText || ''),
      null, { timeout: 10_000 },
    ).catch(() => {});
    const legend = await page.innerText('.chart-wrap .u-legend');
    assert.match(legend, /http\.route=\/checkout/);
    await page.selectOption('select[name=service]', FRONTEND);
    await page.waitForSelector('.chart-wrap .uplot canvas');
    await shot('metrics');
    noProblems();
  }, { independent: true });

  // eBPF profiling needs root; CI runs as root with OXEYE_REQUIRE_EBPF=1, where skipping is a failure.
  const isRoot = process.getuid?.() === 0;
  const profSkip = !isRoot && process.env.OXEYE_REQUIRE_EBPF !== '1' ? 'profiling needs root' : false;
  it('profiles a process and joins its span to the samples', { skip: profSkip }, async () => {
    assert.ok(isRoot, 'OXEYE_REQUIRE_EBPF=1 but the test is not running as root');
    const HOT = 'oxeye_web_hot_function';
    const src = path.join(dataDir, 'burn.c');
    const bin = path.join(dataDir, 'burn');
    fs.writeFileSync(src, `#include <time.h>
volatile double sink;
__attribute__((noinline)) void ${HOT}(long n) { double x = 0; for (long i = 0; i < n; i++) x += i * 0.5; sink += x; }
int main(void) { time_t t = time(0); while (time(0) - t < 4) ${HOT}(2000000); return 0; }
`);
    const cc = spawn('clang', ['-O2', '-g', '-fno-omit-frame-pointer', '-o', bin, src], { stdio: 'inherit' });
    assert.equal(await new Promise((r) => cc.on('exit', r)), 0, 'compiling the CPU burner failed');
    const start = Date.now();
    const burner = spawn(bin, [], { stdio: 'ignore' });
    await new Promise((r) => burner.on('exit', r));
    const end = Date.now();
    const pid = burner.pid;
    const burnTrace = hex(16);
    const busy = hex(8);
    const idle = hex(8);
    const svc = `e2e-burner-${RUN}`;
    await post(`${otlpBase}/v1/traces`, {
      resourceSpans: [{
        resource: { attributes: [str('service.name', svc), int('process.pid', pid)] },
        scopeSpans: [{
          scope: { name: 'e2e.burner' },
          spans: [
            { traceId: burnTrace, spanId: busy, name: 'burn cpu', kind: 2, startTimeUnixNano: nanos(start), endTimeUnixNano: nanos(end), attributes: [int('thread.id', pid)] },
            // Same thread, but a window before the process existed: no samples.
            { traceId: burnTrace, spanId: idle, parentSpanId: busy, name: 'before it ran', kind: 1, startTimeUnixNano: nanos(start - 60_000), endTimeUnixNano: nanos(start - 50_000), attributes: [int('thread.id', pid)] },
          ],
        }],
      }],
    });

    await page.goto(`${base}/#/profiles?pid=${pid}`);
    await waitWithReload('.page-profiles .flame-canvas', 30_000);
    await page.fill('input[name=search]', HOT);
    await page.waitForFunction(() => /matched/.test(document.querySelector('.flame-search-result')?.textContent || ''));
    const found = await page.innerText('.flame-search-result');
    const share = Number(found.match(/([\d.]+)% of samples/)?.[1]);
    assert.ok(share > 50, `${HOT} should hold most of the burner's samples: ${found}`);
    assert.match(await page.innerText('.top-functions'), new RegExp(HOT));
    await shot('profiles');

    // Compared with the hour before (when the burner did not exist), its pid's profile grew.
    await page.selectOption('select[name=compare]', 'previous');
    await page.waitForFunction(() => /period before/.test(document.querySelector('.flame-legend')?.textContent || ''));
    await page.waitForSelector('.page-profiles .flame-canvas');
    assert.match(await page.innerText('.flame-legend'), /\b0 samples/);
    const pixel = await page.evaluate(() => {
      const c = document.querySelector('.page-profiles .flame-canvas');
      // The root frame (the top row, always full width): all of it is new, so its share grew.
      const d = c.getContext('2d').getImageData(Math.floor(c.width / 2), Math.floor((9 * c.height) / c.clientHeight), 1, 1).data;
      return [d[0], d[1], d[2]];
    });
    assert.ok(pixel[0] > pixel[2] + 40, `a frame that grew is drawn red, found rgb(${pixel})`);
    await shot('profiles-diff');
    await page.selectOption('select[name=compare]', '');

    // Bottlenecks of the burner's service (its command name): the hot function has the largest
    // self share, and clicking it highlights it in the flame graph.
    await page.goto(`${base}/#/profiles?service=burn`);
    await waitWithReload('.bottleneck-service[data-service="burn"] .bottleneck-largest', 30_000);
    const first = page.locator('.bottleneck-service[data-service="burn"] .bottleneck-largest tbody tr').first();
    assert.match(await first.innerText(), new RegExp(HOT));
    await page.waitForSelector('.page-profiles .flame-canvas');
    await first.locator('a').click();
    assert.equal(await page.inputValue('input[name=search]'), HOT);
    assert.match(await page.innerText('.flame-search-result'), /matched/);
    await page.locator('.bottlenecks').scrollIntoViewIfNeeded();
    await shot('bottlenecks');

    // Selecting the function lists the traces whose spans ran it: the burner's span, matched by
    // its thread, links to its trace.
    const ran = page.locator('.frame-traces-list tbody tr', { hasText: 'burn cpu' });
    await ran.waitFor({ timeout: 30_000 });
    assert.match(await ran.innerText(), /thread/);
    assert.match(await page.innerText('.frame-traces-head'), new RegExp(HOT));
    await page.locator('.frame-traces').scrollIntoViewIfNeeded();
    await shot('frame-traces');
    await ran.locator('a').click();
    await page.waitForSelector(`.wf-span[data-span-id="${busy}"]`);
    assert.match(page.url(), new RegExp(`#/trace/${burnTrace}`));

    await page.goto(`${base}/#/trace/${burnTrace}`);
    await page.waitForSelector('.wf-span');
    await page.click(`.wf-span[data-span-id="${busy}"]`);
    await page.waitForSelector('.span-detail .span-profile .flame-canvas');
    assert.match(await page.innerText('.span-profile-note'), /thread\.id/);
    await shot('span-profile');
    await page.click(`.wf-span[data-span-id="${idle}"]`);
    await page.waitForFunction(() => /no CPU samples/.test(document.querySelector('.span-detail .span-profile')?.textContent || ''));
    noProblems();
  });

  it('shows where a sleeping span blocked (off-CPU) and that it took no CPU', { skip: profSkip }, async () => {
    assert.ok(isRoot, 'OXEYE_REQUIRE_EBPF=1 but the test is not running as root');
    const SLEEPY = 'oxeye_web_sleepy_function';
    const src = path.join(dataDir, 'sleepy.c');
    const bin = path.join(dataDir, 'sleepy');
    // The syscall instruction sits in the named function itself, so it is the user leaf of the
    // blocked stack whatever libc was built with.
    fs.writeFileSync(src, `#include <time.h>
#include <sys/syscall.h>
__attribute__((noinline)) void ${SLEEPY}(void) {
  struct timespec ts = { 1, 0 };
#if defined(__x86_64__)
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "a"((long)SYS_nanosleep), "D"(&ts), "S"(0L) : "rcx", "r11", "memory");
#else
  nanosleep(&ts, 0);
#endif
}
int main(void) { time_t t = time(0); while (time(0) - t < 5) ${SLEEPY}(); return 0; }
`);
    const cc = spawn('clang', ['-O2', '-g', '-fno-omit-frame-pointer', '-o', bin, src], { stdio: 'inherit' });
    assert.equal(await new Promise((r) => cc.on('exit', r)), 0, 'compiling the sleeper failed');
    const sleeper = spawn(bin, [], { stdio: 'ignore' });
    const exited = new Promise((r) => sleeper.on('exit', r));
    const pid = sleeper.pid;
    const svc = `e2e-sleeper-${RUN}`;
    const sleepTrace = hex(16);
    const hello = hex(8);
    const slept = hex(8);
    const resource = { attributes: [str('service.name', svc), int('process.pid', pid)] };
    // Off-CPU profiling follows processes from their first span batch on.
    const start = Date.now();
    await post(`${otlpBase}/v1/traces`, {
      resourceSpans: [{ resource, scopeSpans: [{ scope: { name: 'e2e.sleeper' }, spans: [
        { traceId: sleepTrace, spanId: hello, name: 'started', kind: 1, startTimeUnixNano: nanos(start - 1), endTimeUnixNano: nanos(start), attributes: [int('thread.id', pid)] },
      ] }] }],
    });
    // The span covers only the sleeping: it opens once the sleeper has started up and closes
    // inside its last 1 s sleep, before the exit, whose teardown runs on the CPU (a 99 Hz
    // sample can land there, as one did in a CI run).
    await sleep(200);
    const t0 = Date.now();
    assert.equal(await exited, 0, 'the sleeper failed');
    const end = Date.now() - 150;
    await post(`${otlpBase}/v1/traces`, {
      resourceSpans: [{ resource, scopeSpans: [{ scope: { name: 'e2e.sleeper' }, spans: [
        { traceId: sleepTrace, spanId: slept, parentSpanId: hello, name: 'sleep in nanosleep', kind: 2, startTimeUnixNano: nanos(t0), endTimeUnixNano: nanos(end), attributes: [int('thread.id', pid)] },
      ] }] }],
    });

    // The API first: the blocked stack names the function and the kernel's nanosleep.
    const url = `${base}/api/v1/traces/${sleepTrace}/spans/${slept}/profile`;
    let off = null;
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(1000)) {
      off = await (await fetch(`${url}?kind=off_cpu`)).json();
      if (off.flamegraph?.samples > 0) break;
    }
    assert.equal(off.match, 'thread');
    assert.ok(off.flamegraph.samples > 0, `no off-CPU blocks for the sleeping span: ${JSON.stringify(off)}`);
    const names = [];
    const walk = (n) => { names.push(n.name); (n.children || []).forEach(walk); };
    walk(off.flamegraph.root);
    assert.ok(names.some((n) => /nanosleep.*_\[k\]$/.test(n)), `no kernel nanosleep frame in ${names.join(', ')}`);
    if (os.arch() === 'x64') assert.ok(names.includes(SLEEPY), `${SLEEPY} is not in ${names.join(', ')}`);
    // Blocks of 1 s each: the blocked time is most of the span.
    assert.ok(off.flamegraph.total > 0.5 * (end - t0) * 1e6, `blocked ${off.flamegraph.total} ns of a ${end - t0} ms span`);
    // The thread is on a CPU only for its few wake-ups (microseconds each), so a 99 Hz sample
    // rarely lands there (one did in a CI run); blocked, it takes none.
    const cpu = await (await fetch(`${url}?kind=cpu`)).json();
    assert.ok(cpu.flamegraph.samples <= 2, `a thread that sleeps but for its wake-ups took ${cpu.flamegraph.samples} CPU samples`);

    await page.goto(`${base}/#/trace/${sleepTrace}`);
    await page.waitForSelector('.wf-span');
    await page.click(`.wf-span[data-span-id="${slept}"]`);
    await page.waitForSelector('.span-detail .span-profile-off-cpu .flame-canvas');
    assert.match(await page.innerText('.span-profile-off-cpu .span-profile-note'), /blocked/);
    const cpuText = cpu.flamegraph.samples ? new RegExp(`${cpu.flamegraph.samples} samples? ·`) : /no CPU samples/;
    await page.waitForFunction((re) => new RegExp(re).test(document.querySelector('.span-detail .span-profile-cpu')?.textContent || ''), cpuText.source);
    await shot('span-off-cpu');

    await page.goto(`${base}/#/profiles?pid=${pid}&kind=off_cpu`);
    await waitWithReload('.page-profiles .flame-canvas', 30_000);
    assert.match(await page.innerText('.page-profiles .results-summary'), /blocked/);
    noProblems();
  });

  // The security sensor needs root too; the alert comes from the starter rule
  // credential-read-by-non-root-binary: a binary owned by nobody reads /etc/shadow.
  it('raises an alert on the Security page and shows its service around it', { skip: profSkip }, async () => {
    assert.ok(isRoot, 'OXEYE_REQUIRE_EBPF=1 but the test is not running as root');
    const src = path.join(dataDir, 'peek.c');
    const bin = path.join(dataDir, 'peek');
    fs.writeFileSync(src, `#include <fcntl.h>
#include <unistd.h>
int main(void) { char b[64]; usleep(800000); int fd = open("/etc/shadow", O_RDONLY); if (fd >= 0) { read(fd, b, sizeof b); close(fd); } usleep(1500000); return 0; }
`);
    const cc = spawn('clang', ['-O2', '-o', bin, src], { stdio: 'inherit' });
    assert.equal(await new Promise((r) => cc.on('exit', r)), 0, 'compiling the reader failed');
    fs.chownSync(bin, 65534, 65534);
    const svc = `e2e-peek-${RUN}`;
    const peek = spawn(bin, [], { stdio: 'ignore', env: { ...process.env, OTEL_SERVICE_NAME: svc } });
    const exited = new Promise((r) => peek.on('exit', r));
    const pid = peek.pid;
    const t = Date.now();
    await post(`${otlpBase}/v1/traces`, {
      resourceSpans: [{ resource: { attributes: [str('service.name', svc), int('process.pid', pid)] }, scopeSpans: [{ scope: { name: 'e2e.peek' }, spans: [
        { traceId: hex(16), spanId: hex(8), name: 'GET /secrets', kind: 2, startTimeUnixNano: nanos(t - 20), endTimeUnixNano: nanos(t), status: { code: 2 } },
      ] }] }],
    });
    assert.equal(await exited, 0, 'the reader failed');

    await page.goto(`${base}/#/security`);
    const row = `.sec-alerts tr[data-severity="high"]:has-text("${svc}")`;
    await waitWithReload(row, 30_000);
    const text = await page.innerText(row);
    assert.match(text, /credential-read-by-non-root-binary/);
    assert.match(text, new RegExp(`peek \\(${pid}\\)`));
    assert.match(text, /opened \/etc\/shadow/);
    const colour = await page.$eval(`${row} .sec-sev`, (el) => getComputedStyle(el).backgroundColor);
    assert.equal(colour, 'rgb(253, 228, 211)', 'high alerts have their own colour');
    await page.waitForSelector('.sec-timeline .uplot canvas');
    await shot('security-alerts');

    await page.click(`${row} td.sec-summary a`);
    await page.waitForSelector('.sec-alert-title');
    assert.match(await page.innerText('.sec-alert-title'), /\/etc\/shadow/);
    const detail = await page.innerText('.sec-alert-detail');
    assert.match(detail, new RegExp(`service\\s+${svc}`));
    assert.match(detail, new RegExp(`peek \\(pid ${pid}\\)`));
    await page.waitForSelector('.sec-red .uplot canvas');
    assert.match(await page.innerText('.sec-evidence'), new RegExp(`"pid": ${pid}`));
    await shot('security-alert');

    // Acknowledge asks for the API token once; the status is stored with the alert.
    const token = fs.readFileSync(path.join(dataDir, 'api-token'), 'utf8').trim();
    page.once('dialog', (d) => d.accept(token));
    await page.click('.sec-alert-actions .sec-acknowledge');
    await page.waitForFunction(() => /acknowledged \(since/.test(document.querySelector('.sec-alert-detail')?.textContent || ''));
    assert.equal(await page.$('.sec-alert-actions .sec-accept'), null, 'a rule alert cannot be accepted as normal');
    await page.goto(`${base}/#/security?status=acknowledged`);
    await waitWithReload(`.sec-alerts tr[data-status="acknowledged"]:has-text("${svc}")`);

    await page.goto(`${base}/#/security?tab=events&kind=file_open&service=${svc}`);
    await waitWithReload(`.sec-events tr[data-pid="${pid}"]:has-text("/etc/shadow")`);

    // The service's row on the Services page carries its alerts.
    await page.goto(`${base}/#/services`);
    await waitWithReload(`tr[data-service="${svc}"] .service-alerts`);
    assert.match(await page.innerText(`tr[data-service="${svc}"] .service-alerts`), /^1 alert$/i);

    // Reset forgets what the executable learned (the token is kept for the session).
    await page.goto(`${base}/#/security?tab=baselines`);
    const baseline = `.sec-baselines tr[data-exe="${bin}"]`;
    await waitWithReload(baseline);
    await page.click(`${baseline} .sec-reset`);
    await page.waitForFunction(() => /reset: it learns again/.test(document.querySelector('.page-security .results-summary')?.textContent || ''));
    assert.equal(await page.$(baseline), null, 'its baseline is gone');
    noProblems();
  });
  step('lists the injected anomaly and shows its chart and evidence', async () => {
    await page.goto(`${base}/#/anomalies?service=${QUEUE_SVC}`);
    // The job runs every 5 s; the first run reads the whole history.
    await waitWithReload('.anomalies-table tr[data-anomaly]', 40_000);
    const rows = page.locator('.anomalies-table tr[data-anomaly]', { hasText: QUEUE });
    assert.ok(await rows.count() >= 1, `no anomaly on ${QUEUE}: ${await page.innerText('.anomalies-table')}`);
    // Load to latency: the service's row (a handful of spans: too few for a fit).
    await page.waitForSelector(`.load-latency-table tr[data-service="${QUEUE_SVC}"]`);
    assert.match(await page.innerText(`.load-latency-table tr[data-service="${QUEUE_SVC}"]`), /too few samples/);
    await shot('anomalies');
    await rows.first().locator('a').click();
    await page.waitForFunction(() => /^#\/anomalies\/[0-9a-f]{16}$/.test(location.hash));
    await page.waitForSelector('.page-anomalies .chart-wrap .uplot canvas');
    assert.match(await page.innerText('.anomaly-summary'), new RegExp(QUEUE.replace(/\./g, '\\.')));
    await page.waitForSelector('.evidence-list li');
    const kinds = await page.locator('.evidence-list li').evaluateAll((els) => els.map((e) => e.dataset.kind));
    const text = await page.innerText('.evidence-list');
    assert.ok(kinds.includes('deploy'), `no deploy among the evidence: ${text}`);
    assert.match(text, /deployed 2\.0 \(was 1\.0\)/);
    assert.ok(kinds.includes('resource'), `the CPU that rose with it is not among the evidence: ${text}`);
    assert.match(text, /system\.cpu\.utilization/);
    await shot('anomaly-detail');
    // The metric explorer marks it and overlays a forecast with its band.
    await page.goto(`${base}/#/metrics?name=${encodeURIComponent(QUEUE)}&service=${QUEUE_SVC}&forecast=1`);
    await page.waitForSelector('.chart-wrap .uplot canvas');
    await page.waitForFunction(() => /forecast high/.test(document.querySelector('.chart-wrap .u-legend')?.textContent || ''));
    assert.match(await page.innerText('.chart-summary'), /\d+ anomal/);
    await shot('metrics-forecast');
    noProblems();
  }, { independent: true });
  it('boosts a service under high traffic and diffs the window against normal traffic', { skip: profSkip }, async () => {
    assert.ok(isRoot, 'OXEYE_REQUIRE_EBPF=1 but the test is not running as root');
    const HOT = 'oxeye_web_busy_function';
    const src = path.join(dataDir, 'busy.c');
    const bin = path.join(dataDir, 'busy');
    fs.writeFileSync(src, `#include <time.h>
volatile double sink;
__attribute__((noinline)) void ${HOT}(long n) { double x = 0; for (long i = 0; i < n; i++) x += i * 0.5; sink += x; }
int main(void) { time_t t = time(0); while (time(0) - t < 90) ${HOT}(2000000); return 0; }
`);
    const cc = spawn('clang', ['-O2', '-g', '-fno-omit-frame-pointer', '-o', bin, src], { stdio: 'inherit' });
    assert.equal(await new Promise((r) => cc.on('exit', r)), 0, 'compiling the busy service failed');
    const svc = `e2e-busy-${RUN}`;
    const busy = spawn(bin, [], { stdio: 'ignore', env: { ...process.env, OTEL_SERVICE_NAME: svc } });
    try {
      const requests = (n) => ({
        resourceSpans: [{
          resource: { attributes: [str('service.name', svc), int('process.pid', busy.pid)] },
          scopeSpans: [{
            scope: { name: 'e2e.busy' },
            spans: Array.from({ length: n }, () => ({
              traceId: hex(16), spanId: hex(8), name: 'GET /busy', kind: 2,
              startTimeUnixNano: nanos(Date.now() - 1), endTimeUnixNano: nanos(Date.now()),
              attributes: [int('thread.id', busy.pid)],
            })),
          }],
        }],
      });
      // A few seconds of normal traffic, then 60 requests a second until the process is boosted.
      for (let i = 0; i < 5; i++) { await post(`${otlpBase}/v1/traces`, requests(1)); await sleep(1000); }
      const deadline = Date.now() + 60_000;
      for (;;) {
        await post(`${otlpBase}/v1/traces`, requests(60));
        await sleep(1000);
        const status = await (await fetch(`${base}/api/v1/profiles/status`)).json();
        if ((status.boosted || []).some((b) => b.pid === busy.pid && b.service === svc)) break;
        assert.ok(Date.now() < deadline, `the burst never boosted the busy service: ${JSON.stringify(status)}`);
      }
      await sleep(5000); // boosted samples reach the store
      await page.goto(`${base}/#/profiles?service=${svc}`);
      const row = `.high-traffic-windows tr[data-service="${svc}"]`;
      await waitWithReload(row, 30_000);
      assert.match(await page.innerText(row), /\/s/);
      await page.locator(`${row} .open-window-diff`).click();
      await page.waitForFunction((s) => (document.querySelector('.flame-legend')?.textContent || '').includes(`High traffic of ${s}`), svc);
      await page.waitForSelector('.page-profiles .flame-canvas');
      await page.fill('input[name=search]', HOT);
      await page.waitForFunction(() => /matched/.test(document.querySelector('.flame-search-result')?.textContent || ''));
      await page.locator('.high-traffic').scrollIntoViewIfNeeded();
      await shot('high-traffic');
    } finally {
      busy.kill('SIGKILL');
    }
    noProblems();
  });

  step('shows the API error message for an unknown trace', async () => {
    await page.goto(`${base}/#/trace/${'0'.repeat(32)}`);
    await page.waitForSelector('.page-trace .notice');
    assert.match(await page.innerText('.page-trace .notice'), /not found/i);
    // The 404 itself is logged by Chromium as a failed resource load; that one is expected.
    const unexpected = problems.filter((p) => !/status of 404/.test(p));
    problems.length = 0;
    assert.deepEqual(unexpected, []);
  }, { independent: true });
});
