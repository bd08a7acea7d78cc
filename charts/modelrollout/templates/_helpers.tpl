{{/*
Names, labels and the pieces both Deployments share. The hardening and the probes live here rather
than in values.yaml on purpose: they are the same for every install (and tests/unit/test_manifests.py
checks that they equal manifests/).
*/}}

{{- define "modelrollout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release name when it already says modelrollout, else <release>-modelrollout. */}}
{{- define "modelrollout.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (default .Chart.Name .Values.nameOverride) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (default .Chart.Name .Values.nameOverride) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "modelrollout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "modelrollout.labels" -}}
helm.sh/chart: {{ include "modelrollout.chart" . }}
{{ include "modelrollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: modelrollout
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "modelrollout.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "modelrollout.comparatorUrl" -}}
{{- if .Values.config.comparatorUrl }}
{{- .Values.config.comparatorUrl }}
{{- else }}
{{- printf "http://%s-comparator.%s.svc:8090" (include "modelrollout.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "modelrollout.serviceAccountName" -}}
{{- default (include "modelrollout.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "modelrollout.comparatorTokenSecret" -}}
{{- default (printf "%s-comparator-token" (include "modelrollout.fullname" .)) .Values.comparator.tokenSecretName }}
{{- end }}

{{- define "modelrollout.webhookSecretName" -}}
{{- default (printf "%s-webhook" (include "modelrollout.fullname" .)) .Values.webhook.secretName }}
{{- end }}

{{/*
Non-root (the image's user 65532), seccomp: the restricted Pod Security Standard. The values'
podSecurityContext / securityContext are merged over these (a field set there wins).
*/}}
{{- define "modelrollout.podSecurityContext" -}}
{{- toYaml (mergeOverwrite (fromYaml (include "modelrollout.podSecurityContextDefaults" .)) .Values.podSecurityContext) }}
{{- end }}

{{- define "modelrollout.containerSecurityContext" -}}
{{- toYaml (mergeOverwrite (fromYaml (include "modelrollout.containerSecurityContextDefaults" .)) .Values.securityContext) }}
{{- end }}

{{- define "modelrollout.podSecurityContextDefaults" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "modelrollout.containerSecurityContextDefaults" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* HTTP probes on the container port `http`: liveness on /healthz, readiness on the given path. */}}
{{- define "modelrollout.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
readinessProbe:
  httpGet:
    path: {{ . }}
    port: http
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}

{{/* The pods' scheduling settings, from the values. */}}
{{- define "modelrollout.scheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.topologySpreadConstraints }}
topologySpreadConstraints:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/*
The operator's permissions: exactly the calls it makes (no Secrets, Pods or Namespaces). The
argument is "cluster" (a ClusterRole: every namespace, ClusterKopfPeering) or "namespace" (a Role
in one watched namespace, KopfPeering only).
*/}}
{{- define "modelrollout.rules" -}}
# Watch ModelRollouts (each tick reads them from memory; get only after a refused status write);
# patch them for kopf's own annotations and to remove a handled command.
- apiGroups: ["modelrollout.io"]
  resources: ["modelrollouts"]
  verbs: ["get", "list", "watch", "patch"]
# The whole rollout state lives in the status (read with the object above).
- apiGroups: ["modelrollout.io"]
  resources: ["modelrollouts/status"]
  verbs: ["patch"]
# The primary, `<name>-shadow` and (Standard mode) `<name>-canary` / `<name>-baseline` InferenceServices:
# watched (list, watch) and read from memory, so an idle rollout costs no request; get only to read
# again after a write was refused as stale (409).
- apiGroups: ["serving.kserve.io"]
  resources: ["inferenceservices"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Standard mode: whether the primary's Deployment has rolled out a promotion (KServe's status cannot say).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get"]
# Standard mode: the weights of the HTTPRoute named in spec.target.httpRoute.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "patch"]
# Every transition is a Kubernetes Event (kopf posts them to the core API).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# kopf peering: one acting operator.
- apiGroups: ["kopf.dev"]
{{- if eq . "cluster" }}
  resources: ["kopfpeerings", "clusterkopfpeerings"]
{{- else }}
  resources: ["kopfpeerings"]
{{- end }}
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
