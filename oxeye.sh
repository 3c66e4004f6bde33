#!/usr/bin/env bash
# oxeye.sh — the two commands of the quick start.
#   ./oxeye.sh up [oxeye up flags...]   install what is missing, build the release binary, run `oxeye up`
#   ./oxeye.sh test                     install what is missing, run every test suite (Rust, Python interop, web)
# Both install their own Debian packages (apt, idempotently) and are safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_ensure() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

rust_env() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "oxeye.sh: cargo not found: install Rust 1.95 (rustup) first" >&2; exit 1; }
  # A build cache outside the checkout is used when present; nothing depends on it.
  if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/oxeye/target" ]; then
    export CARGO_TARGET_DIR="$HOME/.cache/oxeye/target"
  fi
  TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
}

base_packages() { apt_ensure build-essential pkg-config mold clang libelf-dev zlib1g-dev; }

# The peers the profiler benchmark compares with: perf, and inferno's collapse-perf (a cargo
# binary, not a dependency of oxeye; built once, a few minutes).
bench_peers() {
  apt_ensure linux-perf
  command -v inferno-collapse-perf >/dev/null 2>&1 \
    || CARGO_TARGET_DIR="${TMPDIR:-/tmp}/oxeye-inferno-build" cargo install --locked --quiet inferno --no-default-features --features cli,multithreaded
}

cmd_up() {
  base_packages
  rust_env
  if [ ! -x "$TARGET_DIR/release/oxeye" ]; then
    log "first build of the release binary: 20 to 40 minutes on 2 cores (later runs start in seconds)"
  fi
  cargo build --release -p oxeye
  exec "$TARGET_DIR/release/oxeye" up "$@"
}

cmd_test() {
  base_packages
  apt_ensure chromium ca-certificates golang-go rsyslog auditd
  # Node.js and Python may come from elsewhere (nodesource, pyenv); install Debian's only when absent.
  command -v npm >/dev/null 2>&1 || apt_ensure nodejs npm
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_ensure python3-venv
  rust_env
  bench_peers
  local failed=()

  log "cargo fmt --check"
  cargo fmt --all -- --check || failed+=("fmt")
  log "cargo clippy"
  cargo clippy --workspace --all-targets -- -D warnings || failed+=("clippy")
  log "cargo build (binary for the interop and web tests)"
  cargo build -p oxeye
  export OXEYE_BIN="$TARGET_DIR/debug/oxeye"

  log "rust tests (nextest)"
  if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast || failed+=("rust")
  else
    cargo test --workspace --no-fail-fast || failed+=("rust")
  fi

  log "python interop tests"
  local venv="${OXEYE_VENV:-$HOME/.cache/oxeye/venv}"
  if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/interop/requirements.txt
  "$venv/bin/python" -m pytest tests/interop -q -p no:cacheprovider || failed+=("interop")

  log "web tests (headless Chromium)"
  (cd tests/web && npm ci --silent --no-audit --no-fund) && node --test tests/web/ || failed+=("web")

  if [ ${#failed[@]} -gt 0 ]; then
    echo "oxeye.sh test: FAILED: ${failed[*]}" >&2
    exit 1
  fi
  log "all suites passed"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  test) shift; cmd_test "$@" ;;
  *) echo "usage: ./oxeye.sh up [flags] | ./oxeye.sh test" >&2; exit 2 ;;
esac
