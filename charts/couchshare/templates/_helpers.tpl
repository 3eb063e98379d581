{{/*
Names. Kubernetes names are at most 63 characters (DNS labels); suffixes below are short, so
the base name is cut at 40 to leave room for "-couchdb-headless" and the like.
*/}}
{{- define "couchshare.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "couchshare.fullname" -}}
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

{{- define "couchshare.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels, on every object. */}}
{{- define "couchshare.labels" -}}
helm.sh/chart: {{ include "couchshare.chart" . }}
app.kubernetes.io/name: {{ include "couchshare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: couchshare
{{- end }}

{{/* Selector labels of the operator's Pods. */}}
{{- define "couchshare.selectorLabels" -}}
app.kubernetes.io/name: {{ include "couchshare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "couchshare.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "couchshare.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "couchshare.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The operator's permissions on the namespaced resources it manages (ClusterRole or Role). */}}
{{- define "couchshare.namespacedRules" -}}
- apiGroups: ["couchshare.io"]
  resources: ["couchservers", "couchdatabases", "couchusers", "couchgrants", "couchshares", "couchbackups", "couchscheduledbackups"]
  verbs: ["get", "list", "watch", "patch", "update"]
# A CouchScheduledBackup creates a CouchBackup for each run and deletes the expired ones.
- apiGroups: ["couchshare.io"]
  resources: ["couchbackups"]
  verbs: ["create", "delete"]
- apiGroups: ["couchshare.io"]
  resources:
    - "couchservers/status"
    - "couchdatabases/status"
    - "couchusers/status"
    - "couchgrants/status"
    - "couchshares/status"
    - "couchbackups/status"
    - "couchscheduledbackups/status"
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Cluster-scoped reads: the CRDs (waiting until they are Established) and namespaces
(`allowedNamespaces: {from: Selector}`). */}}
{{- define "couchshare.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  resourceNames:
    - couchservers.couchshare.io
    - couchdatabases.couchshare.io
    - couchusers.couchshare.io
    - couchgrants.couchshare.io
    - couchshares.couchshare.io
    - couchbackups.couchshare.io
    - couchscheduledbackups.couchshare.io
  verbs: ["get"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end }}

{{/* ---- CouchDB (couchdb.enabled) ---- */}}

{{- define "couchshare.couchdb.fullname" -}}
{{- printf "%s-couchdb" (include "couchshare.fullname" .) }}
{{- end }}

{{- define "couchshare.couchdb.headless" -}}
{{- printf "%s-couchdb-headless" (include "couchshare.fullname" .) }}
{{- end }}

{{- define "couchshare.couchdb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "couchshare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: couchdb
{{- end }}

{{- define "couchshare.couchdb.labels" -}}
helm.sh/chart: {{ include "couchshare.chart" . }}
{{ include "couchshare.couchdb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.couchdb.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: couchshare
{{- end }}

{{- define "couchshare.couchdb.adminSecretName" -}}
{{- default (printf "%s-couchdb-admin" (include "couchshare.fullname" .)) .Values.couchdb.adminSecret.name }}
{{- end }}

{{- define "couchshare.couchdb.cookieSecretName" -}}
{{- printf "%s-couchdb-erlang-cookie" (include "couchshare.fullname" .) }}
{{- end }}

{{/* The client Service URL, as the operator reaches CouchDB. */}}
{{- define "couchshare.couchdb.url" -}}
{{- printf "http://%s.%s.svc:%d" (include "couchshare.couchdb.fullname" .) .Release.Namespace (int .Values.couchdb.service.port) }}
{{- end }}

{{/* The host part of a node's Erlang name: `<pod>.<headless>.<ns>.svc.<domain>`. */}}
{{- define "couchshare.couchdb.nodeHost" -}}
{{- printf "%s.%s.%s.svc.%s" .pod (include "couchshare.couchdb.headless" .root) .root.Release.Namespace .root.Values.couchdb.clusterDomain }}
{{- end }}

{{/* Copies of each shard ([cluster] n): couchdb.cluster.copies, or min(nodes, 3) when 0. */}}
{{- define "couchshare.couchdb.n" -}}
{{- $nodes := int .Values.couchdb.nodes }}
{{- $n := int .Values.couchdb.cluster.copies }}
{{- if eq $n 0 }}{{ min $nodes 3 }}{{ else }}{{ $n }}{{ end }}
{{- end }}

{{/* Values that cannot be checked by the JSON schema alone. */}}
{{- define "couchshare.validate" -}}
{{- if .Values.couchdb.enabled }}
{{- if and .Values.watchNamespace (ne .Values.watchNamespace .Release.Namespace) }}
{{- fail (printf "couchdb.enabled creates the CouchServer in the release namespace %q, which watchNamespace=%q does not watch: set watchNamespace to %q or leave it empty" .Release.Namespace .Values.watchNamespace .Release.Namespace) }}
{{- end }}
{{- if gt (int .Values.couchdb.cluster.copies) (int .Values.couchdb.nodes) }}
{{- fail (printf "couchdb.cluster.copies (%d) cannot exceed couchdb.nodes (%d)" (int .Values.couchdb.cluster.copies) (int .Values.couchdb.nodes)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The leader-election Lease: one per release, so two releases in a namespace never compete. */}}
{{- define "couchshare.leaseName" -}}
{{- default (printf "%s-leader" (include "couchshare.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}
