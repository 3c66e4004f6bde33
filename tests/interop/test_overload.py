"""Back-pressure: with a tiny ingest queue (--queue-bytes 65536) a flood of large OTLP requests
must get 429/503 + Retry-After (HTTP) and RESOURCE_EXHAUSTED/UNAVAILABLE (gRPC), memory must stay
bounded, and the server must still answer afterwards."""

from __future__ import annotations

import collections
import threading
import time

import grpc
import psutil
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from conftest import wait_for
from otlp_helpers import big_request, post_otlp_protobuf, unique

THREADS = 16
REQUESTS_PER_THREAD = 40
FLOOD_SECONDS = 25
RSS_LIMIT = 500 * 1024 * 1024


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.max_rss = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                self.max_rss = max(self.max_rss, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)


def test_overload_backpressure(oxeye_factory, interop_report):
    srv = oxeye_factory(extra_args=["--queue-bytes", "65536"], name="oxeye-overload")
    svc = unique("it-overload")
    body = big_request(svc).SerializeToString()
    interop_report(f"[overload] request size {len(body)} bytes, {THREADS} threads x {REQUESTS_PER_THREAD}")
    rss = RssSampler(srv.pid)
    rss.start()

    # ---------------- OTLP/HTTP flood ----------------
    statuses: collections.Counter = collections.Counter()
    missing_retry_after: list = []
    errors: collections.Counter = collections.Counter()
    lock = threading.Lock()
    t_end = time.monotonic() + FLOOD_SECONDS

    def http_worker():
        s = requests.Session()
        for _ in range(REQUESTS_PER_THREAD):
            if time.monotonic() > t_end:
                return
            try:
                r = s.post(f"{srv.otlp_http}/v1/traces", data=body,
                           headers={"Content-Type": "application/x-protobuf"}, timeout=30)
            except requests.RequestException as e:
                with lock:
                    errors[type(e).__name__] += 1
                continue
            with lock:
                statuses[r.status_code] += 1
                if r.status_code in (429, 503) and not r.headers.get("Retry-After"):
                    missing_retry_after.append(r.status_code)

    workers = [threading.Thread(target=http_worker) for _ in range(THREADS)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    interop_report(f"[overload] HTTP flood {time.monotonic() - t0:.1f}s: statuses={dict(statuses)} client errors={dict(errors)}")
    assert srv.alive(), "server died during the HTTP flood"
    rejected = statuses[429] + statuses[503]
    assert rejected > 0, f"no 429/503 from a {THREADS}-thread flood against a 64 KiB queue: {dict(statuses)}"
    assert not missing_retry_after, f"{len(missing_retry_after)} 429/503 answers without Retry-After"
    unexpected = {k: v for k, v in statuses.items() if k not in (200, 429, 503)}
    assert not unexpected, f"unexpected statuses under load: {unexpected}"
    assert not errors, f"connections failed instead of being answered 429/503: {dict(errors)}"

    # ---------------- gRPC flood ----------------
    req = big_request(svc)
    codes: collections.Counter = collections.Counter()
    with grpc.insecure_channel(srv.grpc_target) as ch:
        stub = trace_service_pb2_grpc.TraceServiceStub(ch)
        t_end = time.monotonic() + FLOOD_SECONDS
        t0 = time.monotonic()
        for _round in range(REQUESTS_PER_THREAD):
            if time.monotonic() > t_end:
                break
            futures = [stub.Export.future(req, timeout=30) for _ in range(THREADS)]
            for f in futures:
                try:
                    f.result()
                    codes["OK"] += 1
                except grpc.RpcError as e:
                    codes[e.code().name] += 1
            if codes["RESOURCE_EXHAUSTED"] + codes["UNAVAILABLE"] >= 20:
                break
    interop_report(f"[overload] gRPC flood {time.monotonic() - t0:.1f}s: codes={dict(codes)}")
    assert srv.alive(), "server died during the gRPC flood"
    assert codes["RESOURCE_EXHAUSTED"] + codes["UNAVAILABLE"] > 0, f"no RESOURCE_EXHAUSTED/UNAVAILABLE: {dict(codes)}"
    unexpected = {k: v for k, v in codes.items() if k not in ("OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE")}
    assert not unexpected, f"unexpected gRPC codes under load: {unexpected}"

    rss.done.set()
    rss.join()
    interop_report(f"[overload] max RSS {rss.max_rss / 2**20:.1f} MiB")
    assert rss.max_rss < RSS_LIMIT, f"RSS reached {rss.max_rss / 2**20:.1f} MiB (limit 500 MiB)"

    # ---------------- still healthy ----------------
    status = srv.get_json("/api/v1/status")
    assert status["queue"]["capacity_bytes"] == 65536, status["queue"]

    small = big_request(svc, n_spans=1, payload=10)
    span_id = small.resource_spans[0].scope_spans[0].spans[0].span_id.hex()

    def accepted():
        r = post_otlp_protobuf(f"{srv.otlp_http}/v1/traces", small)
        assert r.status_code in (200, 429, 503), (r.status_code, r.text[:200])
        return r.status_code == 200

    wait_for(accepted, timeout=30, interval=0.5, what="a small request to be accepted after the flood")
    with grpc.insecure_channel(srv.grpc_target) as ch:
        trace_service_pb2_grpc.TraceServiceStub(ch).Export(big_request(svc, n_spans=1, payload=10), timeout=30)
    res = srv.query(f"SELECT count(*) FROM otel_traces WHERE SpanId = '{span_id}'")
    assert int(res["rows"][0][0]) == 1, res
    assert srv.alive()
