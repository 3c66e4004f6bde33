"""Disk full: the store refuses new data with a clear error (HTTP 503, gRPC UNAVAILABLE) and keeps
what it acknowledged. The data directory is a small tmpfs, so mounting needs root."""

from __future__ import annotations

import os
import subprocess

import pytest
import requests

from otlp_helpers import big_request, unique


@pytest.fixture
def tiny_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_refuses_with_503_and_keeps_acknowledged_spans(oxeye_factory, tiny_fs):
    srv = oxeye_factory(name="oxeye-diskfull", data_dir=tiny_fs / "data")
    svc = unique("it-diskfull")
    acked_spans = 0
    refusal = None
    for _ in range(200):
        req = big_request(svc, n_spans=20, payload=10_000)
        r = requests.post(f"{srv.otlp_http}/v1/traces", data=req.SerializeToString(), timeout=30,
                          headers={"Content-Type": "application/x-protobuf"})
        if r.status_code == 200:
            acked_spans += 20
            continue
        refusal = r
        break
    assert refusal is not None, "a 4 MiB filesystem never filled up"
    assert refusal.status_code == 503, (refusal.status_code, refusal.content[:200])
    assert "Retry-After" in refusal.headers
    assert b"No space left on device" in refusal.content, refusal.content[:300]
    assert acked_spans > 0
    # Still serving, and everything acknowledged is there.
    assert srv.alive()
    rows = srv.query(f"SELECT COUNT(*) AS n FROM otel_traces WHERE ServiceName = '{svc}'")["rows"]
    assert rows[0][0] == acked_spans
