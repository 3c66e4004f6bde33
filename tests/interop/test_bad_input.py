"""Malformed input: each row of the tables is a request (OTLP/HTTP, gRPC, HTTP API) or a CLI
invocation with the status / exit code and a substring of the message the contract promises.
After all of it the server must still ingest a good request."""

from __future__ import annotations

import gzip
import os
import socket
import stat
import subprocess

import grpc
import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from conftest import clean_env, free_port, oxeye_bin_path, run_cli, wait_for
from otlp_helpers import big_request, grpc_raw_call, post_otlp_protobuf, to_otlp_json, unique

GARBAGE_PB = b"\x0a\x64truncated"  # field 1, length 100, only 9 bytes follow: never valid protobuf
BAD_JSON = b'{"resourceSpans": [ {"scopeSpans": '

# (id, path, headers, body, expected status, substring of the message or None)
OTLP_HTTP_CASES = [
    *[(f"garbage-protobuf-{s}", f"/v1/{s}", {"Content-Type": "application/x-protobuf"}, GARBAGE_PB, {400}, "protobuf")
      for s in ("traces", "metrics", "logs")],
    *[(f"malformed-json-{s}", f"/v1/{s}", {"Content-Type": "application/json"}, BAD_JSON, {400}, "json")
      for s in ("traces", "metrics", "logs")],
    ("json-wrong-shape", "/v1/traces", {"Content-Type": "application/json"}, b'{"resourceSpans": "nope"}', {400}, None),
    ("json-bad-trace-id", "/v1/traces", {"Content-Type": "application/json"},
     b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"0011223344556677","name":"x"}]}]}]}',
     {400}, None),
    ("wrong-content-type-text", "/v1/traces", {"Content-Type": "text/plain"}, b"hello", {415}, None),
    ("wrong-content-type-form", "/v1/logs", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=b", {415}, None),
    ("no-content-type", "/v1/metrics", {}, b"", {415}, None),
    ("bad-gzip", "/v1/traces", {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
     b"this is not gzip at all", {400}, "gzip"),
    ("truncated-gzip", "/v1/traces", {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
     gzip.compress(b"x" * 1000)[:20], {400}, "gzip"),
    ("unknown-path", "/v1/spans", {"Content-Type": "application/x-protobuf"}, b"", {404}, None),
]

# (id, method, path, headers, json body, expected status)
API_CASES = [
    ("flush-without-token", "POST", "/api/v1/admin/flush", {}, None, {401}),
    ("flush-wrong-token", "POST", "/api/v1/admin/flush", {"Authorization": "Bearer not-the-token"}, None, {401}),
    ("flush-basic-auth", "POST", "/api/v1/admin/flush", {"Authorization": "Basic YTpi"}, None, {401}),
    ("query-drop-table", "POST", "/api/v1/query", {}, {"sql": "DROP TABLE otel_traces"}, {400}),
    ("query-insert", "POST", "/api/v1/query", {},
     {"sql": "INSERT INTO otel_traces (SpanId) VALUES ('0011223344556677')"}, {400}),
    ("query-create-table", "POST", "/api/v1/query", {}, {"sql": "CREATE TABLE t AS SELECT 1"}, {400}),
    ("query-select-then-drop", "POST", "/api/v1/query", {}, {"sql": "SELECT 1; DROP TABLE otel_traces"}, {400}),
    ("query-copy-to-file", "POST", "/api/v1/query", {}, {"sql": "COPY (SELECT 1) TO '/tmp/oxeye-interop-copy.csv'"},
     {400}),
    ("query-syntax-error", "POST", "/api/v1/query", {}, {"sql": "SELEC nonsense FROM"}, {400}),
    ("query-unknown-table", "POST", "/api/v1/query", {}, {"sql": "SELECT * FROM no_such_table"}, {400}),
    ("query-missing-sql", "POST", "/api/v1/query", {}, {"query": "SELECT 1"}, {400, 422}),
    ("unknown-api-path", "GET", "/api/v1/nope", {}, None, {404}),
    ("unknown-trace", "GET", "/api/v1/traces/0123456789abcdef0123456789abcdef", {}, None, {404}),
    ("bad-trace-id", "GET", "/api/v1/traces/not-a-trace-id", {}, None, {400, 404}),
]


@pytest.mark.parametrize("case_id,path,headers,body,expected,substr", OTLP_HTTP_CASES,
                         ids=[c[0] for c in OTLP_HTTP_CASES])
def test_otlp_http_rejects(oxeye_module, case_id, path, headers, body, expected, substr):
    r = requests.post(f"{oxeye_module.otlp_http}{path}", data=body, headers=headers, timeout=30)
    text = r.content.decode("utf-8", "replace")
    assert r.status_code in expected, f"{case_id}: expected {expected}, got {r.status_code}: {text[:300]!r}"
    if substr:
        assert substr.lower() in text.lower(), f"{case_id}: message should mention {substr!r}: {text[:300]!r}"


@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
def test_grpc_garbage_is_invalid_argument(oxeye_module, signal):
    code, details = grpc_raw_call(oxeye_module.grpc_target, signal, GARBAGE_PB)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{signal}: got {code} {details!r}"


def test_grpc_unknown_method_is_unimplemented(oxeye_module):
    with grpc.insecure_channel(oxeye_module.grpc_target) as ch:
        call = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
                              request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as e:
            call(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, e.value


@pytest.mark.parametrize("case_id,method,path,headers,body,expected", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_rejects(oxeye_module, case_id, method, path, headers, body, expected):
    if case_id == "query-copy-to-file" and os.path.exists("/tmp/oxeye-interop-copy.csv"):
        os.remove("/tmp/oxeye-interop-copy.csv")
    r = requests.request(method, f"{oxeye_module.api}{path}", headers=headers, json=body, timeout=30)
    assert r.status_code in expected, f"{case_id}: expected {expected}, got {r.status_code}: {r.text[:300]!r}"
    if path.startswith("/api/v1/") and case_id != "unknown-api-path":
        try:
            err = r.json()
        except ValueError:
            pytest.fail(f"{case_id}: error body is not JSON: {r.text[:300]!r}")
        assert isinstance(err.get("error"), str) and err["error"], f"{case_id}: want {{\"error\": msg}}, got {err!r}"
    if case_id == "query-copy-to-file":
        assert not os.path.exists("/tmp/oxeye-interop-copy.csv"), "COPY TO wrote a file through the read-only API"


def _spoiled_requests():
    """Protobuf trace requests whose outline is sound but one span inside is not valid OTLP,
    next to a good span: (id, request bytes, substring of the message, the good span's trace id)."""
    out = []
    spoilers = [
        ("short-span-id", lambda s: setattr(s, "span_id", b"\x01\x02\x03"), "spanId"),
        ("zero-trace-id", lambda s: setattr(s, "trace_id", bytes(16)), "traceId"),
        ("bad-link-span-id", lambda s: s.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 7), "links[0].spanId"),
        ("non-utf8-attribute", lambda s: s.attributes.add(key="k").value.__setattr__("string_value", "\x01XYZ"),
         "UTF-8"),
    ]
    for case_id, spoil, substr in spoilers:
        req = big_request(unique(f"it-spoiled-{case_id}"), n_spans=2, payload=5)
        spans = req.resource_spans[0].scope_spans[0].spans
        spoil(spans[1])
        body = req.SerializeToString()
        if case_id == "non-utf8-attribute":
            at = body.index(b"\x01XYZ")
            body = body[:at] + b"\xff" + body[at + 1:]
        out.append((case_id, body, substr, spans[0].trace_id.hex()))
    return out


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_bad_span_inside_refuses_the_whole_request(oxeye_module, transport):
    """The receiver checks a trace request's outline; its spans are checked as the store reads
    them. A fault found there still answers 400 / INVALID_ARGUMENT naming the field, and the
    request's good span is not stored either."""
    srv = oxeye_module
    for case_id, body, substr, good_trace in _spoiled_requests():
        if transport == "http":
            r = requests.post(f"{srv.otlp_http}/v1/traces", data=body,
                              headers={"Content-Type": "application/x-protobuf"}, timeout=30)
            status, text = r.status_code, r.text
            assert status == 400, f"{case_id}: expected 400, got {status}: {text[:300]!r}"
        else:
            status, text = grpc_raw_call(srv.grpc_target, "traces", body)
            assert status == grpc.StatusCode.INVALID_ARGUMENT, f"{case_id}: got {status} {text!r}"
        assert substr.lower() in text.lower(), f"{case_id}: message should name {substr!r}: {text[:300]!r}"
        if case_id != "non-utf8-attribute":
            assert "spans[1]" in text, f"{case_id}: message should name the span: {text[:300]!r}"
        assert srv.get(f"/api/v1/traces/{good_trace}").status_code == 404, \
            f"{case_id}: the request was refused, so its good span must not be stored"
    assert srv.alive()


def test_tables_intact_and_flush_with_token_works(oxeye_module):
    res = oxeye_module.query("SELECT count(*) FROM otel_traces")
    assert len(res["rows"]) == 1, res
    assert "flushed_rows" in oxeye_module.flush()


def test_still_ingests_after_bad_input(oxeye_module):
    """Runs after the tables above (same module server)."""
    srv = oxeye_module
    svc = unique("it-after-bad")
    req = big_request(svc, n_spans=1, payload=5)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    r = post_otlp_protobuf(f"{srv.otlp_http}/v1/traces", req)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    body = wait_for(lambda: srv.get(f"/api/v1/traces/{span.trace_id.hex()}").status_code == 200 and
                    srv.get_json(f"/api/v1/traces/{span.trace_id.hex()}"), what="the good span")
    assert body["spans"][0]["span_id"] == span.span_id.hex()
    assert body["spans"][0]["service"] == svc
    # and gRPC too
    req2 = big_request(svc, n_spans=1, payload=5)
    with grpc.insecure_channel(srv.grpc_target) as ch:
        trace_service_pb2_grpc.TraceServiceStub(ch).Export(req2, timeout=10)
    tid2 = req2.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    wait_for(lambda: srv.get(f"/api/v1/traces/{tid2}").status_code == 200, what="the good gRPC span")
    assert srv.alive()


def test_up_prints_banner_and_token(oxeye_module):
    out = oxeye_module.stdout_path.read_text(errors="replace") + oxeye_module.stderr_path.read_text(errors="replace")
    assert "oxeye is up" in out, f"`oxeye up` should print 'oxeye is up'; output: {out[-1000:]!r}"
    token = oxeye_module.token
    assert len(token) >= 16, "api token looks too short"
    assert token in out, "`oxeye up` should print the API token"
    mode = stat.S_IMODE(os.stat(oxeye_module.data_dir / "api-token").st_mode)
    assert mode == 0o600, f"api-token mode {oct(mode)}, expected 0o600"


# ------------------------------------------------------------------------------------------
# body size limit and receiver token (their own servers)
# ------------------------------------------------------------------------------------------

def test_body_over_max_body_bytes_is_413(oxeye_factory):
    srv = oxeye_factory(extra_args=["--max-body-bytes", "4096"], name="oxeye-maxbody")
    big = big_request(unique("it-maxbody"), n_spans=40, payload=200)
    raw = big.SerializeToString()
    assert len(raw) > 4096
    r = post_otlp_protobuf(f"{srv.otlp_http}/v1/traces", big)
    assert r.status_code == 413, f"protobuf body of {len(raw)} bytes: {r.status_code} {r.text[:200]!r}"

    import json as _json
    js = _json.dumps(to_otlp_json(big)).encode()
    r = requests.post(f"{srv.otlp_http}/v1/traces", data=js, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413, f"JSON body of {len(js)} bytes: {r.status_code}"

    # gzip that inflates past the limit must not be accepted (a decompression bomb)
    inflated = big_request(unique("it-maxbody"), n_spans=1, payload=400_000).SerializeToString()
    bomb = gzip.compress(inflated)
    assert len(bomb) < 4096
    r = requests.post(f"{srv.otlp_http}/v1/traces", data=bomb, timeout=30,
                      headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert r.status_code in (413, 400), f"gzip body inflating to {len(inflated)} bytes: {r.status_code}"

    # under the limit is fine, gzip too
    small = big_request(unique("it-maxbody"), n_spans=2, payload=50)
    assert post_otlp_protobuf(f"{srv.otlp_http}/v1/traces", small).status_code == 200
    r = requests.post(f"{srv.otlp_http}/v1/traces", data=gzip.compress(small.SerializeToString()), timeout=30,
                      headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert r.status_code == 200, (r.status_code, r.text[:200])
    assert srv.alive()


def test_receiver_token(oxeye_factory):
    srv = oxeye_factory(extra_args=["--receiver-token", "s3cret-interop"], name="oxeye-rtoken")
    req = big_request(unique("it-rtoken"), n_spans=1, payload=5)
    url = f"{srv.otlp_http}/v1/traces"
    assert post_otlp_protobuf(url, req).status_code == 401
    assert post_otlp_protobuf(url, req, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert post_otlp_protobuf(url, req, headers={"Authorization": "Bearer s3cret-interop"}).status_code == 200
    raw = req.SerializeToString()
    code, _ = grpc_raw_call(srv.grpc_target, "traces", raw)
    assert code == grpc.StatusCode.UNAUTHENTICATED, code
    code, _ = grpc_raw_call(srv.grpc_target, "traces", raw, metadata=[("authorization", "Bearer wrong")])
    assert code == grpc.StatusCode.UNAUTHENTICATED, code
    code, details = grpc_raw_call(srv.grpc_target, "traces", raw, metadata=[("authorization", "Bearer s3cret-interop")])
    assert code == grpc.StatusCode.OK, (code, details)


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------

def _run_up(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([oxeye_bin_path(), "up", *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=clean_env())
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`oxeye up {' '.join(args)}` was expected to fail but still ran after {timeout}s; "
                    f"stderr: {(e.stderr or b'')[-500:]!r}")


def _addr_args(tmp_path, **override) -> list[str]:
    args = {"--data-dir": str(tmp_path / "data"),
            "--http-addr": f"127.0.0.1:{free_port()}",
            "--otlp-grpc-addr": f"127.0.0.1:{free_port()}",
            "--otlp-http-addr": f"127.0.0.1:{free_port()}"}
    args.update(override)
    return [x for kv in args.items() for x in kv]


@pytest.mark.parametrize("flag", ["--http-addr", "--otlp-grpc-addr", "--otlp-http-addr"])
def test_cli_port_in_use(tmp_path, flag):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        addr = f"127.0.0.1:{s.getsockname()[1]}"
        cp = _run_up(_addr_args(tmp_path, **{flag: addr}))
    assert cp.returncode != 0, f"exit code 0 although {addr} was taken"
    lines = [l for l in cp.stderr.splitlines() if addr in l and flag in l]
    assert lines, f"no stderr line names both {addr} and {flag}:\n{cp.stderr[-1500:]}"


def test_cli_data_dir_is_a_file(tmp_path):
    f = tmp_path / "not-a-dir"
    f.write_text("I am a file")
    cp = _run_up(_addr_args(tmp_path, **{"--data-dir": str(f)}))
    assert cp.returncode != 0
    assert "--data-dir" in cp.stderr, f"error should name --data-dir:\n{cp.stderr[-1500:]}"


def test_cli_data_dir_not_writable(tmp_path):
    if os.geteuid() == 0:
        # root ignores directory permissions; use a path under a file instead (ENOTDIR)
        f = tmp_path / "file"
        f.write_text("x")
        target = f / "sub"
    else:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o500)
        target = d / "data"
    cp = _run_up(_addr_args(tmp_path, **{"--data-dir": str(target)}))
    assert cp.returncode != 0
    assert "--data-dir" in cp.stderr, f"error should name --data-dir:\n{cp.stderr[-1500:]}"


def test_cli_unknown_flag(tmp_path):
    cp = _run_up([*_addr_args(tmp_path), "--no-such-flag"])
    assert cp.returncode != 0
    assert "--no-such-flag" in cp.stderr, cp.stderr[-1500:]


def test_cli_config_with_two_errors(tmp_path):
    cfg = tmp_path / "oxeye.yaml"
    cfg.write_text(
        "receivers:\n"
        "  otlp:\n"
        "    protocols:\n"
        "      grpc:\n"
        "        endpoint: \"not-an-address\"\n"
        "      http:\n"
        "        endpoint: \"127.0.0.1:99999\"\n"
    )
    cp = _run_up(["--data-dir", str(tmp_path / "data"), "--http-addr", f"127.0.0.1:{free_port()}",
                  "--config", str(cfg)])
    assert cp.returncode != 0, "a config with two invalid endpoints was accepted"
    for path in ("receivers.otlp.protocols.grpc.endpoint", "receivers.otlp.protocols.http.endpoint"):
        assert path in cp.stderr, f"error output should report {path}:\n{cp.stderr[-2000:]}"


def test_cli_help_lists_contract_flags():
    cp = run_cli(["up", "--help"])
    assert cp.returncode == 0, cp.stderr
    for flag in ("--data-dir", "--http-addr", "--otlp-grpc-addr", "--otlp-http-addr", "--queue-bytes", "--config",
                 "--max-body-bytes", "--receiver-token"):
        assert flag in cp.stdout, f"`oxeye up --help` does not mention {flag}"
    cp = run_cli(["--help"])
    assert cp.returncode == 0
    for sub in ("up", "query", "doctor", "lab"):
        assert sub in cp.stdout, f"`oxeye --help` does not list {sub}"
