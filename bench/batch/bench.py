#!/usr/bin/env python3
"""Bench 3 (bench/batch/run.sh): one LlmJob of N items, its Indexed Job's pods run as the real
runner, one process per pod, against openai-replay and versitygw. Standard library only.

Measures wall time (first pod started to last pod exited), the requests the replay server
received (its own log timestamps: overall rate and the busiest 10-second window, against the
LlmJob's limit), each pod's peak RSS (GNU time), and the objects written (keys and lines, read
from versitygw's posix directory, where each object is a file). Prints a markdown table with
PASS/MISS lines on stdout; progress on stderr.
"""

import argparse
import datetime
import json
import math
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
WINDOW_S = 10.0


def log(msg):
    print(f"[bench/batch] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"{what} did not answer {url} within {timeout} s")


# `2026-12-05T23:15:33.123456Z  INFO openai_replay::server: request method=POST
# path="/v1/chat/completions" status=200 ...` (tracing's default format, ANSI off).
REQUEST_LINE = re.compile(
    r'^(\S+Z)\s+INFO\s.*\brequest\b.*path="?/v1/chat/completions"?\s+status=(\d+)')


def parse_requests(path):
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = REQUEST_LINE.match(line)
            if m:
                ts = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
                out.append((ts.timestamp(), int(m.group(2))))
    out.sort()
    return out


def busiest_window(times, width):
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runner", required=True)
    p.add_argument("--replay", required=True)
    p.add_argument("--versitygw", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--items", type=int, default=10000)
    p.add_argument("--pods", type=int, default=20)
    p.add_argument("--rpm", type=int, default=12000)
    p.add_argument("--concurrency", type=int, default=16)
    a = p.parse_args()
    if a.rpm < a.pods:
        sys.exit("--rpm must be at least --pods (admission requires limit >= parallelism)")

    run_dir = os.path.join(a.out, time.strftime("run-%Y%m%d-%H%M%S"))
    os.makedirs(run_dir)
    data = os.path.join(run_dir, "s3", "data")
    os.makedirs(os.path.join(data, "results"))
    os.makedirs(os.path.join(run_dir, "s3", "meta"))
    procs = []
    try:
        # versitygw: one bucket (a top-level directory of its posix root), a random credential.
        access, secret = "bench" + secrets.token_hex(6), secrets.token_hex(20)
        s3_port = free_port()
        s3_log = open(os.path.join(run_dir, "versitygw.log"), "w")
        s3 = subprocess.Popen(
            [a.versitygw, "--port", f"127.0.0.1:{s3_port}", "--health", "/health", "posix",
             "--sidecar", os.path.join(run_dir, "s3", "meta"), data],
            env={**os.environ, "ROOT_ACCESS_KEY_ID": access, "ROOT_SECRET_ACCESS_KEY": secret},
            stdout=s3_log, stderr=subprocess.STDOUT, cwd=run_dir)
        procs.append(s3)
        wait_http(f"http://127.0.0.1:{s3_port}/health", s3, "versitygw")

        replay_port = free_port()
        replay_log_path = os.path.join(run_dir, "openai-replay.log")
        replay_log = open(replay_log_path, "w")
        replay = subprocess.Popen(
            [a.replay, "--addr", f"127.0.0.1:{replay_port}"],
            env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
            stdout=subprocess.DEVNULL, stderr=replay_log)
        procs.append(replay)
        wait_http(f"http://127.0.0.1:{replay_port}/healthz", replay, "openai-replay")

        items_file = os.path.join(run_dir, "items.jsonl")
        with open(items_file, "w") as f:
            for n in range(1, a.items + 1):
                f.write(json.dumps({"id": f"item-{n}", "prompt": f"What is 2 + 2? (item {n})"}) + "\n")
        per_pod = math.ceil(a.items / a.pods)
        completions = math.ceil(a.items / per_pod)
        pods = min(a.pods, completions)
        share = a.rpm // pods
        log(f"{a.items} items, {completions} pods of {per_pod} at once, "
            f"{a.rpm} requests/min shared ({share} each), concurrency {a.concurrency}")

        base_env = {
            "PATH": os.environ.get("PATH", ""),
            "OPENAI_API_KEY": "sk-bench-batch",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{replay_port}/v1",
            "OTEL_SERVICE_NAME": "bench-batch",
            # Telemetry off: the bench measures the pacing, the writes and the runner's memory.
            "OTEL_SDK_DISABLED": "true",
            "LLMJOB_ITEMS_FILE": items_file,
            "LLMJOB_ITEMS_PER_POD": str(per_pod),
            "LLMJOB_CONCURRENCY": str(a.concurrency),
            "LLMJOB_REQUESTS_PER_MINUTE": str(share),
            "LLMJOB_MAX_FAILED_ITEMS": "0",
            "LLMJOB_OUTPUT_URL": "s3://results/bench",
            "TRACEPARENT": TRACEPARENT,
            "AWS_ACCESS_KEY_ID": access,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_ENDPOINT": f"http://127.0.0.1:{s3_port}",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }
        started = time.monotonic()
        runners = []
        for index in range(completions):
            rss = os.path.join(run_dir, f"rss-{index}.txt")
            result = os.path.join(run_dir, f"result-{index}.json")
            env = {**base_env, "JOB_COMPLETION_INDEX": str(index), "LLMJOB_RESULT_PATH": result}
            out = open(os.path.join(run_dir, f"pod-{index}.log"), "w")
            proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss, a.runner],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
            runners.append((index, proc, rss, result))
        codes = {}
        for index, proc, _, _ in runners:
            codes[index] = proc.wait()
        wall = time.monotonic() - started
        log(f"all pods exited after {wall:.1f} s")
        # Let the server's log catch up with the last answers.
        time.sleep(0.5)

        succeeded = failed = 0
        for index, _, _, result in runners:
            try:
                with open(result) as f:
                    shard = json.loads(f.read()).get("shard") or {}
                succeeded += shard.get("succeeded", 0)
                failed += shard.get("failed", 0)
            except (OSError, ValueError):
                pass
        rss_mib = []
        for _, _, rss, _ in runners:
            with open(rss) as f:
                rss_mib.append(int(f.read().split()[-1]) / 1024)
        requests = parse_requests(replay_log_path)
        times = [t for t, _ in requests]
        span = (times[-1] - times[0]) if len(times) > 1 else 0.0
        # P evenly spaced streams fit n - P intervals into the span (see the rate-limit test).
        achieved = (len(times) - pods) / span if span > 0 else float("inf")
        limit = a.rpm / 60
        peak = busiest_window(times, WINDOW_S)
        peak_allowed = math.floor(limit * WINDOW_S) + pods
        prefix = os.path.join(data, "results", "bench")
        keys = sorted(os.listdir(prefix)) if os.path.isdir(prefix) else []
        lines = 0
        for k in keys:
            with open(os.path.join(prefix, k), "rb") as f:
                lines += sum(1 for _ in f)

        def verdict(ok):
            return "PASS" if ok else "MISS"

        bad = {i: c for i, c in codes.items() if c != 0}
        print(f"\n### {a.items} items, {completions} pods at parallelism {pods}, "
              f"limit {a.rpm} requests/min ({datetime.date.today()})\n")
        print("| figure | value | target | |")
        print("|---|---|---|---|")
        print(f"| wall time, first pod started to last exited (s) | {wall:.1f} | "
              f"≥ {a.items / limit:.1f} (items / limit) | |")
        print(f"| pods exited 0 | {completions - len(bad)} of {completions} | all | "
              f"{verdict(not bad)} |")
        print(f"| items succeeded (shard totals) | {succeeded} (failed {failed}) | {a.items} | "
              f"{verdict(succeeded == a.items and failed == 0)} |")
        print(f"| chat requests received (replay log) | {len(times)} | {a.items} | |")
        print(f"| requests/s achieved over the run | {achieved:.1f} | ≤ {limit:.1f} (the limit) | "
              f"{verdict(achieved <= limit)} |")
        print(f"| busiest {WINDOW_S:.0f} s window (requests) | {peak} | ≤ {peak_allowed} "
              f"(limit × {WINDOW_S:.0f} s + one per pod) | {verdict(peak <= peak_allowed)} |")
        print(f"| runner peak RSS per pod (MiB, GNU time): min / mean / max | "
              f"{min(rss_mib):.1f} / {sum(rss_mib) / len(rss_mib):.1f} / {max(rss_mib):.1f} | | |")
        print(f"| objects written (s3://results/bench/) | {len(keys)} | {completions} | "
              f"{verdict(len(keys) == completions)} |")
        print(f"| result lines in them | {lines} | {a.items} | {verdict(lines == a.items)} |")
        print(f"\nlogs: {run_dir}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
