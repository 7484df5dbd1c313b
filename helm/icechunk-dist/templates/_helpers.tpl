{{/* Chart name, truncated to the 63 characters Kubernetes allows in a label. */}}
{{- define "icechunk-dist.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of this release's resources. The DaskJob's cluster takes the same name,
so the scheduler Service selector below can name it.
*/}}
{{- define "icechunk-dist.fullname" -}}
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

{{- define "icechunk-dist.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "icechunk-dist.labels" -}}
helm.sh/chart: {{ include "icechunk-dist.chart" . }}
{{ include "icechunk-dist.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "icechunk-dist.selectorLabels" -}}
app.kubernetes.io/name: {{ include "icechunk-dist.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "icechunk-dist.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "icechunk-dist.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "icechunk-dist.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}

{{/*
Credentials come only from a Secret referenced by name; refuse values that look like
credentials so they can never be rendered into a manifest.
*/}}
{{- define "icechunk-dist.validate" -}}
{{- if not .Values.storage.url }}
{{- fail "storage.url is required (s3://bucket/prefix or file:///path)" }}
{{- end }}
{{- range $key := list "accessKeyId" "secretAccessKey" "sessionToken" "password" "credentials" }}
{{- if hasKey $.Values.storage $key }}
{{- fail (printf "storage.%s is not allowed: put credentials in a Secret and set storage.credentialsSecret" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The ingestion config as JSON (what `icechunk-dist ingest --config` reads). */}}
{{- define "icechunk-dist.ingestConfig" -}}
{{- $storage := dict "url" .Values.storage.url "endpoint_url" .Values.storage.endpointUrl "allow_http" .Values.storage.allowHttp "region" .Values.storage.region }}
{{- $cfg := dict "storage" $storage "branch" .Values.ingest.branch "message" .Values.ingest.message "create" .Values.ingest.createRepository "rebase" .Values.ingest.rebase "arrays" .Values.ingest.arrays }}
{{- toPrettyJson $cfg }}
{{- end }}
