{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "imageimport.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "imageimport.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>", e.g. include "imageimport.componentName" (list . "api") */}}
{{- define "imageimport.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "imageimport.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "imageimport.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------------------- */}}

{{- define "imageimport.labels" -}}
helm.sh/chart: {{ include "imageimport.chart" . }}
app.kubernetes.io/name: {{ include "imageimport.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: imageimport
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* include "imageimport.selectorLabels" (list . "api") */}}
{{- define "imageimport.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "imageimport.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* include "imageimport.componentLabels" (list . "api") */}}
{{- define "imageimport.componentLabels" -}}
{{ include "imageimport.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Image and shared pod pieces ---------------------------------------------------------- */}}

{{- define "imageimport.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "imageimport.tmpVolume" -}}
- name: tmp
  emptyDir:
    {{- with .Values.tmpVolume.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- end -}}

{{- define "imageimport.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* The settings' environment: the ConfigMap, then the chart's Secret, then existingSecret
     (a later source wins, so keys of the user's own Secret override the chart's). */}}
{{- define "imageimport.envFrom" -}}
- configMapRef:
    name: {{ include "imageimport.fullname" . }}
{{- if include "imageimport.secretData" . | fromYaml }}
- secretRef:
    name: {{ include "imageimport.fullname" . }}
{{- end }}
{{- with .Values.existingSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end -}}

{{- define "imageimport.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/* Service endpoints: the dev services when dev.enabled, the configured ones otherwise. ---- */}}

{{- define "imageimport.natsUrl" -}}
{{- if .Values.dev.enabled -}}
{{- printf "nats://%s:4222" (include "imageimport.componentName" (list . "nats")) -}}
{{- else -}}
{{- .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* KEDA's operator runs in its own namespace: a bare service name must carry ours. */}}
{{- define "imageimport.natsMonitoringEndpoint" -}}
{{- $endpoint := .Values.keda.natsServerMonitoringEndpoint -}}
{{- if not $endpoint -}}
{{- if .Values.dev.enabled -}}
{{- $endpoint = printf "%s:8222" (include "imageimport.componentName" (list . "nats")) -}}
{{- else -}}
{{- $endpoint = .Values.nats.monitoringEndpoint -}}
{{- end -}}
{{- end -}}
{{- $host := splitList ":" $endpoint | first -}}
{{- if contains "." $host -}}
{{- $endpoint -}}
{{- else -}}
{{- $rest := trimPrefix $host $endpoint -}}
{{- printf "%s.%s.svc.cluster.local%s" $host .Release.Namespace $rest -}}
{{- end -}}
{{- end -}}

{{- define "imageimport.s3EndpointUrl" -}}
{{- if .Values.dev.enabled -}}
{{- printf "http://%s:9000" (include "imageimport.componentName" (list . "minio")) -}}
{{- else -}}
{{- .Values.s3.endpointUrl -}}
{{- end -}}
{{- end -}}

{{/* Non-secret settings, by environment variable name (the ConfigMap's data). */}}
{{- define "imageimport.configData" -}}
IMAGEIMPORT_MODE: {{ .Values.config.mode | quote }}
DATA_DIR: "/tmp/data"
NATS_URL: {{ include "imageimport.natsUrl" . | quote }}
NATS_ACK_WAIT_SECONDS: {{ .Values.nats.ackWaitSeconds | quote }}
S3_BUCKET: {{ ternary .Values.dev.minio.bucket .Values.s3.bucket .Values.dev.enabled | quote }}
{{- with include "imageimport.s3EndpointUrl" . }}
S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
{{- with .Values.s3.publicEndpointUrl }}
S3_PUBLIC_ENDPOINT_URL: {{ . | quote }}
{{- end }}
S3_REGION: {{ .Values.s3.region | quote }}
S3_PREFIX: {{ .Values.s3.prefix | quote }}
S3_CREATE_BUCKET: {{ .Values.s3.createBucket | quote }}
MAX_FILE_SIZE_BYTES: {{ .Values.config.maxFileSizeBytes | int64 | quote }}
MAX_IMAGE_PIXELS: {{ .Values.config.maxImagePixels | int64 | quote }}
MAX_DELIVER: {{ .Values.config.maxDeliver | quote }}
HTTP_TIMEOUT_SECONDS: {{ .Values.config.httpTimeoutSeconds | quote }}
THUMBNAIL_SIZE: {{ .Values.config.thumbnailSize | quote }}
IMPORT_MODE: {{ .Values.config.importMode | quote }}
DRIVE_ACKNOWLEDGE_ABUSE: {{ .Values.config.driveAcknowledgeAbuse | toString | quote }}
GDRIVE_REQUESTS_PER_SECOND: {{ .Values.config.requestBudget.gdrive.requestsPerSecond | toString | quote }}
GDRIVE_REQUESTS_BURST: {{ .Values.config.requestBudget.gdrive.burst | toString | quote }}
DROPBOX_REQUESTS_PER_SECOND: {{ .Values.config.requestBudget.dropbox.requestsPerSecond | toString | quote }}
DROPBOX_REQUESTS_BURST: {{ .Values.config.requestBudget.dropbox.burst | toString | quote }}
CORS_ORIGINS: {{ .Values.api.corsOrigins | toJson | quote }}
ALLOWED_HOSTS: {{ include "imageimport.apiAllowedHosts" . | quote }}
ALLOW_ANONYMOUS: {{ .Values.api.allowAnonymous | toString | quote }}
{{- range $key, $value := .Values.config.extraEnv }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Secret settings, by environment variable name (the chart's Secret; empty ones left out).
     dev.enabled always supplies its own credentials; the configured ones only when no
     existingSecret is given. */}}
{{- define "imageimport.secretData" -}}
{{- $data := dict -}}
{{- if not .Values.existingSecret -}}
{{- $_ := set $data "DATABASE_URL" .Values.database.url -}}
{{- $_ := set $data "S3_ACCESS_KEY_ID" .Values.s3.accessKeyId -}}
{{- $_ := set $data "S3_SECRET_ACCESS_KEY" .Values.s3.secretAccessKey -}}
{{- $_ := set $data "API_TOKEN" .Values.api.token -}}
{{- $_ := set $data "GOOGLE_API_KEY" .Values.sources.googleApiKey -}}
{{- $_ := set $data "DROPBOX_APP_KEY" .Values.sources.dropbox.appKey -}}
{{- $_ := set $data "DROPBOX_APP_SECRET" .Values.sources.dropbox.appSecret -}}
{{- $_ := set $data "DROPBOX_REFRESH_TOKEN" .Values.sources.dropbox.refreshToken -}}
{{- end -}}
{{- if .Values.dev.enabled -}}
{{- $pg := .Values.dev.postgresql -}}
{{- $_ := set $data "DATABASE_URL" (printf "postgresql://%s:%s@%s:5432/%s" $pg.user $pg.password (include "imageimport.componentName" (list . "postgresql")) $pg.database) -}}
{{- $_ := set $data "S3_ACCESS_KEY_ID" .Values.dev.minio.rootUser -}}
{{- $_ := set $data "S3_SECRET_ACCESS_KEY" .Values.dev.minio.rootPassword -}}
{{- end -}}
{{- range $key, $value := $data }}
{{- if $value }}
{{ $key }}: {{ $value | toString | b64enc | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The hooks run before the release's own resources exist on install, except in dev mode,
     where the database and NATS they need are part of the release. */}}
{{- define "imageimport.hookEvents" -}}
{{- if .Values.dev.enabled -}}
post-install,pre-upgrade
{{- else -}}
pre-install,pre-upgrade
{{- end -}}
{{- end -}}

{{- define "imageimport.operatorNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- toYaml .Values.operator.watchNamespaces -}}
{{- else -}}
{{- toYaml (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "imageimport.peeringName" -}}
{{- default (include "imageimport.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{- define "imageimport.serviceAccountName" -}}
{{- include "imageimport.componentName" . -}}
{{- end -}}

{{/* The hooks' settings: the ConfigMap's entries inline, the hooks' copy of the Secret. */}}
{{- define "imageimport.hookEnv" -}}
{{- range $key, $value := include "imageimport.configData" . | fromYaml }}
- name: {{ $key }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* include "imageimport.hookEnvFrom" (list . $secretData) */}}
{{- define "imageimport.hookEnvFrom" -}}
{{- $root := index . 0 -}}
{{- if index . 1 }}
- secretRef:
    name: {{ include "imageimport.componentName" (list $root "hooks") }}
{{- end }}
{{- with $root.Values.existingSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end -}}

{{/* Who may use the API (SECURITY.md, "Secure by default") ---------------------------------- */}}

{{/* Non-empty when the chart generates the API token: none is given (api.token, or in
     existingSecret, which replaces the chart's secret values) and anonymous changes are not
     allowed. */}}
{{- define "imageimport.generatesApiToken" -}}
{{- if and .Values.api.enabled (not .Values.api.allowAnonymous) (not .Values.api.token) (not .Values.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{- define "imageimport.apiTokenSecretName" -}}
{{- include "imageimport.componentName" (list . "api-token") -}}
{{- end -}}

{{/* Host names the API answers to (a JSON list): local ones for port-forwards, the Service's
     in-cluster names, the Ingress host and api.allowedHosts. */}}
{{- define "imageimport.apiAllowedHosts" -}}
{{- $service := include "imageimport.componentName" (list . "api") -}}
{{- $namespace := .Release.Namespace -}}
{{- $hosts := list "localhost" "127.0.0.1" "::1" $service -}}
{{- range $suffix := list "" ".svc" ".svc.cluster.local" -}}
{{- $hosts = append $hosts (printf "%s.%s%s" $service $namespace $suffix) -}}
{{- end -}}
{{- if .Values.api.ingress.enabled -}}
{{- $hosts = append $hosts .Values.api.ingress.host -}}
{{- end -}}
{{- concat $hosts .Values.api.allowedHosts | uniq | toJson -}}
{{- end -}}
