{{/* Chart name (nameOverride) */}}
{{- define "cake-agents.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the prefix of every resource name. */}}
{{- define "cake-agents.fullname" -}}
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

{{- define "cake-agents.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Recommended labels of every resource; pass (dict "ctx" $ "component" "...") */}}
{{- define "cake-agents.labels" -}}
helm.sh/chart: {{ include "cake-agents.chart" .ctx }}
{{ include "cake-agents.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: cake-agents
{{- end }}

{{- define "cake-agents.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cake-agents.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/* Namespace of session pods. */}}
{{- define "cake-agents.sessionNamespace" -}}
{{- default .Release.Namespace .Values.sessionNamespace.name }}
{{- end }}

{{- define "cake-agents.serviceAccountName" -}}
{{- if .Values.controlPlane.serviceAccount.create }}
{{- default (include "cake-agents.fullname" .) .Values.controlPlane.serviceAccount.name }}
{{- else }}
{{- required "controlPlane.serviceAccount.name is required when controlPlane.serviceAccount.create is false" .Values.controlPlane.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cake-agents.dataPlaneServiceAccountName" -}}
{{- if .Values.dataPlane.serviceAccount.create }}
{{- default (printf "%s-data-plane" (include "cake-agents.fullname" .)) .Values.dataPlane.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.dataPlane.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: (dict "registry" <string> "image" <image values> "ctx" $).
registry/repository:tag, or registry/repository@sha256:... when the tag is a digest.
*/}}
{{- define "cake-agents.image" -}}
{{- $registry := trimSuffix "/" (default "" .registry) }}
{{- $repo := .image.repository }}
{{- if $registry }}{{ $repo = printf "%s/%s" $registry $repo }}{{ end }}
{{- $tag := toString (default .ctx.Chart.AppVersion .image.tag) }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" $repo $tag }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{- define "cake-agents.controlPlaneImage" -}}
{{- include "cake-agents.image" (dict "registry" .Values.registry.default "image" .Values.controlPlane.image "ctx" .) }}
{{- end }}
{{- define "cake-agents.dataPlaneImage" -}}
{{- include "cake-agents.image" (dict "registry" .Values.registry.default "image" .Values.dataPlane.image "ctx" .) }}
{{- end }}
{{- define "cake-agents.dataPlaneInitImage" -}}
{{- include "cake-agents.image" (dict "registry" .Values.registry.default "image" .Values.dataPlaneInit.image "ctx" .) }}
{{- end }}
{{- define "cake-agents.postgresqlImage" -}}
{{- include "cake-agents.image" (dict "registry" (default .Values.registry.default .Values.postgresql.image.registry) "image" .Values.postgresql.image "ctx" .) }}
{{- end }}

{{/* External URL of the control plane (CAKE_PUBLIC_URL). */}}
{{- define "cake-agents.publicUrl" -}}
{{- if .Values.controlPlane.host }}
{{- printf "%s://%s%s" (ternary "https" "http" .Values.controlPlane.https) .Values.controlPlane.host .Values.pathPrefix }}
{{- else }}
{{- printf "http://127.0.0.1:8080%s" .Values.pathPrefix }}
{{- end }}
{{- end }}

{{/* Every host routed to the control plane. */}}
{{- define "cake-agents.hosts" -}}
{{- $hosts := list }}
{{- if .Values.controlPlane.host }}{{ $hosts = append $hosts .Values.controlPlane.host }}{{ end }}
{{- range .Values.controlPlane.extraHosts }}{{ $hosts = append $hosts . }}{{ end }}
{{- toJson (uniq $hosts) }}
{{- end }}

{{/* Secret names. */}}
{{- define "cake-agents.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "cake-agents.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "cake-agents.postgresql.secretName" -}}
{{- printf "%s-postgresql" (include "cake-agents.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "cake-agents.betterAuth.secretName" -}}
{{- default (printf "%s-better-auth" (include "cake-agents.fullname" .)) .Values.betterAuth.secret.name }}
{{- end }}
{{- define "cake-agents.oidc.secretName" -}}
{{- if .Values.oidc.secret.create }}
{{- default (printf "%s-oidc" (include "cake-agents.fullname" .)) .Values.oidc.secret.name }}
{{- else }}
{{- .Values.oidc.secret.name }}
{{- end }}
{{- end }}
{{- define "cake-agents.linear.secretName" -}}
{{- default (printf "%s-linear" (include "cake-agents.fullname" .)) .Values.linear.secret.name }}
{{- end }}
{{- define "cake-agents.litellm.secretName" -}}
{{- default (printf "%s-litellm" (include "cake-agents.fullname" .)) .Values.litellm.secret.name }}
{{- end }}
{{- define "cake-agents.slack.secretName" -}}
{{- default (printf "%s-slack" (include "cake-agents.fullname" .)) .Values.slack.secret.name }}
{{- end }}

{{/*
Checks of value combinations the schema cannot express; fails the render with a clear message.
*/}}
{{- define "cake-agents.validate" -}}
{{- $ext := .Values.externalDatabase }}
{{- $hasExternal := or $ext.existingSecret (gt (len $ext.existingSecretEnv) 0) }}
{{- if and .Values.postgresql.enabled $hasExternal }}
{{- fail "externalDatabase is set while postgresql.enabled is true: set postgresql.enabled=false to use the external database" }}
{{- end }}
{{- if not (or .Values.postgresql.enabled $hasExternal) }}
{{- fail "no database: keep postgresql.enabled=true (development) or set externalDatabase.existingSecret / externalDatabase.existingSecretEnv" }}
{{- end }}
{{- range $env, $ref := $ext.existingSecretEnv }}
{{- if and (kindIs "string" $ref) (not $ext.existingSecret) }}
{{- fail (printf "externalDatabase.existingSecretEnv.%s names a key but externalDatabase.existingSecret is empty (or use {name, key})" $env) }}
{{- end }}
{{- end }}
{{- if and .Values.postgresql.enabled .Values.postgresql.externalSecrets.enabled }}
{{- if not .Values.postgresql.externalSecrets.secretStoreRef.name }}
{{- fail "postgresql.externalSecrets.secretStoreRef.name is required when postgresql.externalSecrets.enabled is true" }}
{{- end }}
{{- if not .Values.postgresql.externalSecrets.remoteKey }}
{{- fail "postgresql.externalSecrets.remoteKey is required when postgresql.externalSecrets.enabled is true" }}
{{- end }}
{{- end }}
{{- if and .Values.headerAuth.enabled (not (or .Values.headerAuth.jwt.header .Values.headerAuth.email.header)) }}
{{- fail "headerAuth.enabled needs headerAuth.jwt.header or headerAuth.email.header (seed: one of them is required for header auth to do anything)" }}
{{- end }}
{{- if .Values.oidc.enabled }}
{{- if not .Values.oidc.issuer }}{{ fail "oidc.issuer is required when oidc.enabled is true" }}{{ end }}
{{- if not .Values.oidc.clientId }}{{ fail "oidc.clientId is required when oidc.enabled is true" }}{{ end }}
{{- end }}
{{- if and .Values.oidc.secret.create (not .Values.oidc.secret.value) }}
{{- fail "oidc.secret.value is required when oidc.secret.create is true" }}
{{- end }}
{{- if and .Values.s3.enabled (not .Values.s3.bucket) }}
{{- fail "s3.bucket is required when s3.enabled is true" }}
{{- end }}
{{- if .Values.sessionNamespace.create }}
{{- if or (not .Values.sessionNamespace.name) (eq .Values.sessionNamespace.name .Release.Namespace) }}
{{- fail "sessionNamespace.create needs sessionNamespace.name set to a namespace other than the release namespace" }}
{{- end }}
{{- end }}
{{- if and .Values.linear.secret.create (not .Values.linear.secret.data) }}
{{- fail "linear.secret.data is required when linear.secret.create is true" }}
{{- end }}
{{- if and .Values.litellm.secret.create (not .Values.litellm.secret.data) }}
{{- fail "litellm.secret.data is required when litellm.secret.create is true" }}
{{- end }}
{{- if and .Values.slack.secret.create (not (or .Values.slack.secret.botToken .Values.slack.secret.signingSecret)) }}
{{- fail "slack.secret.botToken or slack.secret.signingSecret is required when slack.secret.create is true" }}
{{- end }}
{{- if and .Values.istio.enabled (not .Values.controlPlane.host) }}
{{- fail "controlPlane.host is required when istio.enabled is true" }}
{{- end }}
{{- end }}

{{/*
A generated secret value that stays the same across upgrades: reads the existing Secret with
lookup, else makes a new random one. (dict "ctx" $ "name" <secret> "key" <key> "length" <n>)
*/}}
{{- define "cake-agents.stableRandom" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}
