"""OTLP client helpers: SDK exporters for the three transports, an OTLP/JSON exporter built
from the SDK's own protobuf encoders, and comparison helpers for the oxeye API.

The Python SDK has no OTLP/JSON exporter. `JsonHttp*Exporter` encode with the SDK's encoders
(`opentelemetry.exporter.otlp.proto.common.*_encoder`), convert with
`google.protobuf.json_format.MessageToDict` and rewrite trace/span ids from base64 (protobuf JSON
mapping of `bytes`) to lowercase hex, which is what OTLP/JSON requires.
"""

from __future__ import annotations

import base64
import json
import math
import os
import time
import uuid
from typing import Any, Sequence

import grpc
import requests
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

TRANSPORTS = ["grpc", "http-protobuf", "http-json-via-sdk-encoders-hex-ids"]
JSON = TRANSPORTS[2]

_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def hex_ids(obj: Any) -> Any:
    """Rewrite base64 ``traceId``/``spanId``/``parentSpanId`` (protobuf JSON) to lowercase hex."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in _ID_KEYS and isinstance(v, str):
                out[k] = base64.b64decode(v).hex()
            else:
                out[k] = hex_ids(v)
        return out
    if isinstance(obj, list):
        return [hex_ids(v) for v in obj]
    return obj


def to_otlp_json(message) -> dict:
    """protobuf message -> OTLP/JSON dict (lowerCamelCase, integer enums, hex ids)."""
    return hex_ids(MessageToDict(message, use_integers_for_enums=True))


def post_otlp_json(url: str, message, timeout: float = 30) -> requests.Response:
    body = json.dumps(to_otlp_json(message)).encode()
    return requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=timeout)


def post_otlp_protobuf(url: str, message, timeout: float = 30, headers: dict | None = None) -> requests.Response:
    h = {"Content-Type": "application/x-protobuf"}
    h.update(headers or {})
    return requests.post(url, data=message.SerializeToString(), headers=h, timeout=timeout)


class JsonHttpSpanExporter(SpanExporter):
    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.last_response: requests.Response | None = None

    def export(self, spans: Sequence) -> SpanExportResult:
        self.last_response = r = post_otlp_json(self.endpoint, encode_spans(spans))
        return SpanExportResult.SUCCESS if r.status_code == 200 else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class JsonHttpMetricExporter(MetricExporter):
    def __init__(self, endpoint: str, **kw):
        super().__init__(**kw)
        self.endpoint = endpoint
        self.last_response: requests.Response | None = None

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self.last_response = r = post_otlp_json(self.endpoint, encode_metrics(metrics_data))
        return MetricExportResult.SUCCESS if r.status_code == 200 else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


class JsonHttpLogExporter(LogRecordExporter):
    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.last_response: requests.Response | None = None

    def export(self, batch: Sequence) -> LogRecordExportResult:
        self.last_response = r = post_otlp_json(self.endpoint, encode_logs(batch))
        return LogRecordExportResult.SUCCESS if r.status_code == 200 else LogRecordExportResult.FAILURE

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def record_exports(exporter, sink: list):
    """Wrap ``exporter.export`` so every (batch, result) is appended to ``sink``."""
    orig = exporter.export

    def export(batch, *a, **kw):
        res = orig(batch, *a, **kw)
        sink.append((batch, res))
        return res

    exporter.export = export
    return exporter


def span_exporter(transport: str, srv, **kw):
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(endpoint=srv.grpc_target, insecure=True, timeout=kw.get("timeout", 10))
    if transport == "http-protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(endpoint=f"{srv.otlp_http}/v1/traces", timeout=kw.get("timeout", 10))
    if transport == JSON:
        return JsonHttpSpanExporter(f"{srv.otlp_http}/v1/traces")
    raise ValueError(transport)


def metric_exporter(transport: str, srv):
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        return OTLPMetricExporter(endpoint=srv.grpc_target, insecure=True, timeout=10)
    if transport == "http-protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        return OTLPMetricExporter(endpoint=f"{srv.otlp_http}/v1/metrics", timeout=10)
    if transport == JSON:
        return JsonHttpMetricExporter(f"{srv.otlp_http}/v1/metrics")
    raise ValueError(transport)


def log_exporter(transport: str, srv):
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        return OTLPLogExporter(endpoint=srv.grpc_target, insecure=True, timeout=10)
    if transport == "http-protobuf":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        return OTLPLogExporter(endpoint=f"{srv.otlp_http}/v1/logs", timeout=10)
    if transport == JSON:
        return JsonHttpLogExporter(f"{srv.otlp_http}/v1/logs")
    raise ValueError(transport)


def big_request(svc: str, n_spans: int = 400, payload: int = 600) -> trace_service_pb2.ExportTraceServiceRequest:
    """~n_spans * (payload + 100) bytes of valid OTLP."""
    spans = []
    now = time.time_ns()
    for _ in range(n_spans):
        spans.append(trace_pb2.Span(
            trace_id=os.urandom(16), span_id=os.urandom(8), name="flood",
            kind=trace_pb2.Span.SPAN_KIND_SERVER,
            start_time_unix_nano=now - 1_000_000, end_time_unix_nano=now,
            attributes=[common_pb2.KeyValue(key="blob", value=common_pb2.AnyValue(string_value="x" * payload))],
        ))
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource_pb2.Resource(attributes=[
            common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=svc))]),
        scope_spans=[trace_pb2.ScopeSpans(spans=spans)],
    )])


# -- raw gRPC -------------------------------------------------------------------------------

GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}


def grpc_raw_call(target: str, signal: str, payload: bytes, timeout: float = 10, metadata=None):
    """Unary call with raw bytes as the request; returns (status_code, details)."""
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary(GRPC_METHODS[signal], request_serializer=None, response_deserializer=None)
        try:
            call(payload, timeout=timeout, metadata=metadata)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details() or ""


# -- comparison helpers ------------------------------------------------------------------

def expected_attr_string(v: Any) -> str:
    """How the contract renders an attribute value: strings as is, ints/doubles in decimal,
    booleans true/false, arrays and maps as JSON."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v))
    if isinstance(v, dict):
        return json.dumps(v)
    raise TypeError(type(v))


def assert_attrs(got: dict, expected: dict, where: str, exact: bool = False) -> None:
    """Compare an API attribute map against SDK attribute values (JSON values compared parsed)."""
    assert isinstance(got, dict), f"{where}: attributes should be an object, got {got!r}"
    problems = []
    for k, v in expected.items():
        if k not in got:
            problems.append(f"missing {k!r}")
            continue
        g = got[k]
        want = expected_attr_string(v)
        if isinstance(v, (list, tuple, dict)):
            try:
                ok = isinstance(g, str) and json.loads(g) == json.loads(want)
            except ValueError:
                ok = False
        elif isinstance(v, float) and isinstance(g, str):
            try:
                ok = g == want or float(g) == v
            except ValueError:
                ok = False
        else:
            ok = g == want
        if not ok:
            problems.append(f"{k!r}: expected {want!r} (string), got {g!r}")
    if exact:
        extra = set(got) - set(expected)
        if extra:
            problems.append(f"unexpected keys {sorted(extra)}")
    assert not problems, f"{where}: attribute mismatches: {problems}; full map: {got}"


def as_int(v: Any) -> int:
    return int(v) if not isinstance(v, float) else int(round(v))


def close(a: float, b: float, rel: float = 1e-9, abs_: float = 1e-9) -> bool:
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)


def is_cumulative(temporality: Any) -> bool:
    return temporality == 2 or "cumulative" in str(temporality).lower()


def is_delta(temporality: Any) -> bool:
    return temporality == 1 or "delta" in str(temporality).lower()
