{{/*
Names. Namespaced objects are named from the full name; cluster-scoped objects from the
full name and the release namespace, so two releases in two namespaces never share a
cluster-scoped name. Kubernetes names are at most 63 characters where they become
labels; the full name is cut to leave room for the suffixes.
*/}}
{{- define "kruntimes.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The prefix of cluster-scoped names: full name and release namespace. */}}
{{- define "kruntimes.clusterName" -}}
{{- printf "%s-%s" (include "kruntimes.fullname" .) .Release.Namespace | trunc 200 | trimSuffix "-" }}
{{- end }}

{{- define "kruntimes.webhook.name" -}}
{{- printf "%s-webhook" (include "kruntimes.fullname" .) }}
{{- end }}

{{- define "kruntimes.controller.name" -}}
{{- printf "%s-controller" (include "kruntimes.fullname" .) }}
{{- end }}

{{/* The Secret of the self-managed certificate mode. */}}
{{- define "kruntimes.webhook.certSecret" -}}
{{- printf "%s-webhook-certs" (include "kruntimes.fullname" .) }}
{{- end }}

{{/* The Secret cert-manager writes the serving certificate into. */}}
{{- define "kruntimes.webhook.tlsSecret" -}}
{{- printf "%s-webhook-tls" (include "kruntimes.fullname" .) }}
{{- end }}

{{/* Both webhook configurations carry this name. */}}
{{- define "kruntimes.webhookConfiguration.name" -}}
{{- include "kruntimes.clusterName" . }}
{{- end }}

{{- define "kruntimes.controller.leaseName" -}}
{{- printf "%s-controller" (include "kruntimes.fullname" .) }}
{{- end }}

{{/* Labels of every object (with the selector labels of its component, or the instance). */}}
{{- define "kruntimes.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: kruntimes
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of one component: include with (list $ "webhook"). The name is fixed:
the controller admits its own pods to runtimed's port in every Runtime's NetworkPolicy
by app.kubernetes.io/name=kruntimes-controller.
*/}}
{{- define "kruntimes.selectorLabels" -}}
app.kubernetes.io/name: kruntimes-{{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Labels of one component's objects: include with (list $ "webhook"). */}}
{{- define "kruntimes.componentLabels" -}}
{{ include "kruntimes.labels" (index . 0) }}
{{ include "kruntimes.selectorLabels" . }}
{{- end }}

{{/* metadata.annotations from commonAnnotations plus the dict given: (list $ dict). */}}
{{- define "kruntimes.annotations" -}}
{{- $all := merge (deepCopy (index . 1)) (deepCopy (index . 0).Values.commonAnnotations) }}
{{- with $all }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
An image reference: registry/repository, then @digest when a digest is set, else :tag,
the tag defaulting to the chart's appVersion. include with (list $ .Values.x.image).
*/}}
{{- define "kruntimes.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- $repository := printf "%s/%s" $image.registry $image.repository | trimPrefix "/" }}
{{- if $image.digest }}
{{- printf "%s@%s" $repository $image.digest }}
{{- else }}
{{- $tag := default $root.Chart.AppVersion $image.tag }}
{{- if eq $tag "latest" }}
{{- fail (printf "%s: the tag latest is refused: name a version or a digest" $image.repository) }}
{{- end }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{/* The namespaces the release serves: controller.namespaces, or none (every one). */}}
{{- define "kruntimes.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: [kube-system, kube-node-lease, {{ .Release.Namespace }}]
    - key: {{ .Values.webhook.optOutLabel }}
      operator: DoesNotExist
    {{- with .Values.controller.namespaces }}
    - key: kubernetes.io/metadata.name
      operator: In
      values: {{ toJson . }}
    {{- end }}
    {{- with .Values.webhook.namespaceSelectorExpressions }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* The security context of every container the chart renders (Pod Security restricted). */}}
{{- define "kruntimes.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* The pod security context of every pod the chart renders. */}}
{{- define "kruntimes.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{- define "kruntimes.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Scheduling of one component: include with (list $ .Values.webhook "webhook"). The default
spread puts replicas on different nodes when it can (ScheduleAnyway: a one-node cluster
still schedules them).
*/}}
{{- define "kruntimes.scheduling" -}}
{{- $root := index . 0 }}
{{- $values := index . 1 }}
{{- $component := index . 2 }}
{{- with $values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
topologySpreadConstraints:
{{- if $values.topologySpreadConstraints }}
  {{- toYaml $values.topologySpreadConstraints | nindent 2 }}
{{- else }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "kruntimes.selectorLabels" (list $root $component) | nindent 8 }}
{{- end }}
{{- end }}

{{/* The test namespace: tests.namespace, else the first watched namespace, else default. */}}
{{- define "kruntimes.tests.namespace" -}}
{{- if .Values.tests.namespace }}
{{- .Values.tests.namespace }}
{{- else if .Values.controller.namespaces }}
{{- first .Values.controller.namespaces }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/*
The labels the self-managed mode finds this release's webhook configurations by: the
documented kruntimes.io/ca-bundle label plus the release (app.kubernetes.io/instance, in
every object's labels) and its namespace, so a second
release never patches (or tries to patch) another release's configurations.
*/}}
{{- define "kruntimes.caBundleLabels" -}}
kruntimes.io/ca-bundle: self-managed
chart.kruntimes.io/namespace: {{ .Release.Namespace }}
{{- end }}

{{- define "kruntimes.caBundleSelector" -}}
{{- printf "kruntimes.io/ca-bundle=self-managed,app.kubernetes.io/instance=%s,chart.kruntimes.io/namespace=%s" .Release.Name .Release.Namespace }}
{{- end }}

{{/*
checkov checks the chart's workloads fail by design, with the reason; rendered as
checkov.io/skipN annotations (checkov reads them from the object's metadata): (list $ image).
*/}}
{{- define "kruntimes.checkovWorkloadSkips" -}}
{{- $image := index . 1 }}
checkov.io/skip1: "CKV_K8S_38=the component talks to the Kubernetes API (watches, Secret, Lease), so the pod mounts its service account token"
checkov.io/skip2: "CKV_K8S_15=imagePullPolicy is a value (default IfNotPresent); images are pinned by version or digest, so Always only adds registry calls"
{{- if not $image.digest }}
checkov.io/skip3: "CKV_K8S_43=images are referenced by version tag by default; set image.digest to pin them by digest (ci/digests-values.yaml)"
{{- end }}
{{- end }}

{{/* Egress to the Kubernetes API server and to DNS, for both components. */}}
{{- define "kruntimes.apiServerEgress" -}}
# The Kubernetes API server: not a pod, so an ipBlock (networkPolicy.apiServer).
- to:
    {{- range .Values.networkPolicy.apiServer.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .Values.networkPolicy.apiServer.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
# Name resolution, should a client resolve the API server's name.
- to:
    - namespaceSelector: {}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end }}

{{/* checkov checks the hook and test pods fail by design, with the reason: (list $ image). */}}
{{- define "kruntimes.checkovHookSkips" -}}
{{- $image := index . 1 }}
checkov.io/skip1: "CKV_K8S_38=the pod runs kubectl against the Kubernetes API, so it mounts its service account token"
checkov.io/skip2: "CKV_K8S_15=a one-shot pod of a pinned image; imagePullPolicy Always only adds a registry call"
{{- if not $image.digest }}
checkov.io/skip3: "CKV_K8S_43=the image is referenced by version tag by default; set its digest value to pin it by digest (ci/digests-values.yaml)"
{{- end }}
checkov.io/skip4: "CKV_K8S_8=a one-shot pod that exits when its command ends: no liveness probe to answer"
checkov.io/skip5: "CKV_K8S_9=a one-shot pod that serves nothing: no readiness probe to answer"
{{- end }}

{{/*
A NetworkPolicy for a one-shot pod of the chart (hook or test): no ingress; egress to the
API server and DNS, plus extra egress rules. include with (list $ "component" hook-dict
extra-egress-yaml).
*/}}
{{- define "kruntimes.oneShotNetworkPolicy" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "kruntimes.fullname" $root }}-{{ $component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kruntimes.componentLabels" (list $root $component) | nindent 4 }}
  {{- with include "kruntimes.annotations" (list $root (index . 2)) }}{{ . | trim | nindent 2 }}{{- end }}
spec:
  podSelector:
    matchLabels:
      {{- include "kruntimes.selectorLabels" (list $root $component) | nindent 6 }}
  policyTypes: [Ingress, Egress]
  egress:
    {{- include "kruntimes.apiServerEgress" $root | nindent 4 }}
    {{- with index . 3 }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* kubectl's HOME (its discovery cache) on an emptyDir named tmp: the root is read-only. */}}
{{- define "kruntimes.kubectlHome" -}}
env:
  - name: HOME
    value: /tmp
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}
