"""Measures llmjob-runner against the Python job (bench/runner/python_job.py); run by run.sh.

Starts one openai-replay server and one OpenTelemetry Collector (otelcol-test, OTLP gRPC + HTTP
receivers, JSON-lines file exporters), then runs the variants interleaved, N rounds:

  rust        target/release/llmjob-runner, telemetry on (OTLP/gRPC to the collector)
  python      python_job.py in the bench venv (Traceloop SDK, OTLP/gRPC to the collector)
  rust-notel  target/release/llmjob-runner with OTEL_SDK_DISABLED=true

Each round runs every variant twice. The timing run is spawned directly and measured with
os.wait4: wall time (perf_counter around spawn and reap) and CPU (ru_utime + ru_stime of the
process and every descendant it waited for). The memory run goes through GNU time, whose %M is
the peak RSS (see measure_rss for why not the timing run's ru_maxrss). The round order rotates so
that no variant always runs first. One warm-up round is made first and not counted (it fills the
page cache with the venv's modules).

Fails (exit 1) if a run exits non-zero, or if the collector did not receive exactly one
`llm_job.workflow` span per telemetry-on run for each service name (and none for rust-notel).

Standard library only: it runs on the system python3, not the venv.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVICES = {
    "rust": "bench-rust",
    "python": "bench-python",
    "rust-notel": "bench-rust-notel",
}
API_KEY = "sk-bench"
PROMPT = "Write a haiku about OpenTelemetry."


def log(msg):
    print(f"[bench/runner] {msg}", file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return tuple(float(x) for x in f.read().split()[:3])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(what, check, timeout, proc=None, log_path=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-3000:] if log_path else ""
            sys.exit(f"{what}: the process exited with {proc.returncode}\n{tail}")
        result = check()
        if result:
            return result
        time.sleep(0.05)
    sys.exit(f"timed out after {timeout}s waiting for {what}")


def start_replay(binary, work):
    """openai-replay on a free port; returns (process, base URL)."""
    out = open(work / "openai-replay.log", "w")
    proc = subprocess.Popen(
        [binary, "--addr", "127.0.0.1:0", "--api-key", API_KEY],
        stdout=subprocess.PIPE,
        stderr=out,
        text=True,
    )
    line = proc.stdout.readline().strip()
    prefix = "openai-replay listening on "
    if not line.startswith(prefix):
        proc.kill()
        sys.exit(f"openai-replay did not start: {line!r}; see {work / 'openai-replay.log'}")
    return proc, line[len(prefix):]


def start_collector(binary, work):
    """otelcol-test with the config testenv/src/collector.rs renders; returns (process, grpc port)."""
    out_dir = work / "collector-out"
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = work / "otelcol.log"
    for _ in range(3):
        grpc, http = free_port(), free_port()
        if grpc == http:
            continue
        config = {
            "receivers": {"otlp": {"protocols": {
                "grpc": {"endpoint": f"127.0.0.1:{grpc}"},
                "http": {"endpoint": f"127.0.0.1:{http}"},
            }}},
            "exporters": {
                **{f"file/{s}": {"path": str(out_dir / f"{s}.jsonl"), "format": "json",
                                 "flush_interval": "100ms"}
                   for s in ("traces", "metrics", "logs")},
                "debug": {"verbosity": "basic"},
            },
            "service": {
                "telemetry": {"metrics": {"level": "none"}},
                "pipelines": {s: {"receivers": ["otlp"], "exporters": [f"file/{s}", "debug"]}
                              for s in ("traces", "metrics", "logs")},
            },
        }
        # JSON is YAML: no YAML library needed.
        (work / "otelcol.yaml").write_text(json.dumps(config, indent=2))
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [binary, f"--config=file:{work / 'otelcol.yaml'}"],
                stdout=log_file, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if accepts(grpc) and accepts(http):
                return proc, grpc, out_dir
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        if "address already in use" not in log_path.read_text(errors="replace"):
            break
    sys.exit(f"the collector did not start; see {log_path}")


def measure(argv, env, log_path):
    """Runs argv once, spawned directly: wall ms and CPU ms (os.wait4, microseconds), exit code."""
    with open(log_path, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_ms": wall * 1000,
        "cpu_ms": (usage.ru_utime + usage.ru_stime) * 1000,
        "exit": proc.returncode,
    }


def measure_rss(time_bin, argv, env, log_path):
    """Runs argv once under GNU time: peak RSS MiB (its %M) and the exit code.

    Not measured on the direct spawns: a child that Python spawns (vfork + exec) inherits the
    harness's own high-water mark in ru_maxrss (Linux records the old mm's peak at exec), about
    14 MiB here, more than the Rust runner's own peak. GNU time forks from a ~1 MiB process.
    """
    rss_file = Path(str(log_path) + ".time")
    with open(log_path, "w") as out:
        proc = subprocess.run([time_bin, "-f", "%M %x", "-o", str(rss_file), *argv], env=env,
                              stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    fields = rss_file.read_text().split()
    rss_kib, code = int(fields[-2]), int(fields[-1])
    return {"rss_mib": rss_kib / 1024, "exit": code if proc.returncode == 0 else proc.returncode}


def count_workflow_spans(out_dir):
    """`llm_job.workflow` spans per service.name in the collector's traces.jsonl."""
    counts = {}
    path = out_dir / "traces.jsonl"
    if not path.exists():
        return counts
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        for rs in request.get("resourceSpans", []):
            service = next(
                (a["value"].get("stringValue") for a in rs.get("resource", {}).get("attributes", [])
                 if a.get("key") == "service.name"),
                None,
            )
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    if span.get("name") == "llm_job.workflow":
                        counts[service] = counts.get(service, 0) + 1
    return counts


def pct(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil
    return ordered[int(rank) - 1]


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--runner", required=True)
    ap.add_argument("--replay", required=True)
    ap.add_argument("--otelcol", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--python-job", required=True)
    ap.add_argument("--work", required=True, help="directory for logs and collector output")
    ap.add_argument("--json", help="also write the raw measurements here")
    ap.add_argument("--time-bin", default="/usr/bin/time", help="GNU time, for peak RSS")
    args = ap.parse_args()

    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    (work / "runs").mkdir(parents=True)
    load_start = loadavg()
    log(f"work directory {work}; load average at start {load_start[0]:.2f} {load_start[1]:.2f} "
        f"{load_start[2]:.2f} on {os.cpu_count()} CPUs")

    replay, base_url = start_replay(args.replay, work)
    collector, grpc_port, out_dir = start_collector(args.otelcol, work)
    endpoint = f"http://127.0.0.1:{grpc_port}"
    log(f"openai-replay at {base_url}; collector OTLP/gRPC at {endpoint}")

    # Only what each program needs, plus PATH/HOME/LANG (as the fake kubelet gives a pod).
    base_env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    base_env.update({
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": base_url,
        "OPENAI_MODEL": "gpt-4o-mini",
        "OPENAI_PROMPT": PROMPT,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "DEPLOYMENT_ENVIRONMENT": "bench",
    })
    result_dir = Path(tempfile.mkdtemp(prefix="llmjob-bench-"))
    variants = {
        "rust": ([args.runner], {"OTEL_SDK_DISABLED": "false"}),
        "python": ([str(Path(args.venv) / "bin" / "python"), args.python_job],
                   {"TRACELOOP_TELEMETRY": "false"}),
        "rust-notel": ([args.runner], {"OTEL_SDK_DISABLED": "true"}),
    }
    names = list(variants)
    samples = {n: [] for n in names}
    loads = []
    failures = []
    try:
        for round_no in range(args.runs + 1):  # round 0: warm-up, not counted
            shift = round_no % len(names)
            order = names[shift:] + names[:shift]
            # Timing runs (direct spawns), then memory runs (under GNU time), same order.
            for kind in ("time", "rss"):
                for name in order:
                    argv, extra = variants[name]
                    env = dict(base_env, **extra, OTEL_SERVICE_NAME=SERVICES[name])
                    if name != "python":
                        env["LLMJOB_RESULT_PATH"] = str(result_dir / f"{name}-{round_no}.json")
                    run_log = work / "runs" / f"{round_no:03d}-{name}-{kind}.log"
                    if kind == "time":
                        m = measure(argv, env, run_log)
                    else:
                        m = measure_rss(args.time_bin, argv, env, run_log)
                    if m["exit"] != 0:
                        failures.append(f"{name} run {round_no} ({kind}) exited {m['exit']} "
                                        f"(log {run_log})")
                    if round_no > 0:
                        if kind == "time":
                            samples[name].append(m)
                        else:
                            samples[name][-1]["rss_mib"] = m["rss_mib"]
                            samples[name][-1]["exit_rss_run"] = m["exit"]
            loads.append(loadavg()[0])
            what = "warm-up" if round_no == 0 else f"round {round_no}/{args.runs}"
            log(f"{what}: " + ", ".join(
                f"{n} {samples[n][-1]['wall_ms']:.0f} ms {samples[n][-1]['rss_mib']:.1f} MiB"
                for n in names if samples[n] and round_no)
                + f" (load {loads[-1]:.2f})")
            if failures:
                break

        expected = {SERVICES["rust"]: 2 * (args.runs + 1), SERVICES["python"]: 2 * (args.runs + 1)}
        counts = {}
        if not failures:
            # The file exporter flushes every 100 ms; give it a little time.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                counts = count_workflow_spans(out_dir)
                if all(counts.get(s, 0) >= n for s, n in expected.items()):
                    break
                time.sleep(0.2)
    finally:
        collector.send_signal(signal.SIGTERM)
        replay.send_signal(signal.SIGTERM)
        for proc in (collector, replay):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(result_dir, ignore_errors=True)
    if failures:
        for f in failures:
            log(f"FAIL: {f}")
        sys.exit(1)
    counts = count_workflow_spans(out_dir)  # final, after the collector flushed on SIGTERM
    for service, n in expected.items():
        if counts.get(service, 0) != n:
            failures.append(f"collector got {counts.get(service, 0)} llm_job.workflow spans "
                            f"from service.name={service}, expected {n}")
    if counts.get(SERVICES["rust-notel"], 0):
        failures.append(f"OTEL_SDK_DISABLED=true runs exported {counts[SERVICES['rust-notel']]} "
                        "workflow spans")
    if failures:
        for f in failures:
            log(f"FAIL: {f}")
        log(f"collector output: {out_dir}")
        sys.exit(1)

    load_end = loadavg()
    runner_size = os.path.getsize(args.runner)
    venv_size = dir_size(args.venv)

    def stat(name, key):
        values = [m[key] for m in samples[name]]
        return statistics.median(values), pct(values, 90)

    def row(label, unit, key, a, b, fmt):
        am, ap9 = stat(a, key)
        bm, bp9 = stat(b, key)
        return (f"| {label} ({unit}) | {fmt.format(am)} | {fmt.format(ap9)} | {fmt.format(bm)} | "
                f"{fmt.format(bp9)} | **{bm / am:.2f}×** | {bp9 / ap9:.2f}× |")

    metrics = [("wall", "ms", "wall_ms", "{:.0f}"), ("peak RSS", "MiB", "rss_mib", "{:.1f}"),
               ("CPU user+sys", "ms", "cpu_ms", "{:.0f}")]
    lines = [
        f"### llmjob-runner vs the Python job ({args.runs} runs each, interleaved)",
        "",
        "| metric | Rust median | Rust p90 | Python median | Python p90 | Python/Rust median | Python/Rust p90 |",
        "|---|---|---|---|---|---|---|",
        *(row(*m[:3], "rust", "python", m[3]) for m in metrics),
        f"| install size (MiB) | {runner_size / 2**20:.1f} (binary) | | {venv_size / 2**20:.1f} (venv) | | "
        f"**{venv_size / runner_size:.1f}×** | |",
        "",
        "### Telemetry overhead of llmjob-runner (same rounds)",
        "",
        "| metric | OTEL_SDK_DISABLED=true median | p90 | telemetry on median | p90 | on/off median | on/off p90 |",
        "|---|---|---|---|---|---|---|",
        *(row(*m[:3], "rust-notel", "rust", m[3]) for m in metrics),
        "",
        "Wall and CPU: direct spawns, os.wait4 (CPU = user + sys of the process and its children). "
        "Peak RSS: a second run of each variant in the same round under GNU time (%M). "
        "One warm-up round first, not counted.",
        f"Spans received by the collector (`llm_job.workflow` per service.name, both runs of every "
        f"round and the warm-up): "
        + ", ".join(f"{s}={counts.get(s, 0)}" for s in SERVICES.values()) + "; all exit codes 0.",
        f"Load average (1/5/15 min): start {load_start[0]:.2f}/{load_start[1]:.2f}/"
        f"{load_start[2]:.2f}, end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}; "
        f"1-min load sampled after each round: min {min(loads):.2f}, median "
        f"{statistics.median(loads):.2f}, max {max(loads):.2f}; {os.cpu_count()} CPUs.",
    ]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "samples": samples, "loads": loads, "load_start": load_start, "load_end": load_end,
            "runner_bytes": runner_size, "venv_bytes": venv_size, "spans": counts,
        }, indent=1))
    log(f"logs and collector output kept in {work}")


if __name__ == "__main__":
    main()
