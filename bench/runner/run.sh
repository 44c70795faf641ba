#!/usr/bin/env bash
# Bench 1: llmjob-runner (Rust) vs the Python job (Traceloop SDK + openai), side by side.
#
#   bash bench/runner/run.sh            # 20 interleaved runs of each variant
#   BENCH_RUNS=5 bash bench/runner/run.sh
#
# What it does (idempotent; works from a fresh checkout):
#   1. tools/ensure-tools.sh: the OpenTelemetry Collector (otelcol-test); a no-op when built.
#   2. cargo build --release -p llmjob-runner -p openai-replay.
#   3. The Python venv $CACHE/bench-venv/<key> (key = Python version + the pinned package versions
#      + a hash of requirements.txt and constraints.txt), created only when missing.
#   4. harness.py: one openai-replay server and one collector, N rounds of
#      rust / python / rust with OTEL_SDK_DISABLED=true (order rotating), each variant once spawned
#      directly (wall time, CPU) and once under GNU time (peak RSS); exit codes and spans received
#      checked; prints the markdown tables on stdout.
#
# Progress goes to stderr, the tables to stdout. Logs and collector output stay in
# target/bench/runner/. Environment: BENCH_RUNS (default 20), LLMJOB_CACHE (default
# ~/.cache/llmjob-operator), PYTHON (default python3), BENCH_JSON (also write raw samples there).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${LLMJOB_CACHE:-$HOME/.cache/llmjob-operator}"
runs="${BENCH_RUNS:-20}"
python="${PYTHON:-python3}"

log() { printf '[bench/runner] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a whole number >= 1, got '$runs'"
command -v "$python" >/dev/null || die "$python is required (the harness and the venv)"
# GNU time measures peak RSS (harness.py, measure_rss, says why not Python's ru_maxrss).
time_bin=/usr/bin/time
if ! "$time_bin" -f %M true >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing GNU time (Debian package 'time')"
    apt-get install -y -q time >&2 || { apt-get update -q >&2 && apt-get install -y -q time >&2; }
  fi
  "$time_bin" -f %M true >/dev/null 2>&1 || die "GNU time ($time_bin) is required: apt-get install time"
fi

log "tools: bash tools/ensure-tools.sh (builds otelcol-test once, then a no-op)"
bash "$root/tools/ensure-tools.sh" >&2
otelcol="$cache/bin/otelcol-test"
[ -x "$otelcol" ] || die "$otelcol missing after tools/ensure-tools.sh"

log "cargo build --release -p llmjob-runner -p openai-replay"
(cd "$root" && cargo build --release -p llmjob-runner -p openai-replay >&2)
target="$(cd "$root" && cargo metadata --format-version 1 --no-deps |
  "$python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
runner="$target/release/llmjob-runner"
replay="$target/release/openai-replay"

# --- the venv, keyed by versions -------------------------------------------------------------
pin() { sed -n "s/^$1==//p" "$here/requirements.txt"; }
traceloop_version="$(pin traceloop-sdk)"
openai_version="$(pin openai)"
py_version="$("$python" -c 'import platform; print(platform.python_version())')"
req_hash="$(cat "$here/requirements.txt" "$here/constraints.txt" | sha256sum | cut -c1-8)"
venv="$cache/bench-venv/py$py_version-traceloop$traceloop_version-openai$openai_version-$req_hash"

if [ ! -f "$venv/.complete" ]; then
  # Built in place; .complete is written last, so an interrupted build is redone from scratch.
  rm -rf "$venv"
  mkdir -p "$cache/bench-venv"
  log "creating the venv $venv (pip install, about 1-2 minutes)"
  "$python" -m venv "$venv" || die "$python -m venv failed (Debian: apt-get install python3-venv)"
  pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
  if ! "${pip[@]}" -r "$here/requirements.txt" -c "$here/constraints.txt" >&2; then
    # The pinned traceloop-sdk may be gone from the index: fall back to the newest 0.x (the
    # constraints are for 0.50.1, so they are dropped) and say so.
    newest="$("$venv/bin/python" -m pip index versions traceloop-sdk 2>/dev/null |
      sed -n 's/^Available versions: //p' | tr ',' '\n' | tr -d ' ' | grep '^0\.' | head -1)"
    [ -n "$newest" ] || die "pip install of bench/runner/requirements.txt failed"
    log "traceloop-sdk==$traceloop_version failed to install; falling back to $newest"
    "${pip[@]}" "traceloop-sdk==$newest" "openai==$openai_version" >&2 || die "pip install failed"
  fi
  "$venv/bin/python" -m pip freeze > "$venv/freeze.txt"
  touch "$venv/.complete"
fi
log "venv $venv: $(grep -iE '^(traceloop-sdk|openai|opentelemetry-sdk)==' "$venv/freeze.txt" | tr '\n' ' ')"

# --- measure ---------------------------------------------------------------------------------
log "measuring: $runs rounds (+1 warm-up) of rust / python / rust with OTEL_SDK_DISABLED=true"
"$python" "$here/harness.py" \
  --runs "$runs" \
  --runner "$runner" \
  --replay "$replay" \
  --otelcol "$otelcol" \
  --venv "$venv" \
  --python-job "$here/python_job.py" \
  --work "$target/bench/runner" \
  --time-bin "$time_bin" \
  ${BENCH_JSON:+--json "$BENCH_JSON"}
