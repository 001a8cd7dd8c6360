{{- define "quantserve.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "quantserve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "quantserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quantserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "quantserve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "quantserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "quantserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "quantserve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The model root inside the container. */}}
{{- define "quantserve.modelRoot" -}}
{{- if eq .Values.modelStorage.type "image" -}}/opt/quantserve/models{{- else -}}{{ .Values.modelStorage.mountPath }}{{- end -}}
{{- end -}}

{{/* The model whose health service gates readiness. */}}
{{- define "quantserve.readinessModel" -}}
{{- if .Values.probes.readiness.model -}}{{ .Values.probes.readiness.model }}{{- else if .Values.models -}}{{ (index .Values.models 0).name }}{{- end -}}
{{- end -}}
