#!/usr/bin/env bash
# Bench 2: N LlmJobs through llmjob-operator vs N equivalent Jobs created directly.
#
#   bash bench/operator-bench/run.sh                 # --count 1000
#   bash bench/operator-bench/run.sh --count 200     # any operator-bench flag
#
# Builds the release binaries (the runner in the same cargo invocation as bench/runner/run.sh,
# so its features and binary are the same; the operator and the bench in a second one), makes
# sure the control-plane tools exist (tools/ensure-tools.sh, a no-op when built), then runs
# target/release/operator-bench. Progress on stderr, the markdown tables on stdout; the
# control planes' logs stay in target/bench/operator/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
log() { printf '[operator-bench] %s\n' "$*" >&2; }

log "tools: bash tools/ensure-tools.sh"
bash "$root/tools/ensure-tools.sh" >&2
cd "$root"
log "cargo build --release -p llmjob-runner -p openai-replay"
cargo build --release -p llmjob-runner -p openai-replay >&2
log "cargo build --release -p llmjob-operator -p operator-bench"
cargo build --release -p llmjob-operator -p operator-bench >&2
target="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$target/release/operator-bench" --bin-dir "$target/release" "$@"
