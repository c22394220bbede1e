{{/* Chart name. */}}
{{- define "jobsched.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the prefix of every resource name. Truncated so that "<fullname>-postgresql-hl" and
the StatefulSet pod names stay within DNS limits.
*/}}
{{- define "jobsched.fullname" -}}
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

{{/* "name-version" for the helm.sh/chart label. */}}
{{- define "jobsched.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Image reference. */}}
{{- define "jobsched.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
Labels of every resource. Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "jobsched.labels" -}}
helm.sh/chart: {{ include "jobsched.chart" .ctx }}
{{ include "jobsched.selectorLabels" . }}
app.kubernetes.io/version: {{ default .ctx.Chart.AppVersion .ctx.Values.image.tag | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: jobsched
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels. Call with (dict "ctx" $ "component" "api"). */}}
{{- define "jobsched.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jobsched.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ServiceAccount of the API, worker and migration pods. */}}
{{- define "jobsched.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jobsched.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- database and redis ---- */}}

{{/* Fails with a message naming the fix when the backing services are configured ambiguously. */}}
{{- define "jobsched.validate" -}}
{{- $db := .Values.externalDatabase }}
{{- if .Values.postgresql.enabled }}
{{- if or $db.existingSecret $db.url }}
{{- fail "postgresql.enabled=true and externalDatabase.* are both set: set postgresql.enabled=false to use the external database, or clear externalDatabase" }}
{{- end }}
{{- else if not (or $db.existingSecret $db.url) }}
{{- fail "postgresql.enabled=false needs a database: set externalDatabase.existingSecret (a Secret with the postgres:// URL under externalDatabase.existingSecretKey) or externalDatabase.url" }}
{{- end }}
{{- $r := .Values.externalRedis }}
{{- if .Values.redis.enabled }}
{{- if or $r.existingSecret $r.url }}
{{- fail "redis.enabled=true and externalRedis.* are both set: set redis.enabled=false to use the external Redis, or clear externalRedis" }}
{{- end }}
{{- else if not (or $r.existingSecret $r.url) }}
{{- fail "redis.enabled=false needs a Redis: set externalRedis.existingSecret (a Secret with the redis:// URL under externalRedis.existingSecretKey) or externalRedis.url" }}
{{- end }}
{{- if and (eq (include "jobsched.migrationsMode" .) "hook") (not $db.existingSecret) }}
{{- fail "migrations.mode=hook needs externalDatabase.existingSecret: a pre-install hook runs before the in-chart Postgres and the chart's Secrets exist. Use migrations.mode=auto or initContainer" }}
{{- end }}
{{- end }}

{{/* "hook" or "initContainer". */}}
{{- define "jobsched.migrationsMode" -}}
{{- if eq .Values.migrations.mode "auto" }}
{{- if and (not .Values.postgresql.enabled) .Values.externalDatabase.existingSecret }}hook{{ else }}initContainer{{ end }}
{{- else }}
{{- .Values.migrations.mode }}
{{- end }}
{{- end }}

{{- define "jobsched.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "jobsched.fullname" .) }}
{{- end }}

{{- define "jobsched.redis.fullname" -}}
{{- printf "%s-redis" (include "jobsched.fullname" .) }}
{{- end }}

{{/* Secret and key holding JOBSCHED_DATABASE_URL. */}}
{{- define "jobsched.databaseSecretName" -}}
{{- if .Values.postgresql.enabled }}
{{- include "jobsched.postgresql.fullname" . }}
{{- else if .Values.externalDatabase.existingSecret }}
{{- .Values.externalDatabase.existingSecret }}
{{- else }}
{{- printf "%s-external" (include "jobsched.fullname" .) }}
{{- end }}
{{- end }}

{{- define "jobsched.databaseSecretKey" -}}
{{- if and (not .Values.postgresql.enabled) .Values.externalDatabase.existingSecret }}
{{- .Values.externalDatabase.existingSecretKey }}
{{- else }}database-url{{ end }}
{{- end }}

{{/* Secret and key holding JOBSCHED_REDIS_URL. */}}
{{- define "jobsched.redisSecretName" -}}
{{- if .Values.redis.enabled }}
{{- include "jobsched.redis.fullname" . }}
{{- else if .Values.externalRedis.existingSecret }}
{{- .Values.externalRedis.existingSecret }}
{{- else }}
{{- printf "%s-external" (include "jobsched.fullname" .) }}
{{- end }}
{{- end }}

{{- define "jobsched.redisSecretKey" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret }}
{{- .Values.externalRedis.existingSecretKey }}
{{- else }}redis-url{{ end }}
{{- end }}

{{/*
A password kept across upgrades: the value already in the named Secret, else a new random one.
Call with (dict "ctx" $ "secret" "<name>" "key" "<key>").
*/}}
{{- define "jobsched.persistentPassword" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- pod building blocks ---- */}}

{{/* Environment shared by every jobsched process that talks to Postgres and Redis. */}}
{{- define "jobsched.env.backends" -}}
- name: JOBSCHED_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "jobsched.databaseSecretName" . }}
      key: {{ include "jobsched.databaseSecretKey" . }}
- name: JOBSCHED_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "jobsched.redisSecretName" . }}
      key: {{ include "jobsched.redisSecretKey" . }}
- name: JOBSCHED_REDIS_PREFIX
  value: {{ .Values.redisPrefix | quote }}
{{- end }}

{{/* Logging environment. */}}
{{- define "jobsched.env.log" -}}
- name: JOBSCHED_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
{{- with .Values.log.filter }}
- name: RUST_LOG
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Data directory environment. */}}
{{- define "jobsched.env.data" -}}
- name: JOBSCHED_DATA_DIR
  value: /data
{{- end }}

{{/* Pod annotations for Prometheus scraping. Call with (dict "ctx" $ "port" 9090). */}}
{{- define "jobsched.prometheusAnnotations" -}}
{{- if .ctx.Values.metrics.podAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Volumes of pods that use the data directory. */}}
{{- define "jobsched.dataVolumes" -}}
- name: data
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-data" (include "jobsched.fullname" .)) .Values.persistence.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end }}

{{/*
Init containers of the API and worker pods: seed the sample files, wait for the in-chart
Postgres, apply migrations (when migrations run as init containers).
*/}}
{{- define "jobsched.initContainers" -}}
{{- if .Values.persistence.seedSamples -}}
- name: seed-data
  image: {{ include "jobsched.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - /bin/sh
    - -c
    - |
      for f in /usr/share/jobsched/samples/*; do
        [ -e "/data/${f##*/}" ] || cp "$f" /data/
      done
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
  volumeMounts:
    - name: data
      mountPath: /data
{{- end }}
{{- if eq (include "jobsched.migrationsMode" .) "initContainer" }}
{{- if .Values.postgresql.enabled }}
- name: wait-for-postgres
  image: "{{ .Values.postgresql.image.repository }}:{{ .Values.postgresql.image.tag }}"
  imagePullPolicy: {{ .Values.postgresql.image.pullPolicy }}
  command:
    - /bin/sh
    - -c
    - |
      host={{ include "jobsched.postgresql.fullname" . }}
      for i in $(seq 1 150); do
        pg_isready -q -h "$host" -p 5432 -U {{ .Values.postgresql.username }} && exit 0
        sleep 2
      done
      echo "Postgres at $host:5432 did not become ready in 300s; check the $host StatefulSet" >&2
      exit 1
  securityContext:
    {{- include "jobsched.backingContainerSecurityContext" . | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
{{- end }}
- name: migrate
  image: {{ include "jobsched.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["migrate"]
  env:
    - name: JOBSCHED_DATABASE_URL
      valueFrom:
        secretKeyRef:
          name: {{ include "jobsched.databaseSecretName" . }}
          key: {{ include "jobsched.databaseSecretKey" . }}
    {{- include "jobsched.env.log" . | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
{{- end }}
{{- end }}

{{/* Container security context of the Postgres and Redis images (their uid 999). */}}
{{- define "jobsched.backingContainerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 999
runAsGroup: 999
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Checksum of the user-supplied connection settings, so pods restart when they change. Generated
passwords are left out: they are random on a fresh render and stable (lookup) afterwards.
*/}}
{{- define "jobsched.configChecksum" -}}
{{- dict "db" .Values.externalDatabase "redis" .Values.externalRedis "auth" .Values.auth "pg" .Values.postgresql.enabled "r" .Values.redis.enabled | toJson | sha256sum | trunc 16 }}
{{- end }}
