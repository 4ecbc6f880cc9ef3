{{/* The operator's name: the release's, unless fullnameOverride says otherwise. */}}
{{- define "rlkd.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rlkd.selectorLabels" -}}
app.kubernetes.io/name: rlkd-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rlkd.labels" -}}
{{ include "rlkd.selectorLabels" . }}
app.kubernetes.io/part-of: rlkd
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "rlkd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rlkd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "rlkd.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "rlkd.trainerImage" -}}
{{- printf "%s:%s" .Values.defaults.trainerImage.repository (default .Chart.AppVersion .Values.defaults.trainerImage.tag) -}}
{{- end -}}

{{- define "rlkd.minio.fullname" -}}
{{- printf "%s-minio" (include "rlkd.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret with the MinIO keys: the user's (minio.existingSecret) or the generated one. */}}
{{- define "rlkd.minio.secretName" -}}
{{- default (include "rlkd.minio.fullname" .) .Values.minio.existingSecret -}}
{{- end -}}

{{- define "rlkd.minio.endpoint" -}}
{{- printf "http://%s.%s.svc:%d" (include "rlkd.minio.fullname" .) .Release.Namespace (int .Values.minio.service.port) -}}
{{- end -}}

{{/* The default store every RLKDJob without spec.storage uses: the bundled MinIO or the external S3. */}}
{{- define "rlkd.store" -}}
{{- if .Values.minio.enabled -}}
{{- if .Values.storage.endpoint -}}
{{- fail "storage.endpoint and minio.enabled: choose one default store (the external S3 or the bundled MinIO)" -}}
{{- end -}}
endpoint: {{ include "rlkd.minio.endpoint" . }}
bucket: {{ .Values.minio.bucket }}
prefix: {{ .Values.storage.prefix }}
region: ""
credentialsSecret: {{ include "rlkd.minio.secretName" . }}
{{- else if .Values.storage.endpoint -}}
endpoint: {{ .Values.storage.endpoint }}
bucket: {{ required "storage.bucket: the default store needs a bucket with storage.endpoint" .Values.storage.bucket }}
prefix: {{ .Values.storage.prefix }}
region: {{ .Values.storage.region }}
credentialsSecret: {{ required "storage.credentialsSecret: name the Secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" .Values.storage.credentialsSecret }}
{{- end -}}
{{- end -}}

{{/* The pod-level security context every container here runs with (restricted Pod Security Standard). */}}
{{- define "rlkd.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "rlkd.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}
