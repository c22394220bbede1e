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

{{/* Image reference: repository@digest when image.digest is set, else repository:tag. */}}
{{- define "jobsched.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/* Image reference of the in-chart Postgres or Redis. Call with the image values. */}}
{{- define "jobsched.backingImage" -}}
{{- printf "%s:%s" .repository (toString .tag) }}
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
{{- if and .Values.api.ingress.enabled (not .Values.auth.enabled) (not .Values.api.ingress.allowUnauthenticated) }}
{{- fail "api.ingress.enabled=true with auth.enabled=false would publish an API anyone can use (submit and cancel jobs, switch the policy, purge the dead-letter queue): set auth.enabled=true (tokens from auth.existingSecret or a generated Secret), or set api.ingress.allowUnauthenticated=true to expose it without auth anyway" }}
{{- end }}
{{- if and .Values.auth.enabled (eq .Values.auth.apiTokenKey .Values.auth.adminTokenKey) }}
{{- fail (printf "auth.apiTokenKey and auth.adminTokenKey are both %q: the API token would also be the admin token. Use two keys (default api-token and admin-token)" .Values.auth.apiTokenKey) }}
{{- end }}
{{- if or (hasKey .Values.api.ingress "path") (hasKey .Values.api.ingress "pathType") }}
{{- fail "api.ingress.path and api.ingress.pathType were removed: the Ingress routes the fixed REST paths /jobs, /scheduler and /health (Prefix), plus /docs and /api-docs with api.ingress.exposeDocs=true. Remove them from your values" }}
{{- end }}
{{- if eq (int .Values.api.metricsPort) 8000 }}
{{- fail "api.metricsPort must differ from 8000, the API's REST port: /metrics is served on its own port" }}
{{- end }}
{{- include "jobsched.validatePinned" . }}
{{- include "jobsched.validateWorkerMemory" . }}
{{- end }}

{{/*
Bytes of a Kubernetes quantity (integer, "512Mi", "1Gi", "1.5G", "800M", ...). Call with
(dict "q" <quantity> "what" "<value path, for the error message>").
*/}}
{{- define "jobsched.bytes" -}}
{{- $q := toString .q | trim }}
{{- if or (kindIs "float64" .q) (kindIs "int" .q) (kindIs "int64" .q) }}
{{- /* Helm reads YAML numbers as float64; toString would give 1e+08. */}}
{{- $q = int64 .q | toString }}
{{- end }}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$" $q) }}
{{- fail (printf "%s: %q is not a byte quantity (use bytes or a suffix Ki, Mi, Gi, Ti, k, M, G, T)" .what $q) }}
{{- end }}
{{- $num := regexReplaceAll "^([0-9.]+).*$" $q "${1}" }}
{{- $suffix := regexReplaceAll "^[0-9.]+" $q "" }}
{{- $mult := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "P" 1000000000000000 "E" 1000000000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 "Ei" 1152921504606846976 }}
{{- if contains "." $num }}
{{- mulf (float64 $num) (float64 (index $mult $suffix)) | floor | int64 }}
{{- else }}
{{- mul (int64 $num) (int64 (index $mult $suffix)) }}
{{- end }}
{{- end }}

{{/* Worker baseline memory besides the image decode budget: 192 MiB. */}}
{{- define "jobsched.workerBaselineBytes" -}}201326592{{- end }}

{{/* JOBSCHED_DECODE_BUDGET in bytes. */}}
{{- define "jobsched.decodeBudgetBytes" -}}
{{- include "jobsched.bytes" (dict "q" .Values.worker.decodeBudget "what" "worker.decodeBudget") }}
{{- end }}

{{/*
Fails when the worker memory limit cannot hold the decode budget plus the baseline (a worker
decoding images up to its budget would be OOM-killed). No limit: nothing to check.
*/}}
{{- define "jobsched.validateWorkerMemory" -}}
{{- $budget := include "jobsched.decodeBudgetBytes" . | int64 }}
{{- if le $budget 0 }}
{{- fail "worker.decodeBudget must be positive" }}
{{- end }}
{{- $limit := dig "limits" "memory" "" (.Values.worker.resources | default dict) }}
{{- if $limit }}
{{- $limitBytes := include "jobsched.bytes" (dict "q" $limit "what" "worker.resources.limits.memory") | int64 }}
{{- $need := add $budget (include "jobsched.workerBaselineBytes" . | int64) }}
{{- if lt $limitBytes $need }}
{{- fail (printf "worker.resources.limits.memory (%d bytes) is below worker.decodeBudget (%d bytes) + the worker's 192Mi baseline (%d bytes): a worker decoding images up to its budget would be OOM-killed. Raise worker.resources.limits.memory to at least %dMi, or lower worker.decodeBudget" $limitBytes $budget $need (div (add $need 1048575) 1048576)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the controller's leader-election Lease (JOBSCHED_LEASE_NAME): one per release, so two
installations in a namespace do not share a leader. controller.extraEnv may override it; the
Role's resourceNames follow.
*/}}
{{- define "jobsched.controller.leaseName" -}}
{{- $name := printf "%s-controller" (include "jobsched.fullname" .) }}
{{- range .Values.controller.extraEnv }}
{{- if and (eq .name "JOBSCHED_LEASE_NAME") .value }}
{{- $name = .value }}
{{- end }}
{{- end }}
{{- $name }}
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
A password or token: the pinned value from the values when set (used verbatim), else the value
already in the named Secret (lookup, so upgrades keep it), else a new random one. Call with
(dict "ctx" $ "secret" "<name>" "key" "<key>" "pinned" "<value or empty>").
Without cluster access (`helm template`, Argo CD) lookup finds nothing, so only a pinned value
is stable across renders.
*/}}
{{- define "jobsched.persistentPassword" -}}
{{- if .pinned }}
{{- .pinned }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Percent-encoding of a URL's userinfo part (QueryEscape, with %20 for a space). */}}
{{- define "jobsched.urlUserinfo" -}}
{{- urlquery . | replace "+" "%20" }}
{{- end }}

{{/* Pinned passwords and tokens: long enough, no control characters, not ignored. */}}
{{- define "jobsched.validatePinned" -}}
{{- range $key, $value := dict "postgresql.password" .Values.postgresql.password "redis.password" .Values.redis.password "auth.apiToken" .Values.auth.apiToken "auth.adminToken" .Values.auth.adminToken }}
{{- if $value }}
{{- if lt (len (toString $value)) 16 }}
{{- fail (printf "%s must be at least 16 characters (or empty for a random one)" $key) }}
{{- end }}
{{- if regexMatch "[[:cntrl:]]" (toString $value) }}
{{- fail (printf "%s must not contain control characters (newline, tab...)" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.auth.existingSecret (or .Values.auth.apiToken .Values.auth.adminToken) }}
{{- fail "auth.apiToken and auth.adminToken fill the chart's generated auth Secret and are ignored with auth.existingSecret: put the tokens into that Secret instead, or clear auth.existingSecret" }}
{{- end }}
{{- if and .Values.auth.apiToken (eq (toString .Values.auth.apiToken) (toString .Values.auth.adminToken)) }}
{{- fail "auth.apiToken and auth.adminToken are equal: every API-token holder would be admin. Pin two different tokens" }}
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
  image: {{ include "jobsched.backingImage" .Values.postgresql.image | quote }}
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
{{- dict "db" .Values.externalDatabase "redis" .Values.externalRedis "auth" .Values.auth "pg" .Values.postgresql.enabled "r" .Values.redis.enabled "pgpw" .Values.postgresql.password "rpw" .Values.redis.password | toJson | sha256sum | trunc 16 }}
{{- end }}

{{/* ---------------------------------------------------------------- SchedulerConfig ---- */}}

{{/*
The SchedulerConfig hook, or nothing. Call with (dict "ctx" $ "live" <the object in the
cluster, from lookup; empty when there is none or without cluster access>).

- install, no object of that name: a post-install hook with scheduler.* from the values;
- install, an object exists (left by an earlier release, or applied before the install):
  nothing, the existing object is kept as it is;
- upgrade: nothing, whatever the values say, so kubectl's changes stay. One exception: an
  object created as an ordinary release resource by a chart version before the hook model
  (annotation meta.helm.sh/release-name of this release, no helm.sh/hook annotation). This
  upgrade deletes it (it is no longer in the release's manifest), so a post-upgrade hook
  re-creates it with the spec it had, and from then on it is a hook object like any other.
*/}}
{{- define "jobsched.schedulerConfig.manifest" -}}
{{- $ctx := .ctx }}
{{- $live := .live | default dict }}
{{- $annotations := dig "metadata" "annotations" dict $live }}
{{- $event := "" }}
{{- $spec := dict }}
{{- if $ctx.Release.IsInstall }}
{{- if not $live }}
{{- $event = "post-install" }}
{{- $spec = dict "policy" $ctx.Values.scheduler.policy "paused" $ctx.Values.scheduler.paused }}
{{- /* The CRD's CEL rule admits roundRobin only with policy round_robin. */}}
{{- if eq $ctx.Values.scheduler.policy "round_robin" }}
{{- $_ := set $spec "roundRobin" (dict "quantumSeconds" $ctx.Values.scheduler.quantumSeconds) }}
{{- end }}
{{- end }}
{{- else if and $live (eq (get $annotations "meta.helm.sh/release-name") $ctx.Release.Name) (not (hasKey $annotations "helm.sh/hook")) }}
{{- $event = "post-upgrade" }}
{{- $spec = get $live "spec" | default dict }}
{{- end }}
{{- if $event }}
apiVersion: jobsched.io/v1alpha1
kind: SchedulerConfig
metadata:
  name: {{ include "jobsched.fullname" $ctx }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "jobsched.labels" (dict "ctx" $ctx "component" "scheduler") | nindent 4 }}
  annotations:
    # Created once by Helm, then owned by kubectl: `helm upgrade` never touches it.
    helm.sh/hook: {{ $event }}
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  {{- toYaml $spec | nindent 2 }}
{{- end }}
{{- end }}
