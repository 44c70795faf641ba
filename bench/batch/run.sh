#!/usr/bin/env bash
# Bench 3: one LlmJob of 10,000 items at parallelism 20 under a shared rate limit (issue 17).
#
#   bash bench/batch/run.sh                         # node mode: the issue's figure
#   BENCH_MODE=host bash bench/batch/run.sh         # the pods as host processes (quick, no root)
#   BENCH_ITEMS=2000 bash bench/batch/run.sh        # a shorter run (either mode)
#
# BENCH_MODE=node (the default, the figure docs/benchmarks.md gives for issue 17): ONE LlmJob
# created on a testenv control plane with the real node (kubelet, containerd, runc): the release
# llmjob-operator makes its input, its Indexed Job and its status; the kubelet runs the runner
# image (`cargo xtask images`) as containers, which call openai-replay and write to versitygw
# through Services (bench/batch-node, `batch-node-bench`). Needs root. Measures the wall time from
# the create call to `Succeeded` and the pods' span, the requests/s the replay server received,
# each pod's peak memory from the node's cgroups, the objects written, status.batch.
#
# BENCH_MODE=host: the pods of the LlmJob's Indexed Job are run as the real release runner, one
# process per pod (JOB_COMPLETION_INDEX 0..19), with exactly the variables the operator gives
# them: the same items file (JSON Lines, as the operator's ConfigMap mounts it),
# LLMJOB_ITEMS_PER_POD, LLMJOB_CONCURRENCY, the LlmJob's requests-per-minute divided by the
# parallelism, one LLMJOB_OUTPUT_URL (s3://) and one TRACEPARENT. They call the release
# openai-replay server and write their results to a real S3-compatible store (versitygw,
# tools/ensure-tools.sh). No operator, Job, kubelet or container runtime is involved (bench.py).
#
# Both print a markdown table with PASS/MISS lines on stdout: wall time, requests/s achieved vs
# the limit (overall and in the busiest window), the runner's peak memory per pod, and the
# objects written with their line count. Progress on stderr; logs in target/bench/batch/ (host)
# or target/bench/batch-node/ (node).
# Environment: BENCH_MODE (node), BENCH_ITEMS (10000), BENCH_PODS (20), BENCH_RPM (12000),
# BENCH_CONCURRENCY (16); node mode also BENCH_ITEMS_PER_POD (500: 20 pods of 500 items).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { printf '[bench/batch] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mode="${BENCH_MODE:-node}"
case "$mode" in
  node)
    log "tools: bash tools/ensure-tools.sh demo (the real node's tools and versitygw)"
    bash "$root/tools/ensure-tools.sh" demo >&2
    cd "$root"
    # The images first: their release build makes the llmjob-operator binary the bench runs
    # (the same as in the operator image); the bench is built alone after it, so cargo's feature
    # unification with the bench's dependencies cannot rebuild the operator a second way.
    log "cargo xtask images (the release operator and the runner image the node runs)"
    cargo xtask images >&2
    log "cargo build --release -p batch-node-bench"
    cargo build --release -p batch-node-bench >&2
    target="$(cargo metadata --format-version 1 --no-deps |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    exec "$target/release/batch-node-bench" \
      --items "${BENCH_ITEMS:-10000}" \
      --items-per-pod "${BENCH_ITEMS_PER_POD:-500}" \
      --parallelism "${BENCH_PODS:-20}" \
      --rpm "${BENCH_RPM:-12000}" \
      --concurrency "${BENCH_CONCURRENCY:-16}"
    ;;
  host) ;;
  *) die "BENCH_MODE must be node or host, not '$mode'" ;;
esac

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
