#!/usr/bin/env bash
# Bench 3: one LlmJob of 10,000 items at parallelism 20 under a shared rate limit (issue 17).
#
#   bash bench/batch/run.sh                         # 10,000 items, 20 pods, 12,000 requests/min
#   BENCH_ITEMS=2000 bash bench/batch/run.sh        # a shorter run
#
# The pods of the LlmJob's Indexed Job are run as the real release runner, one process per pod
# (JOB_COMPLETION_INDEX 0..19), with exactly the variables the operator gives them: the same
# items file (JSON Lines, as the operator's ConfigMap mounts it), LLMJOB_ITEMS_PER_POD,
# LLMJOB_CONCURRENCY, the LlmJob's requests-per-minute divided by the parallelism, one
# LLMJOB_OUTPUT_URL (s3://) and one TRACEPARENT. They call the release openai-replay server and
# write their results to a real S3-compatible store (versitygw, tools/ensure-tools.sh). What runs
# them is not measured here (a Job of 20 pods is nothing for the control plane: bench/operator-bench
# measures the operator at scale).
#
# Prints a markdown table with PASS/MISS lines on stdout: wall time, requests/s achieved vs the
# limit (overall and in the busiest window), the runner's peak RSS per pod (GNU time), and the
# objects written with their line count. Progress on stderr; logs in target/bench/batch/.
# Environment: BENCH_ITEMS (10000), BENCH_PODS (20), BENCH_RPM (12000), BENCH_CONCURRENCY (16).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { printf '[bench/batch] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v python3 >/dev/null || die "python3 is required (bench.py)"
time_bin=/usr/bin/time
if ! "$time_bin" -f %M true >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing GNU time (Debian package 'time'): it measures each pod's peak RSS"
    apt-get install -y -q time >&2 || { apt-get update -q >&2 && apt-get install -y -q time >&2; }
  fi
  "$time_bin" -f %M true >/dev/null 2>&1 || die "GNU time ($time_bin) is required: apt-get install time"
fi

log "tools: bash tools/ensure-tools.sh demo (versitygw)"
bash "$root/tools/ensure-tools.sh" demo >&2
cd "$root"
log "cargo build --release -p llmjob-runner -p openai-replay"
cargo build --release -p llmjob-runner -p openai-replay >&2
target="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
cache="${LLMJOB_CACHE:-$HOME/.cache/llmjob-operator}"
exec python3 "$here/bench.py" \
  --runner "$target/release/llmjob-runner" \
  --replay "$target/release/openai-replay" \
  --versitygw "${LLMJOB_TOOLS_BIN:-$cache/bin}/versitygw" \
  --out "$target/bench/batch" \
  --items "${BENCH_ITEMS:-10000}" \
  --pods "${BENCH_PODS:-20}" \
  --rpm "${BENCH_RPM:-12000}" \
  --concurrency "${BENCH_CONCURRENCY:-16}"
