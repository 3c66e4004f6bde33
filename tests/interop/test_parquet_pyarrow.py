"""An independent reader: after `POST /api/v1/admin/flush`, pyarrow must find the spans in the
Parquet files oxeye wrote under `<data-dir>/otel_traces/`."""

from __future__ import annotations

import glob
import os

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from otlp_helpers import assert_attrs, record_exports, span_exporter, unique


def _parquet_files(data_dir) -> list[str]:
    return sorted(glob.glob(os.path.join(str(data_dir), "otel_traces", "**", "*.parquet"), recursive=True))


def _map_to_dict(v) -> dict:
    if v is None:
        return {}
    if isinstance(v, dict):
        return v
    return dict(v)  # pyarrow map -> list of (key, value) tuples


def test_flushed_parquet_is_readable_by_pyarrow(oxeye):
    svc = unique("it-parquet")
    sink: list = []
    tp = TracerProvider(resource=Resource.create({"service.name": svc}))
    tp.add_span_processor(SimpleSpanProcessor(record_exports(span_exporter("http-protobuf", oxeye), sink)))
    tracer = tp.get_tracer("interop.parquet")
    n = 25
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i % 5}", kind=SpanKind.SERVER,
                                          attributes={"i": i, "even": i % 2 == 0, "label": f"row {i}"}):
            with tracer.start_as_current_span("child", attributes={"i": i}):
                pass
    tp.force_flush()
    tp.shutdown()
    spans = [s for batch, _ in sink for s in batch]
    assert len(spans) == 2 * n
    assert all(r == SpanExportResult.SUCCESS for _, r in sink)

    flushed = oxeye.flush()
    assert isinstance(flushed.get("flushed_rows"), int) and flushed["flushed_rows"] >= 2 * n, flushed

    files = _parquet_files(oxeye.data_dir)
    assert files, (f"no Parquet files under {oxeye.data_dir}/otel_traces after flush; tree: "
                   f"{[os.path.join(r, f) for r, _, fs in os.walk(oxeye.data_dir) for f in fs]}")

    # every file must be a complete Parquet file on its own
    tables = []
    for f in files:
        meta = pq.read_metadata(f)
        assert meta.num_rows >= 0
        tables.append(pq.read_table(f))
    schema_desc = str(tables[0].schema)
    for col in ("TraceId", "SpanId", "ParentSpanId", "SpanName", "ServiceName", "Duration", "SpanAttributes"):
        assert col in tables[0].column_names, f"column {col} missing; schema:\n{schema_desc}"
    assert pa.types.is_map(tables[0].schema.field("SpanAttributes").type), schema_desc

    # the dataset API over the whole directory must work too (same schema in every file)
    dataset = ds.dataset(files, format="parquet")
    rows = dataset.to_table(
        columns=["TraceId", "SpanId", "ParentSpanId", "SpanName", "ServiceName", "Duration", "SpanAttributes",
                 "ResourceAttributes"],
        filter=ds.field("ServiceName") == svc,
    ).to_pylist()
    by_id = {r["SpanId"]: r for r in rows}
    assert len(rows) == len(by_id) == 2 * n, f"expected {2 * n} unique rows for {svc}, got {len(rows)} ({len(by_id)} unique)"

    for s in spans:
        ctx = s.get_span_context()
        sid = format_span_id(ctx.span_id)
        assert sid in by_id, f"span {sid} ({s.name}) not in Parquet"
        r = by_id[sid]
        assert r["TraceId"] == format_trace_id(ctx.trace_id), r
        assert r["SpanName"] == s.name, r
        assert r["ServiceName"] == svc, r
        want_parent = format_span_id(s.parent.span_id) if s.parent else ""
        assert (r["ParentSpanId"] or "") == want_parent, r
        assert int(r["Duration"]) == s.end_time - s.start_time, f"Duration {r['Duration']} != {s.end_time - s.start_time} ns"
        assert_attrs(_map_to_dict(r["SpanAttributes"]), dict(s.attributes), f"Parquet SpanAttributes of {s.name}",
                     exact=True)
        # the SDK's resource, on every row (oxeye's enrichment may add host and process keys)
        assert_attrs(_map_to_dict(r["ResourceAttributes"]), dict(tp.resource.attributes),
                     f"Parquet ResourceAttributes of {s.name}")

    status = oxeye.get_json("/api/v1/status")
    t = status["store"]["tables"]["otel_traces"]
    assert t["files"] >= 1 and t["file_bytes"] > 0, status

    # the API still sees the spans once they live in Parquet
    q = oxeye.query(f"SELECT count(*) FROM otel_traces WHERE ServiceName = '{svc}'")
    assert int(q["rows"][0][0]) == 2 * n, q
