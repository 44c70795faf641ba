{{/*
Helpers shared by every template. Names follow the usual `<release>-<chart>` convention,
truncated to 63 characters (the DNS label limit).
*/}}

{{- define "llmjob-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmjob-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "llmjob-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the release: the chart's own, then `commonLabels` (which cannot
override the chart's: those select the operator's pods). One YAML mapping, keys sorted.
*/}}
{{- define "llmjob-operator.labels" -}}
{{- $own := include "llmjob-operator.selectorLabels" . | fromYaml }}
{{- $_ := set $own "helm.sh/chart" (include "llmjob-operator.chart" .) }}
{{- $_ = set $own "app.kubernetes.io/version" .Chart.AppVersion }}
{{- $_ = set $own "app.kubernetes.io/managed-by" .Release.Service }}
{{- $_ = set $own "app.kubernetes.io/part-of" "llmjob-operator" }}
{{- toYaml (merge $own (deepCopy (.Values.commonLabels | default dict))) }}
{{- end }}

{{/* Labels that select the operator's pods (immutable once installed). */}}
{{- define "llmjob-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmjob-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "llmjob-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llmjob-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from a `{repository, tag, digest}` value: `repository@digest` when a digest is
set (it wins over the tag), else `repository:tag`, the tag defaulting to the chart's appVersion.
Called with (list <image value> <root context>).
*/}}
{{- define "llmjob-operator.imageRef" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "llmjob-operator.image" -}}
{{- include "llmjob-operator.imageRef" (list .Values.image .) }}
{{- end }}

{{- define "llmjob-operator.runnerImage" -}}
{{- include "llmjob-operator.imageRef" (list .Values.runner.image .) }}
{{- end }}

{{/*
The rules the operator needs on LlmJobs and their children, in every namespace it watches.
Used by the ClusterRole (cluster-wide mode) and by each Role (namespaced mode), so both modes
grant exactly the same verbs. No wildcards.
*/}}
{{- define "llmjob-operator.rules" -}}
# Why: the controller watches LlmJobs (list/watch) and reads one before reconciling (get). It
# never writes the spec or metadata (no finalizer: deletion cascades through owner references).
- apiGroups: ["llmjob.dev"]
  resources: ["llmjobs"]
  verbs: ["get", "list", "watch"]
# Why: phase, conditions, observedGeneration and the run's result are written to the status
# subresource, by server-side apply (a patch).
- apiGroups: ["llmjob.dev"]
  resources: ["llmjobs/status"]
  verbs: ["get", "patch"]
# Why: the Jobs the operator creates carry an owner reference with blockOwnerDeletion, which the
# API server only allows to a client that may update the owner's finalizers.
- apiGroups: ["llmjob.dev"]
  resources: ["llmjobs/finalizers"]
  verbs: ["update"]
# Why: each LlmJob runs as one batch Job: the operator creates it by server-side apply (create +
# patch), watches it to follow the run and patches spec.suspend (suspend/resume). It never
# deletes one: the garbage collector does, through the owner reference.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Why: the run's result (tokens, finish reason, trace id) is read from the runner pod's
# termination message, and a missing API-key Secret or key from its waiting state (the kubelet's
# CreateContainerConfigError); read-only. There is no rule on Secrets: the operator reads none.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Why: a batch's inline items, and a prompt or messages too large for an environment variable,
# go in an input ConfigMap the operator writes by server-side apply (create + patch) before the
# Job, owned by the LlmJob (garbage-collected with it); `get` reads the ConfigMap key of
# spec.batch.itemsFrom to count its items (the Indexed Job's completions). Never delete.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
# Why: the tenant policy can be loosened per namespace by a namespace label
# (llmjob.dev/allow-*); the operator reads the labels of an LlmJob's namespace, only when the
# policy would refuse the LlmJob without them. In a Role this reaches only its own namespace.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
# Why: the operator records what it did (run started, succeeded, failed, invalid spec) as
# Kubernetes Events on the LlmJob; patch aggregates repeated events.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Why: a missing Secret of a pod volume (spec.output.credentialsSecretRef) leaves the runner pod
# in ContainerCreating, and the kubelet reports it only as a FailedMount Event on the pod; the
# operator lists those (field selector on the pod and the reason) only for a pod still creating
# after 20 s, to report SecretNotFound. Read-only; core Events, as the kubelet writes them.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
{{- end }}

{{/* OTEL_RESOURCE_ATTRIBUTES of the operator: pod identity plus the user's extra attributes. */}}
{{- define "llmjob-operator.resourceAttributes" -}}
{{- $attrs := list "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.pod.name=$(POD_NAME)" (printf "service.version=%s" .Chart.AppVersion) }}
{{- range $k, $v := .Values.operatorTelemetry.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k (toString $v)) }}
{{- end }}
{{- join "," $attrs }}
{{- end }}
