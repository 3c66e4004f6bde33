"""Shared fixtures for the oxeye interop suite.

The suite runs the real `oxeye` binary (``OXEYE_BIN``, default
``/root/.cache/oxeye/target/debug/oxeye``) and talks to it only through its
public interfaces: OTLP receivers, the HTTP API, the CLI and the files it writes.

If the binary is missing every test errors with one clear message; nothing is
skipped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

DEFAULT_BIN = "/root/.cache/oxeye/target/debug/oxeye"
STARTUP_TIMEOUT_S = float(os.environ.get("OXEYE_STARTUP_TIMEOUT", "60"))

# The OpenTelemetry SDK reads OTEL_* variables (headers, temporality, resource, service name...);
# the suite sets everything explicitly, so the caller's shell must not change what is sent.
for _k in [k for k in os.environ if k.startswith("OTEL_")]:
    del os.environ[_k]

# Every server started by the suite that has not been torn down yet; their
# stderr tails are attached to the report of any failing test.
_LIVE_SERVERS: list["OxeyeServer"] = []


def oxeye_bin_path() -> str:
    return os.environ.get("OXEYE_BIN", DEFAULT_BIN)


def _missing_binary_message() -> str | None:
    path = oxeye_bin_path()
    if not os.path.exists(path):
        return (
            f"oxeye binary not found at {path!r}. Build it (cargo build -p oxeye) or point "
            f"OXEYE_BIN at it. The interop suite cannot run without the real binary."
        )
    if not os.access(path, os.X_OK):
        return f"oxeye binary at {path!r} is not executable"
    return None


def clean_env() -> dict:
    """The environment for oxeye processes: no OXEYE_* settings leak in from the caller's shell
    (the binary reads OXEYE_CONFIG, OXEYE_DATA_DIR, ... as flag defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXEYE_")}
    env.setdefault("RUST_BACKTRACE", "1")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return "<no file>"
    return "\n".join(text.splitlines()[-lines:])


class ServerStartError(RuntimeError):
    pass


class OxeyeServer:
    """One `oxeye up` process; can be killed and restarted on the same data dir."""

    def __init__(self, workdir: Path, data_dir: Path | None = None, extra_args: list[str] | None = None,
                 name: str = "oxeye"):
        self.bin = oxeye_bin_path()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir) if data_dir else self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(extra_args or [])
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.generation = 0
        self.http_port = self.grpc_port = self.otlp_http_port = 0
        self.stdout_path = self.stderr_path = self.workdir / "none"

    # -- addresses -----------------------------------------------------------------
    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def otlp_http(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def token(self) -> str:
        return (self.data_dir / "api-token").read_text().strip()

    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    # -- lifecycle -------------------------------------------------------------------
    def args(self) -> list[str]:
        return [
            self.bin, "up",
            "--data-dir", str(self.data_dir),
            "--http-addr", f"127.0.0.1:{self.http_port}",
            "--otlp-grpc-addr", f"127.0.0.1:{self.grpc_port}",
            "--otlp-http-addr", f"127.0.0.1:{self.otlp_http_port}",
            *self.extra_args,
        ]

    def start(self, new_ports: bool = True) -> "OxeyeServer":
        # A port picked free can be taken (e.g. as a client's ephemeral port) before the server
        # binds it; with fresh ports allowed, try again rather than fail the module.
        for attempt in range(3):
            try:
                return self._start_once(new_ports or attempt > 0)
            except ServerStartError as e:
                if not (new_ports and "Address already in use" in str(e)) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, new_ports: bool) -> "OxeyeServer":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if new_ports or not self.http_port:
            self.http_port, self.grpc_port, self.otlp_http_port = free_port(), free_port(), free_port()
        self.generation += 1
        self.stdout_path = self.workdir / f"{self.name}.{self.generation}.stdout.log"
        self.stderr_path = self.workdir / f"{self.name}.{self.generation}.stderr.log"
        env = clean_env()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.args(), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        if self not in _LIVE_SERVERS:
            _LIVE_SERVERS.append(self)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last_err = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise ServerStartError(
                    f"oxeye exited with code {rc} during startup\ncommand: {' '.join(self.args())}\n"
                    f"--- stderr tail ---\n{tail(self.stderr_path)}\n--- stdout tail ---\n{tail(self.stdout_path)}")
            try:
                r = requests.get(f"{self.api}/api/v1/status", timeout=2)
                if r.status_code == 200 and self._port_open(self.grpc_port) and self._port_open(self.otlp_http_port):
                    return
                last_err = f"status {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:  # not up yet
                last_err = repr(e)
            time.sleep(0.1)
        self.kill()
        raise ServerStartError(
            f"oxeye did not answer GET /api/v1/status with 200 (and open its OTLP ports) within "
            f"{STARTUP_TIMEOUT_S}s; last error: {last_err}\ncommand: {' '.join(self.args())}\n"
            f"--- stderr tail ---\n{tail(self.stderr_path)}")

    @staticmethod
    def _port_open(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (kill -9): no chance to flush anything."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20) -> int | None:
        """Graceful stop (SIGTERM, then SIGINT, then SIGKILL). Returns the exit code."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
                return self.proc.returncode

    def restart(self, new_ports: bool = True) -> "OxeyeServer":
        self.kill()
        return self.start(new_ports=new_ports)

    def close(self) -> None:
        self.kill()
        if self in _LIVE_SERVERS:
            _LIVE_SERVERS.remove(self)

    # -- helpers ---------------------------------------------------------------------
    def get(self, path: str, **params) -> requests.Response:
        return requests.get(f"{self.api}{path}", params=params or None, timeout=30)

    def get_json(self, path: str, **params) -> dict:
        r = self.get(path, **params)
        assert r.status_code == 200, f"GET {path} {params} -> {r.status_code}: {r.text[:500]}"
        return r.json()

    def query(self, sql: str) -> dict:
        r = requests.post(f"{self.api}/api/v1/query", json={"sql": sql}, timeout=60)
        assert r.status_code == 200, f"POST /api/v1/query {sql!r} -> {r.status_code}: {r.text[:500]}"
        return r.json()

    def flush(self) -> dict:
        r = requests.post(f"{self.api}/api/v1/admin/flush", headers=self.auth(), timeout=120)
        assert r.status_code == 200, f"POST /api/v1/admin/flush -> {r.status_code}: {r.text[:500]}"
        return r.json()

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited rc={self.proc.returncode if self.proc else None}"
        return (f"[{self.name} gen {self.generation} pid {self.proc.pid if self.proc else None} {state}; "
                f"api {self.api} grpc {self.grpc_target} otlp-http {self.otlp_http}; data {self.data_dir}; "
                f"stderr {self.stderr_path}]")


def run_cli(args: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run the oxeye CLI (not `up`) and return the completed process."""
    kw.setdefault("env", clean_env())
    return subprocess.run([oxeye_bin_path(), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def wait_for(fn, timeout: float = 15.0, interval: float = 0.2, what: str = "condition"):
    """Poll ``fn`` until it returns a truthy value; return that value or fail with the last one."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except AssertionError as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last result: {last!r}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------
# pytest wiring
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def oxeye_bin() -> str:
    msg = _missing_binary_message()
    if msg:
        pytest.fail(msg, pytrace=False)
    return oxeye_bin_path()


@pytest.fixture
def oxeye_factory(tmp_path_factory, request):
    """Start extra servers: ``oxeye_factory(extra_args=[...], name=...)``; all killed at teardown."""
    made: list[OxeyeServer] = []

    def make(extra_args=None, name="oxeye", data_dir=None, start=True) -> OxeyeServer:
        wd = tmp_path_factory.mktemp(name)
        srv = OxeyeServer(wd, data_dir=data_dir, extra_args=extra_args, name=name)
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for s in made:
        s.close()


@pytest.fixture
def oxeye(oxeye_factory) -> OxeyeServer:
    """A fresh server for one test."""
    return oxeye_factory()


@pytest.fixture(scope="module")
def oxeye_module(tmp_path_factory, oxeye_bin) -> OxeyeServer:
    """One server shared by the tests of a module (each test uses its own service name)."""
    srv = OxeyeServer(tmp_path_factory.mktemp("oxeye-module"), name="oxeye-module")
    srv.start()
    yield srv
    srv.close()


_REPORT_LINES: list[str] = []


@pytest.fixture
def interop_report(request):
    """``interop_report("text")`` prints the line now (visible with -s) and again in the terminal summary."""
    def add(line: str) -> None:
        print(line)
        _REPORT_LINES.append(f"{request.node.name}: {line.strip()}")
    return add


def pytest_terminal_summary(terminalreporter):
    if _REPORT_LINES:
        terminalreporter.section("oxeye interop measurements")
        for line in _REPORT_LINES:
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        for srv in list(_LIVE_SERVERS):
            report.sections.append(
                (f"oxeye stderr tail {srv.describe()}", tail(srv.stderr_path, 40)))
