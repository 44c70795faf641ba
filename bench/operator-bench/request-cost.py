#!/usr/bin/env python3
"""CPU that kube-apiserver and etcd spend per LlmJob request: status by server-side apply (what
the operator sends), status by JSON merge patch, and a GET for scale.

Against the demo's control plane, with the operator paused so that it does not reconcile the
LlmJobs made here:

    cargo xtask demo --keep                       # prints KUBECONFIG=...
    kill -STOP $(pgrep -f target/debug/llmjob-operator)
    KUBECONFIG=... python3 bench/operator-bench/request-cost.py \\
        --apiserver-pid $(pgrep -f bin/kube-apiserver) --etcd-pid $(pgrep -f bin/etcd) --count 300

It creates --count LlmJobs in a new namespace, then times each kind of request over all of them,
twice, on one keep-alive connection, and prints a markdown table. CPU comes from /proc/<pid>/stat
(user + system), so it includes what the control plane does in the background meanwhile: compare
rows of the same run, not runs.
"""

import argparse
import atexit
import base64
import http.client
import json
import os
import ssl
import tempfile
import time
import urllib.parse

import yaml


def file_of(entry: dict, key: str) -> str:
    """The path of a kubeconfig file entry, writing inline `-data` to a temporary file."""
    if key in entry:
        return entry[key]
    f = tempfile.NamedTemporaryFile(delete=False)
    f.write(base64.b64decode(entry[key + "-data"]))
    f.close()
    atexit.register(os.unlink, f.name)  # the client key is among them
    return f.name


class Client:
    """One keep-alive HTTPS connection with the kubeconfig's client certificate."""

    def __init__(self, kubeconfig: str):
        kc = yaml.safe_load(open(kubeconfig))
        cluster, user = kc["clusters"][0]["cluster"], kc["users"][0]["user"]
        ctx = ssl.create_default_context(cafile=file_of(cluster, "certificate-authority"))
        ctx.load_cert_chain(file_of(user, "client-certificate"), file_of(user, "client-key"))
        url = urllib.parse.urlparse(cluster["server"])
        self.conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx)

    def call(self, method, path, body=None, ctype="application/json"):
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers={"Content-Type": ctype})
        resp = self.conn.getresponse()
        out = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {out[:300]!r}")
        return json.loads(out)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status(name: str, phase: str, tag: str) -> dict:
    """A status shaped like the operator's: phase, job, trace id and the five conditions."""
    return {
        "phase": phase,
        "jobName": name,
        "observedGeneration": 1,
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "conditions": [
            {
                "type": t,
                "status": "False",
                "reason": phase,
                "message": f"Job {name} is {phase} ({tag})",
                "lastTransitionTime": "2026-12-03T10:00:00Z",
                "observedGeneration": 1,
            }
            for t in ["Ready", "Succeeded", "Failed", "Reconciling", "Stalled"]
        ],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--apiserver-pid", type=int, required=True)
    ap.add_argument("--etcd-pid", type=int, required=True)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--namespace", default=f"request-cost-{int(time.time())}")
    args = ap.parse_args()
    client = Client(os.environ["KUBECONFIG"])
    ns, n = args.namespace, args.count
    client.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    base = f"/apis/llmjob.dev/v1alpha1/namespaces/{ns}/llmjobs"
    spec = {"model": "gpt-4o-mini", "prompt": "Say hi.", "openai": {"apiKeySecretRef": {"name": "openai"}}}
    rv = {}
    for i in range(n):
        o = client.call("POST", base, {"apiVersion": "llmjob.dev/v1alpha1", "kind": "LlmJob", "metadata": {"name": f"j{i}"}, "spec": spec})
        rv[i] = o["metadata"]["resourceVersion"]

    def apply(phase, tag):
        def one(i):
            body = {
                "apiVersion": "llmjob.dev/v1alpha1",
                "kind": "LlmJob",
                "metadata": {"name": f"j{i}", "resourceVersion": rv[i]},
                "status": status(f"j{i}", phase, tag),
            }
            o = client.call("PATCH", f"{base}/j{i}/status?fieldManager=llmjob-operator&force=true", body, "application/apply-patch+yaml")
            rv[i] = o["metadata"]["resourceVersion"]
        return one

    def merge(phase, tag):
        def one(i):
            body = {"metadata": {"resourceVersion": rv[i]}, "status": status(f"j{i}", phase, tag)}
            o = client.call("PATCH", f"{base}/j{i}/status?fieldManager=llmjob-operator", body, "application/merge-patch+json")
            rv[i] = o["metadata"]["resourceVersion"]
        return one

    def get(i):
        client.call("GET", f"{base}/j{i}")

    print(f"| request ({n} LlmJobs) | kube-apiserver CPU (ms/request) | etcd CPU (ms/request) | wall (ms/request) |")
    print("|---|---|---|---|")
    for round_ in range(2):
        for label, one in [
            ("status, server-side apply", apply("Pending", f"apply {round_}")),
            ("status, JSON merge patch", merge("Running", f"merge {round_}")),
            ("GET", get),
        ]:
            a0, e0, t0 = cpu_seconds(args.apiserver_pid), cpu_seconds(args.etcd_pid), time.monotonic()
            for i in range(n):
                one(i)
            a1, e1, t1 = cpu_seconds(args.apiserver_pid), cpu_seconds(args.etcd_pid), time.monotonic()
            print(f"| {label} | {(a1 - a0) / n * 1e3:.2f} | {(e1 - e0) / n * 1e3:.2f} | {(t1 - t0) / n * 1e3:.2f} |", flush=True)
    client.call("DELETE", f"/api/v1/namespaces/{ns}")


if __name__ == "__main__":
    main()
