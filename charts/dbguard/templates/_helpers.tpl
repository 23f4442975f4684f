{{/* Labels every object of the chart carries. */}}
{{- define "dbguard.labels" -}}
app.kubernetes.io/name: dbguard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The operator pods, for selectors. */}}
{{- define "dbguard.operatorSelector" -}}
app.kubernetes.io/name: dbguard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "dbguard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "v%s" .Chart.AppVersion) .Values.image.tag) }}
{{- end }}

{{/* Secret with the operator's serving certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "dbguard.tlsSecret" -}}
{{- if eq .Values.certificates.mode "cert-manager" }}dbguard-operator-tls
{{- else if eq .Values.certificates.mode "provided" }}{{ .Values.certificates.provided.secretName }}
{{- else }}dbguard-webhook-tls{{ end }}
{{- end }}

{{/* Metadata that lets the operator (self-managed) or cert-manager fill a webhook configuration's caBundle. */}}
{{- /* Placed at the end of metadata.labels: the label (self-managed) or the annotation (cert-manager). */}}
{{- define "dbguard.caBundleMeta" -}}
{{- if eq .Values.certificates.mode "self-managed" }}
    dbguard.io/webhook-ca: operator
{{- else if eq .Values.certificates.mode "cert-manager" }}
  annotations:
    cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/dbguard-operator-tls
{{- end }}
{{- end }}

{{/* clientConfig.caBundle where the chart knows it (provided certificates). */}}
{{- define "dbguard.caBundle" -}}
{{- if eq .Values.certificates.mode "provided" }}
      caBundle: {{ .Values.certificates.provided.caBundle | b64enc }}
{{- end }}
{{- end }}
