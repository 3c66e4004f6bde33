"""The OpenTelemetry Python SDK sends traces, metrics and logs to oxeye over gRPC, OTLP/HTTP
protobuf and OTLP/HTTP JSON; everything is read back through the HTTP API and compared field
by field with what the SDK itself exported (captured by wrapping the exporter's ``export``).

OTLP/JSON: the Python SDK has no JSON exporter, so the JSON transport encodes with the SDK's
own protobuf encoders, converts with ``MessageToDict`` and rewrites ids to lowercase hex
(see ``otlp_helpers.JsonHttp*Exporter``); its test ids say so:
``http-json-via-sdk-encoders-hex-ids``.

Summaries: the Python SDK cannot emit them, so that test builds an OTLP
``ExportMetricsServiceRequest`` from ``opentelemetry.proto`` classes and sends it directly.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation, ExponentialBucketHistogramAggregation, View,
)
from opentelemetry.metrics import Observation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import (
    Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState, format_span_id, format_trace_id,
)

from conftest import wait_for
from otlp_helpers import (
    JSON, TRANSPORTS, as_int, assert_attrs, close, expected_attr_string, is_cumulative, log_exporter,
    metric_exporter, post_otlp_json, post_otlp_protobuf, record_exports, span_exporter, unique,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SPAN_ATTRS = {
    "http.route": "/checkout",
    "http.response.status_code": 200,
    "big.int": 9007199254740993,  # 2^53 + 1: must survive without float rounding
    "neg.int": -7,
    "ratio": 0.25,
    "cache.hit": True,
    "cache.cold": False,
    "tags": ["a", "b c"],
    "ids": [1, 2, 3],
    "weights": [0.5, 1.5],
    "flags": [True, False],
}


def _empty(v) -> bool:
    return v is None or v == ""


def _get_trace(srv, trace_id: str, n_spans: int) -> dict:
    def probe():
        r = srv.get(f"/api/v1/traces/{trace_id}")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, f"GET /api/v1/traces/{trace_id} -> {r.status_code}: {r.text[:300]}"
        body = r.json()
        return body if len(body.get("spans", [])) >= n_spans else None

    return wait_for(probe, what=f"trace {trace_id} with {n_spans} spans")


def _assert_span(api: dict, sdk, svc: str, resource_expect: dict, scope=("interop.scope", "1.2.3")) -> None:
    ctx = sdk.get_span_context()
    where = f"span {sdk.name!r}"
    assert api["trace_id"] == format_trace_id(ctx.trace_id), where
    assert api["span_id"] == format_span_id(ctx.span_id), where
    if sdk.parent is None:
        assert _empty(api.get("parent_span_id")), f"{where}: root parent_span_id {api.get('parent_span_id')!r}"
    else:
        assert api["parent_span_id"] == format_span_id(sdk.parent.span_id), where
    assert api["name"] == sdk.name
    assert api["kind"] == f"SPAN_KIND_{sdk.kind.name}", f"{where}: kind {api['kind']!r}"
    assert api["service"] == svc, where
    assert api["start_time_unix_nano"] == str(sdk.start_time), f"{where}: start_time_unix_nano must be the string {str(sdk.start_time)!r}, got {api['start_time_unix_nano']!r}"
    assert api["end_time_unix_nano"] == str(sdk.end_time), f"{where}: end_time_unix_nano {api['end_time_unix_nano']!r}"
    dur = sdk.end_time - sdk.start_time
    assert as_int(api["duration_ns"]) == dur, f"{where}: duration_ns {api['duration_ns']!r} != {dur}"
    assert abs(float(api["duration_ms"]) - dur / 1e6) <= 1.0, f"{where}: duration_ms {api['duration_ms']!r} vs {dur / 1e6}"
    assert abs(float(api["start_ms"]) - sdk.start_time / 1e6) <= 1.0, f"{where}: start_ms {api['start_ms']!r}"
    assert api["status_code"] == f"STATUS_CODE_{sdk.status.status_code.name}", f"{where}: status_code {api['status_code']!r}"
    want_msg = sdk.status.description or ""
    assert (api.get("status_message") or "") == want_msg, f"{where}: status_message {api.get('status_message')!r}"
    assert _empty(api.get("trace_state")), f"{where}: trace_state {api.get('trace_state')!r}"
    assert_attrs(api["attributes"], dict(sdk.attributes), f"{where} attributes", exact=True)
    assert_attrs(api["resource"], resource_expect, f"{where} resource")
    assert api["scope"]["name"] == scope[0] and api["scope"]["version"] == scope[1], f"{where}: scope {api['scope']!r}"

    assert len(api["events"]) == len(sdk.events), f"{where}: events {api['events']!r}"
    for got, ev in zip(api["events"], sdk.events):
        assert got["name"] == ev.name, f"{where}: event {got!r}"
        assert as_int(got["time_unix_nano"]) == ev.timestamp, f"{where}: event time {got['time_unix_nano']!r} != {ev.timestamp}"
        assert_attrs(got["attributes"], dict(ev.attributes), f"{where} event {ev.name!r}", exact=True)

    assert len(api["links"]) == len(sdk.links), f"{where}: links {api['links']!r}"
    for got, ln in zip(api["links"], sdk.links):
        assert got["trace_id"] == format_trace_id(ln.context.trace_id), f"{where}: link {got!r}"
        assert got["span_id"] == format_span_id(ln.context.span_id), f"{where}: link {got!r}"
        # the Python SDK's OTLP encoder does not put link.trace_state on the wire (opentelemetry-python
        # 1.45 _encode_links), so nothing but "" can come back
        assert _empty(got.get("trace_state")), f"{where}: link trace_state {got.get('trace_state')!r}"
        assert_attrs(got["attributes"], dict(ln.attributes), f"{where} link", exact=True)


def _emit_trace(transport: str, srv, svc: str):
    resource = Resource.create({"service.name": svc, "interop.custom": "custom-value", "interop.transport": transport})
    sink: list = []
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(record_exports(span_exporter(transport, srv), sink)))
    tracer = tp.get_tracer("interop.scope", "1.2.3")

    linked = SpanContext(trace_id=0x5B8EFFF798038103D269B633813FC60C, span_id=0xEEE19B7EC3C1B174, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED),
                         trace_state=TraceState([("vendor", "v1"), ("other", "x")]))
    with tracer.start_as_current_span("GET /checkout", kind=SpanKind.SERVER, attributes=SPAN_ATTRS) as root:
        root.add_event("cache.miss", {"cache.key": "user:42", "attempt": 2, "fatal": False}, timestamp=time.time_ns())
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT,
                                          links=[Link(linked, {"link.reason": "retry-of", "link.n": 1})]) as child:
            child.set_attribute("db.system", "postgresql")
            time.sleep(0.005)
            child.set_status(Status(StatusCode.ERROR, "db timeout after 5s"))
        with tracer.start_as_current_span("publish receipt", kind=SpanKind.PRODUCER) as prod:
            prod.add_event("sent")
            prod.set_status(Status(StatusCode.OK))
        root.set_status(Status(StatusCode.OK))
    tp.force_flush()
    tp.shutdown()
    spans = [s for batch, _ in sink for s in batch]
    results = [res for _, res in sink]
    return resource, spans, results


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_traces_roundtrip(oxeye_module, transport):
    srv = oxeye_module
    svc = unique(f"it-traces-{transport[:12]}")
    resource, spans, results = _emit_trace(transport, srv, svc)
    assert len(spans) == 3
    assert all(r == SpanExportResult.SUCCESS for r in results), f"export results {results}"

    trace_id = format_trace_id(spans[0].get_span_context().trace_id)
    body = _get_trace(srv, trace_id, 3)
    assert body["trace_id"] == trace_id
    assert len(body["spans"]) == 3, body
    starts = [as_int(s["start_time_unix_nano"]) for s in body["spans"]]
    assert starts == sorted(starts), "spans must be ordered by start"
    by_id = {s["span_id"]: s for s in body["spans"]}
    resource_expect = {"service.name": svc, "interop.custom": "custom-value", "interop.transport": transport,
                       "telemetry.sdk.language": "python"}
    for sdk in spans:
        sid = format_span_id(sdk.get_span_context().span_id)
        assert sid in by_id, f"span {sdk.name} ({sid}) missing from {list(by_id)}"
        _assert_span(by_id[sid], sdk, svc, resource_expect)

    # The resource processor adds what the sender did not say: the host, and for a sender on this
    # host, the sending process (this pytest process).
    res = body["spans"][0]["resource"]
    assert res.get("host.name") == socket.gethostname(), res
    assert res.get("os.type") == "linux", res
    assert res.get("process.pid") == str(os.getpid()), res
    assert res.get("process.executable.path") == os.path.realpath(sys.executable), res

    # search by service
    root = next(s for s in spans if s.parent is None)
    found = srv.get_json("/api/v1/traces", service=svc)["traces"]
    assert [t["trace_id"] for t in found] == [trace_id], found
    t = found[0]
    assert t["root_service"] == svc and t["root_name"] == "GET /checkout", t
    assert t["span_count"] == 3 and t["error_count"] == 1, t
    assert t["services"] == [svc], t
    assert abs(float(t["duration_ms"]) - (root.end_time - root.start_time) / 1e6) <= 1.0, t
    assert abs(float(t["start_ms"]) - root.start_time / 1e6) <= 1.0, t


def test_trace_search_filters_and_services(oxeye_module):
    srv = oxeye_module
    svc = unique("it-filters")
    _, spans, results = _emit_trace("grpc", srv, svc)
    assert all(r == SpanExportResult.SUCCESS for r in results)
    trace_id = format_trace_id(spans[0].get_span_context().trace_id)
    _get_trace(srv, trace_id, 3)

    def ids(**params):
        return [t["trace_id"] for t in srv.get_json("/api/v1/traces", service=svc, **params)["traces"]]

    now = int(time.time() * 1000)
    assert ids(operation="GET /checkout") == [trace_id]
    assert ids(operation="no such op") == []
    assert ids(status="error") == [trace_id], "status=error should match a trace with an error span"
    assert ids(attr="http.route=/checkout") == [trace_id], "span attribute filter"
    assert ids(attr="interop.custom=custom-value") == [trace_id], "resource attribute filter"
    assert ids(attr="http.route=/nope") == []
    assert ids(min_duration_ms=600_000) == []
    assert ids(start=now - 600_000, end=now + 60_000) == [trace_id]
    assert ids(start=now - 7_200_000, end=now - 3_600_000) == [], "time range must exclude it"
    assert ids(limit=1) == [trace_id]

    ops = srv.get_json("/api/v1/operations", service=svc)["operations"]
    assert "GET /checkout" in ops, ops

    services = {s["service"]: s for s in srv.get_json("/api/v1/services")["services"]}
    assert svc in services, f"{svc} not in {list(services)}"
    s = services[svc]
    # entry spans: the SERVER root only (it is OK); the CLIENT error span is not an entry span
    assert s["spans"] == 1 and s["errors"] == 0, s
    for k in ("rate", "error_rate", "p50_ms", "p95_ms", "p99_ms"):
        assert k in s, f"{k} missing from {s}"

    assert srv.get(f"/api/v1/traces/{'0' * 31}1").status_code == 404


# ----------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------

def _sdk_points(sink) -> dict:
    """name -> (metric, {frozenset(attrs): last data point}) from the last successful export."""
    out: dict = {}
    for data, _res in sink:
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    entry = out.setdefault(m.name, [m, {}])
                    entry[0] = m
                    for dp in m.data.data_points:
                        entry[1][frozenset((k, expected_attr_string(v)) for k, v in dp.attributes.items())] = dp
    return out


def _api_series(srv, name: str, svc: str, n_series: int) -> dict:
    def probe():
        r = srv.get("/api/v1/metrics/points", name=name, service=svc)
        if r.status_code == 404:
            return None
        assert r.status_code == 200, f"points {name}: {r.status_code} {r.text[:300]}"
        body = r.json()
        return body if len(body.get("series", [])) >= n_series and all(s["points"] for s in body["series"]) else None

    return wait_for(probe, what=f"{n_series} series of {name} for {svc}")


def _last_point(series: dict) -> dict:
    return max(series["points"], key=lambda p: (float(p["t"]), as_int(p.get("time_unix_nano", 0))))


def _check_time(p: dict, dp, where: str) -> None:
    assert abs(float(p["t"]) - dp.time_unix_nano / 1e6) <= 1.0, f"{where}: t {p['t']!r} vs {dp.time_unix_nano}"
    if "time_unix_nano" in p:
        assert as_int(p["time_unix_nano"]) == dp.time_unix_nano, f"{where}: time_unix_nano {p['time_unix_nano']!r}"


def _strip_zeros(counts) -> list:
    c = [int(x) for x in counts]
    while c and c[-1] == 0:
        c.pop()
    return c


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metrics_roundtrip(oxeye_module, transport):
    srv = oxeye_module
    svc = unique(f"it-metrics-{transport[:12]}")
    p = unique("it").replace("-", "_")
    names = {k: f"{p}.{k}" for k in ("temperature", "requests", "queue_depth", "latency", "payload_size")}

    sink: list = []
    exporter = record_exports(metric_exporter(transport, srv), sink)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    views = [
        View(instrument_name=names["latency"], aggregation=ExplicitBucketHistogramAggregation([0, 10, 100, 1000])),
        View(instrument_name=names["payload_size"], aggregation=ExponentialBucketHistogramAggregation(max_size=40)),
    ]
    mp = MeterProvider(metric_readers=[reader], views=views,
                       resource=Resource.create({"service.name": svc, "interop.custom": "m"}))
    meter = mp.get_meter("interop.metrics", "2.0.0")

    def temps(_options):
        yield Observation(21.5, {"room": "kitchen"})
        yield Observation(-3.25, {"room": "freezer"})

    meter.create_observable_gauge(names["temperature"], callbacks=[temps], unit="Cel", description="room temperature")
    c = meter.create_counter(names["requests"], unit="{request}", description="handled requests")
    c.add(5, {"route": "/a"}); c.add(2, {"route": "/a"}); c.add(1, {"route": "/b"})
    ud = meter.create_up_down_counter(names["queue_depth"], unit="{item}", description="items queued")
    ud.add(5, {"queue": "q1"}); ud.add(-2, {"queue": "q1"})
    h = meter.create_histogram(names["latency"], unit="ms", description="request latency")
    for v in (5, 50, 50, 500, 5000):
        h.record(v, {"route": "/a"})
    eh = meter.create_histogram(names["payload_size"], unit="By", description="payload size")
    for v in (0, 1, 2, 4, 1000, 1000.5):
        eh.record(v, {"dir": "in"})

    assert mp.force_flush(), "force_flush failed"
    mp.shutdown()
    assert sink, "the SDK exported nothing"
    assert all(r == MetricExportResult.SUCCESS for _, r in sink), f"export results {[r for _, r in sink]}"
    sdk = _sdk_points(sink)

    catalog = {m["name"]: m for m in srv.get_json("/api/v1/metrics")["metrics"]}
    expect_type = {"temperature": "gauge", "requests": "sum", "queue_depth": "sum", "latency": "histogram",
                   "payload_size": "exponential_histogram"}
    for k, name in names.items():
        assert name in catalog, f"{name} not in /api/v1/metrics"
        m = catalog[name]
        assert m["type"] == expect_type[k], m
        assert m["unit"] == sdk[name][0].unit and m["description"] == sdk[name][0].description, m
        assert svc in m["services"], m

    # gauge: two series
    body = _api_series(srv, names["temperature"], svc, 2)
    assert body["type"] == "gauge" and body["unit"] == "Cel", body
    assert len(body["series"]) == 2
    for s in body["series"]:
        assert s["service"] == svc
        key = frozenset(s["attributes"].items())
        dp = sdk[names["temperature"]][1][key]
        pt = _last_point(s)
        assert close(pt["value"], dp.value), (s["attributes"], pt)
        _check_time(pt, dp, f"gauge {s['attributes']}")

    # sums
    for k, expect_vals, mono in (("requests", {"/a": 7, "/b": 1}, True), ("queue_depth", {"q1": 3}, False)):
        body = _api_series(srv, names[k], svc, len(expect_vals))
        assert body["type"] == "sum", body
        assert len(body["series"]) == len(expect_vals), body
        for s in body["series"]:
            (attr_val,) = s["attributes"].values()
            pt = _last_point(s)
            assert close(pt["value"], expect_vals[attr_val]), (k, s["attributes"], pt)
            assert pt["is_monotonic"] is mono, (k, pt)
            assert is_cumulative(pt["temporality"]), (k, pt)
            dp = sdk[names[k]][1][frozenset(s["attributes"].items())]
            _check_time(pt, dp, k)
            assert as_int(pt["start_time_unix_nano"]) == dp.start_time_unix_nano, (k, pt)

    # explicit-bucket histogram
    body = _api_series(srv, names["latency"], svc, 1)
    assert body["type"] == "histogram" and body["unit"] == "ms", body
    (s,) = body["series"]
    assert s["attributes"] == {"route": "/a"}, s
    pt = _last_point(s)
    assert as_int(pt["count"]) == 5 and close(pt["sum"], 5605), pt
    assert close(pt["min"], 5) and close(pt["max"], 5000), pt
    assert [int(x) for x in pt["bucket_counts"]] == [0, 1, 2, 1, 1], pt
    assert [float(x) for x in pt["explicit_bounds"]] == [0.0, 10.0, 100.0, 1000.0], pt
    assert close(pt["value"], 5605 / 5), pt
    _check_time(pt, sdk[names["latency"]][1][frozenset({("route", "/a")})], "histogram")

    # exponential histogram: compare with what the SDK computed
    body = _api_series(srv, names["payload_size"], svc, 1)
    assert body["type"] == "exponential_histogram", body
    (s,) = body["series"]
    pt = _last_point(s)
    dp = sdk[names["payload_size"]][1][frozenset({("dir", "in")})]
    assert as_int(pt["count"]) == dp.count == 6, pt
    assert close(pt["sum"], dp.sum) and close(pt["min"], dp.min) and close(pt["max"], dp.max), (pt, dp)
    assert as_int(pt["scale"]) == dp.scale, (pt, dp.scale)
    assert as_int(pt["zero_count"]) == dp.zero_count == 1, pt
    assert as_int(pt["positive_offset"]) == dp.positive.offset, (pt, dp.positive)
    assert [int(x) for x in pt["positive_bucket_counts"]] == list(dp.positive.bucket_counts), (pt, dp.positive)
    assert _strip_zeros(pt["negative_bucket_counts"]) == _strip_zeros(dp.negative.bucket_counts), pt
    assert close(pt["value"], dp.sum / dp.count), pt

    # series listing
    series = srv.get_json("/api/v1/metrics/series", name=names["requests"])
    assert series["type"] == "sum"
    mine = sorted(s["attributes"]["route"] for s in series["series"] if s["service"] == svc)
    assert mine == ["/a", "/b"], series

    # attr filter on points
    body = srv.get_json("/api/v1/metrics/points", name=names["requests"], service=svc, attr="route=/b")
    assert [s["attributes"] for s in body["series"]] == [{"route": "/b"}], body


def _summary_request(svc: str, name: str, now_ns: int) -> metrics_service_pb2.ExportMetricsServiceRequest:
    def kv(k, v):
        return common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))

    dp = metrics_pb2.SummaryDataPoint(
        attributes=[kv("endpoint", "/x")],
        start_time_unix_nano=now_ns - 60_000_000_000,
        time_unix_nano=now_ns,
        count=10,
        sum=12.5,
        quantile_values=[
            metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.0, value=0.1),
            metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=1.0),
            metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.9, value=2.5),
            metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=4.0),
            metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=1.0, value=4.5),
        ],
    )
    metric = metrics_pb2.Metric(name=name, unit="s", description="rpc duration summary",
                                summary=metrics_pb2.Summary(data_points=[dp]))
    return metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=resource_pb2.Resource(attributes=[kv("service.name", svc)]),
        scope_metrics=[metrics_pb2.ScopeMetrics(
            scope=common_pb2.InstrumentationScope(name="interop.summary", version="0.1"), metrics=[metric])],
    )])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_summary_built_from_otlp_proto_since_python_sdk_cannot_emit_summaries(oxeye_module, transport):
    srv = oxeye_module
    svc = unique("it-summary")
    name = unique("it").replace("-", "_") + ".rpc_duration"
    now_ns = time.time_ns()
    req = _summary_request(svc, name, now_ns)
    if transport == "grpc":
        with grpc.insecure_channel(srv.grpc_target) as ch:
            metrics_service_pb2_grpc.MetricsServiceStub(ch).Export(req, timeout=10)
    elif transport == "http-protobuf":
        r = post_otlp_protobuf(f"{srv.otlp_http}/v1/metrics", req)
        assert r.status_code == 200, (r.status_code, r.text[:300])
    else:
        assert transport == JSON
        r = post_otlp_json(f"{srv.otlp_http}/v1/metrics", req)
        assert r.status_code == 200, (r.status_code, r.text[:300])

    body = _api_series(srv, name, svc, 1)
    assert body["type"] == "summary" and body["unit"] == "s", body
    (s,) = body["series"]
    assert s["service"] == svc and s["attributes"] == {"endpoint": "/x"}, s
    (pt,) = s["points"]
    assert abs(float(pt["t"]) - now_ns / 1e6) <= 1.0, pt
    assert as_int(pt["count"]) == 10 and close(pt["sum"], 12.5), pt
    q = [(float(x["quantile"]), float(x["value"])) for x in pt["quantiles"]]
    assert q == [(0.0, 0.1), (0.5, 1.0), (0.9, 2.5), (0.99, 4.0), (1.0, 4.5)], pt
    assert close(pt["value"], 1.25), pt
    catalog = {m["name"]: m for m in srv.get_json("/api/v1/metrics")["metrics"]}
    assert catalog[name]["type"] == "summary", catalog.get(name)


# ----------------------------------------------------------------------------------------
# logs
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_logs_roundtrip_with_trace_context(oxeye_module, transport):
    srv = oxeye_module
    svc = unique(f"it-logs-{transport[:12]}")
    resource = Resource.create({"service.name": svc, "interop.custom": "logs"})
    sink: list = []
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(record_exports(log_exporter(transport, srv), sink)))
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=lp)
    pylogger = logging.getLogger(f"interop.logs.{svc}")
    pylogger.propagate = False
    pylogger.setLevel(logging.DEBUG)
    pylogger.addHandler(handler)
    tracer = TracerProvider(resource=resource).get_tracer("interop.logs-tracer")
    try:
        with tracer.start_as_current_span("handle payment") as span:
            ctx = span.get_span_context()
            pylogger.warning("payment %s failed", "P-42",
                             extra={"user.id": "u-1", "attempt": 3, "ratio": 0.5, "retry": True})
        time.sleep(0.02)
        pylogger.info("no trace context here")
        lp.force_flush()
    finally:
        pylogger.removeHandler(handler)
        lp.shutdown()
    assert len(sink) == 2 and all(r == LogRecordExportResult.SUCCESS for _, r in sink), sink
    warn_rec, info_rec = sink[0][0][0], sink[1][0][0]
    tid, sid = format_trace_id(ctx.trace_id), format_span_id(ctx.span_id)

    def probe():
        logs = srv.get_json("/api/v1/logs", service=svc)["logs"]
        return logs if len(logs) >= 2 else None

    logs = wait_for(probe, what=f"2 logs for {svc}")
    assert len(logs) == 2, logs
    info, warn = logs  # newest first
    assert warn["body"] == "payment P-42 failed" and info["body"] == "no trace context here", logs

    assert warn["service"] == svc
    assert warn["severity_text"] == "WARN" and as_int(warn["severity_number"]) == 13, warn
    assert warn["trace_id"] == tid and warn["span_id"] == sid, warn
    # W3C level 2: sampled (0x01) and, in recent SDKs, random (0x02)
    assert as_int(warn["trace_flags"]) == int(warn_rec.log_record.trace_flags) and as_int(warn["trace_flags"]) & 1, warn
    assert as_int(warn["time_unix_nano"]) == warn_rec.log_record.timestamp, warn
    assert as_int(warn["observed_time_unix_nano"]) == warn_rec.log_record.observed_timestamp, warn
    assert abs(float(warn["time_ms"]) - warn_rec.log_record.timestamp / 1e6) <= 1.0, warn
    assert_attrs(warn["attributes"], {"user.id": "u-1", "attempt": 3, "ratio": 0.5, "retry": True,
                                      "code.line.number": warn_rec.log_record.attributes["code.line.number"],
                                      "code.function.name": "test_logs_roundtrip_with_trace_context"},
                 "log attributes")
    assert_attrs(warn["resource"], {"service.name": svc, "interop.custom": "logs"}, "log resource")
    assert warn["scope"]["name"] == f"interop.logs.{svc}", warn["scope"]

    assert info["severity_text"] == "INFO" and as_int(info["severity_number"]) == 9, info
    assert _empty(info["trace_id"]) and _empty(info["span_id"]), info
    assert as_int(info["time_unix_nano"]) == info_rec.log_record.timestamp

    def bodies(**params):
        return [l["body"] for l in srv.get_json("/api/v1/logs", service=svc, **params)["logs"]]

    assert bodies(trace_id=tid) == ["payment P-42 failed"]
    assert bodies(severity="warn") == ["payment P-42 failed"]
    assert bodies(severity="13") == ["payment P-42 failed"]
    assert bodies(severity="info") == ["no trace context here", "payment P-42 failed"]
    assert bodies(q="p-42") == ["payment P-42 failed"], "q is a case-insensitive substring"
    assert bodies(limit=1) == ["no trace context here"]
