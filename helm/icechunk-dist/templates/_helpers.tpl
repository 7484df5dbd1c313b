{{/* Chart name, truncated to the 63 characters Kubernetes allows in a label. */}}
{{- define "icechunk-dist.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of this release's resources, capped at 37 characters: the operator names
the cluster after the DaskJob and derives "<name>-scheduler" (Service, Deployment),
"<name>-runner" (pod) and "<name>-default-worker-<10 hex>" (worker Deployments, 26 more
characters) from it, and every Kubernetes name and label value stops at 63.
*/}}
{{- define "icechunk-dist.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | replace "." "-" | trunc 37 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | replace "." "-" | trunc 37 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | replace "." "-" | trunc 37 | trimSuffix "-" }}
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
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
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
{{- if eq .Values.job.kind "ingest" }}
{{- if not .Values.ingest.sources }}
{{- fail "ingest.sources is required for job.kind=ingest (paths, s3:// URLs or globs)" }}
{{- end }}
{{- else }}
{{- if not .Values.map.toBranch }}
{{- fail "map.toBranch is required for job.kind=map" }}
{{- end }}
{{- if and (not .Values.map.func) (not .Values.map.rechunk) }}
{{- fail "job.kind=map needs map.func (module:function) and/or map.rechunk" }}
{{- end }}
{{- if and .Values.map.func (not (regexMatch "^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$" .Values.map.func)) }}
{{- fail "map.func must be module:function" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Empty strings become null (the IngestConfig's "not set"). */}}
{{- define "icechunk-dist.orNull" -}}
{{- if or (kindIs "invalid" .) (eq (toString .) "") }}null{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
The ingestion config as JSON: icechunk_dist.ingest.IngestConfig, what
`icechunk-dist ingest --config` reads (keys in the IngestConfig's spelling).
*/}}
{{- define "icechunk-dist.ingestConfig" -}}
{{- $v := .Values -}}
{
  "repo": {{ default $v.storage.url $v.ingest.repo | toJson }},
  "sources": {{ $v.ingest.sources | toJson }},
  "concat_dim": {{ include "icechunk-dist.orNull" $v.ingest.concatDim }},
  "group": {{ include "icechunk-dist.orNull" $v.ingest.group }},
  "branch": {{ $v.ingest.branch | toJson }},
  "batch_size": {{ include "icechunk-dist.orNull" $v.ingest.batchSize }},
  "message": {{ include "icechunk-dist.orNull" $v.ingest.message }},
  "endpoint_url": {{ include "icechunk-dist.orNull" $v.storage.endpointUrl }},
  "allow_http": {{ $v.storage.allowHttp | toJson }},
  "region": {{ include "icechunk-dist.orNull" $v.storage.region }}
}
{{- end }}

{{/* Workers the runner waits for: job.waitForWorkers, or every replica when null. */}}
{{- define "icechunk-dist.waitForWorkers" -}}
{{- if kindIs "invalid" .Values.job.waitForWorkers }}{{ int .Values.worker.replicas }}{{ else }}{{ int .Values.job.waitForWorkers }}{{ end }}
{{- end }}

{{/* The job runner's command line (after the `icechunk-dist` command), one YAML list item per line. */}}
{{- define "icechunk-dist.runnerArgs" -}}
{{- $v := .Values -}}
{{- if eq $v.job.kind "ingest" }}
- ingest
- --config
- /etc/icechunk-dist/ingest.json
{{- else }}
- map
- {{ default $v.storage.url $v.map.repo | quote }}
- --from
- {{ $v.map.from | quote }}
- --to-branch
- {{ $v.map.toBranch | quote }}
{{- with $v.map.func }}
- --func
- {{ . | quote }}
{{- end }}
{{- with $v.map.group }}
- --group
- {{ . | quote }}
{{- end }}
{{- with $v.map.rechunk }}
{{- $parts := list }}
{{- range $dim, $n := . }}{{ $parts = append $parts (printf "%s=%d" $dim (int $n)) }}{{ end }}
- --rechunk
- {{ join "," $parts | quote }}
{{- end }}
{{- with $v.map.message }}
- -m
- {{ . | quote }}
{{- end }}
{{- with $v.storage.endpointUrl }}
- --endpoint-url
- {{ . | quote }}
{{- end }}
{{- if $v.storage.allowHttp }}
- --allow-http
{{- end }}
{{- with $v.storage.region }}
- --region
- {{ . | quote }}
{{- end }}
{{- end }}
- --scheduler
- $(DASK_SCHEDULER_ADDRESS)
- --wait-for-workers
- {{ include "icechunk-dist.waitForWorkers" . | quote }}
- --timeout
- {{ int $v.job.timeoutSeconds | quote }}
{{- if not $v.job.progress }}
- --no-progress
{{- end }}
{{- range (eq $v.job.kind "ingest" | ternary $v.ingest.extraArgs $v.map.extraArgs) }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
The DaskJob, rendered for a name: `ingest-daskjob.yaml` renders it with the fullname, the
schedule's ConfigMap with a placeholder the CronJob replaces by a unique name per run.
Call as (dict "root" $ "name" NAME "scheduled" BOOL). Only fields of the operator's DaskJob CRD.
*/}}
{{- define "icechunk-dist.daskJob" -}}
{{- $ := .root }}
{{- $v := $.Values }}
{{- $name := .name }}
{{- $image := include "icechunk-dist.image" $ }}
{{- $sa := include "icechunk-dist.serviceAccountName" $ }}
apiVersion: kubernetes.dask.org/v1
kind: DaskJob
metadata:
  name: {{ $name }}
  labels:
    {{- include "icechunk-dist.labels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ $v.job.kind }}
    {{- if .scheduled }}
    icechunk-dist/scheduled: "true"
    {{- end }}
spec:
  job:
    metadata:
      labels:
        {{- include "icechunk-dist.selectorLabels" $ | nindent 8 }}
        app.kubernetes.io/component: job
    spec:
      serviceAccountName: {{ $sa }}
      automountServiceAccountToken: false
      restartPolicy: Never
      {{- if not (kindIs "invalid" $v.job.activeDeadlineSeconds) }}
      activeDeadlineSeconds: {{ int $v.job.activeDeadlineSeconds }}
      {{- end }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      {{- with $v.image.pullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: job
          image: {{ $image | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          # args only (the image has no ENTRYPOINT): the whole command line, as the operator's
          # examples write it
          args:
            - icechunk-dist
            {{- include "icechunk-dist.runnerArgs" $ | trim | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          {{- with $v.storage.credentialsSecret }}
          envFrom:
            - secretRef:
                name: {{ . | quote }}
          {{- end }}
          {{- with $v.job.env }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $v.job.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- if eq $v.job.kind "ingest" }}
          volumeMounts:
            - name: ingest-config
              mountPath: /etc/icechunk-dist
              readOnly: true
          {{- end }}
      {{- if eq $v.job.kind "ingest" }}
      volumes:
        - name: ingest-config
          configMap:
            name: {{ include "icechunk-dist.fullname" $ }}-ingest
      {{- end }}
      {{- with $v.job.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.job.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  cluster:
    spec:
      idleTimeout: {{ int $v.scheduler.idleTimeoutSeconds }}
      worker:
        replicas: {{ int $v.worker.replicas }}
        spec:
          serviceAccountName: {{ $sa }}
          automountServiceAccountToken: false
          securityContext:
            {{- toYaml $v.podSecurityContext | nindent 12 }}
          {{- with $v.image.pullSecrets }}
          imagePullSecrets:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          containers:
            - name: worker
              image: {{ $image | quote }}
              imagePullPolicy: {{ $v.image.pullPolicy }}
              args:
                - dask
                - worker
                - --name
                - $(DASK_WORKER_NAME)
                - --nthreads
                - {{ int $v.worker.threads | quote }}
                - --memory-limit
                - auto
                - --dashboard
                - --dashboard-address
                - ":8788"
              ports:
                - name: http-dashboard
                  containerPort: 8788
                  protocol: TCP
              securityContext:
                {{- toYaml $v.securityContext | nindent 16 }}
              {{- with $v.storage.credentialsSecret }}
              envFrom:
                - secretRef:
                    name: {{ . | quote }}
              {{- end }}
              {{- with $v.worker.env }}
              env:
                {{- toYaml . | nindent 16 }}
              {{- end }}
              {{- with $v.worker.resources }}
              resources:
                {{- toYaml . | nindent 16 }}
              {{- end }}
          {{- with $v.worker.nodeSelector }}
          nodeSelector:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $v.worker.tolerations }}
          tolerations:
            {{- toYaml . | nindent 12 }}
          {{- end }}
      scheduler:
        spec:
          serviceAccountName: {{ $sa }}
          automountServiceAccountToken: false
          securityContext:
            {{- toYaml $v.podSecurityContext | nindent 12 }}
          {{- with $v.image.pullSecrets }}
          imagePullSecrets:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          containers:
            - name: scheduler
              image: {{ $image | quote }}
              imagePullPolicy: {{ $v.image.pullPolicy }}
              args:
                - dask
                - scheduler
                - --port
                - "8786"
                - --dashboard-address
                - ":8787"
              ports:
                - name: tcp-comm
                  containerPort: 8786
                  protocol: TCP
                - name: http-dashboard
                  containerPort: 8787
                  protocol: TCP
              readinessProbe:
                httpGet:
                  port: http-dashboard
                  path: /health
                initialDelaySeconds: 5
                periodSeconds: 10
              livenessProbe:
                httpGet:
                  port: http-dashboard
                  path: /health
                initialDelaySeconds: 15
                periodSeconds: 20
              securityContext:
                {{- toYaml $v.securityContext | nindent 16 }}
              {{- with $v.scheduler.resources }}
              resources:
                {{- toYaml . | nindent 16 }}
              {{- end }}
          {{- with $v.scheduler.nodeSelector }}
          nodeSelector:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $v.scheduler.tolerations }}
          tolerations:
            {{- toYaml . | nindent 12 }}
          {{- end }}
        service:
          type: {{ $v.scheduler.serviceType }}
          selector:
            dask.org/cluster-name: {{ $name }}
            dask.org/component: scheduler
          ports:
            - name: tcp-comm
              protocol: TCP
              port: 8786
              targetPort: tcp-comm
            - name: http-dashboard
              protocol: TCP
              port: 8787
              targetPort: http-dashboard
{{- end }}
