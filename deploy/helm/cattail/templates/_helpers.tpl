{{/* The chart's name, or nameOverride. */}}
{{- define "cattail.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The name of every object: the release name if it already contains the chart's name
(`helm install cattail ...` gives `cattail`), else release-chart; or fullnameOverride.
*/}}
{{- define "cattail.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "cattail.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels the Deployment selects its pods by; the Service, PDB and policies use them too. */}}
{{- define "cattail.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cattail.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{/* Labels of every object. */}}
{{- define "cattail.labels" -}}
{{ include "cattail.selectorLabels" . }}
app.kubernetes.io/part-of: cattail
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The Secret holding the gRPC port's certificate, or nothing without TLS. */}}
{{- define "cattail.tlsSecret" -}}
{{- if .Values.tls.existingSecret -}}
{{- .Values.tls.existingSecret -}}
{{- else if .Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "cattail.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Every watched resource: the profile, then the extra ones. */}}
{{- define "cattail.resources" -}}
{{- concat .Values.profile.resources .Values.profile.extraResources | toYaml -}}
{{- end -}}

{{/*
The server's config file. Its default equals the built-in default config (server/tests/helm.rs
checks it), so `cattail check-config` prints the same thing.
*/}}
{{- define "cattail.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config "resources" (concat .Values.profile.resources .Values.profile.extraResources) -}}
{{- if .Values.auth -}}
{{- $_ := set $config "auth" .Values.auth -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* NetworkPolicy peers: pods (by pod and namespace labels) and address blocks. */}}
{{- define "cattail.peers" -}}
{{- if or .podSelector .namespaceSelector }}
- podSelector:
    {{- toYaml (.podSelector | default dict) | nindent 4 }}
  namespaceSelector:
    {{- toYaml (.namespaceSelector | default dict) | nindent 4 }}
{{- end }}
{{- range .ipBlocks }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- end -}}
