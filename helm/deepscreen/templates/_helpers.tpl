{{/* Chart name. */}}
{{- define "deepscreen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release already contains the chart name. */}}
{{- define "deepscreen.fullname" -}}
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

{{- define "deepscreen.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "deepscreen.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deepscreen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "deepscreen.labels" -}}
helm.sh/chart: {{ include "deepscreen.chart" . }}
{{ include "deepscreen.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: screener
{{- end }}

{{- define "deepscreen.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "deepscreen.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. Argument: dict image, default tag. */}}
{{- define "deepscreen.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .defaultTag .image.tag) }}
{{- end }}
{{- end }}

{{/* The model file's path inside the container; empty: the packaged default. */}}
{{- define "deepscreen.modelPath" -}}
{{- if eq .Values.model.source "image" }}
{{- .Values.model.path }}
{{- else }}
{{- printf "%s/%s" (trimSuffix "/" .Values.model.mountPath) .Values.model.file }}
{{- end }}
{{- end }}

{{/*
The trust-anchor PEM file's path inside the container (mountPath/key of the
ConfigMap or Secret in provenance.trustAnchors); empty: no trust anchors.
*/}}
{{- define "deepscreen.trustAnchorsPath" -}}
{{- $anchors := .Values.provenance.trustAnchors }}
{{- $mountPath := trimSuffix "/" $anchors.mountPath }}
{{- if $anchors.configMap.name }}
{{- printf "%s/%s" $mountPath $anchors.configMap.key }}
{{- else if $anchors.secret.name }}
{{- printf "%s/%s" $mountPath $anchors.secret.key }}
{{- end }}
{{- end }}

{{/* Settings the values cannot express through the schema alone. */}}
{{- define "deepscreen.validate" -}}
{{- if and .Values.autoscaling.keda.enabled .Values.autoscaling.hpa.enabled }}
{{- fail "autoscaling.keda.enabled and autoscaling.hpa.enabled are mutually exclusive: enable one autoscaler (KEDA on consumer lag is recommended)" }}
{{- end }}
{{- if and (or .Values.autoscaling.keda.enabled .Values.autoscaling.hpa.enabled) (gt (int .Values.autoscaling.maxReplicas) (int .Values.kafka.partitions)) }}
{{- fail (printf "autoscaling.maxReplicas (%d) exceeds kafka.partitions (%d): consumers beyond the partition count of the uploads topic sit idle" (int .Values.autoscaling.maxReplicas) (int .Values.kafka.partitions)) }}
{{- end }}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) exceeds autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- if gt (int .Values.replicaCount) (int .Values.kafka.partitions) }}
{{- fail (printf "replicaCount (%d) exceeds kafka.partitions (%d): consumers beyond the partition count sit idle" (int .Values.replicaCount) (int .Values.kafka.partitions)) }}
{{- end }}
{{- $stopping := addf .Values.drainSeconds (include "deepscreen.shutdownTeardownSeconds" .) }}
{{- if and (not (kindIs "invalid" .Values.terminationGracePeriodSeconds)) (le (float64 .Values.terminationGracePeriodSeconds) (float64 $stopping)) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than drainSeconds (%v) plus the service's shutdown teardown (%v s): the pod would be killed while stopping; leave it unset to have it derived" .Values.terminationGracePeriodSeconds .Values.drainSeconds (include "deepscreen.shutdownTeardownSeconds" .)) }}
{{- end }}
{{- if and (hasPrefix "SASL" .Values.kafka.securityProtocol) (not (and .Values.kafka.sasl.mechanism .Values.kafka.sasl.username .Values.kafka.sasl.existingSecret)) }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.mechanism, kafka.sasl.username and kafka.sasl.existingSecret" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and (eq .Values.model.source "pvc") (not .Values.model.pvc.claimName) }}
{{- fail "model.source=pvc needs model.pvc.claimName" }}
{{- end }}
{{- if and (eq .Values.model.source "initContainer") (not .Values.model.initContainer.image.repository) }}
{{- fail "model.source=initContainer needs model.initContainer.image.repository" }}
{{- end }}
{{- $anchors := .Values.provenance.trustAnchors }}
{{- if and $anchors.configMap.name $anchors.secret.name }}
{{- fail (printf "provenance.trustAnchors: set configMap.name (%s) or secret.name (%s), not both: the trust anchors are one PEM file from one source" $anchors.configMap.name $anchors.secret.name) }}
{{- end }}
{{- if and .Values.redis.existingSecret (not .Values.redis.url) }}
{{- fail "redis.existingSecret is set but redis.url is empty" }}
{{- end }}
{{- end }}

{{/* NetworkPolicy egress rules for a list of peers. */}}
{{- define "deepscreen.egressRules" -}}
{{- range . }}
- to:
    {{- if .cidr }}
    - ipBlock:
        cidr: {{ .cidr }}
        {{- with .except }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
    {{- else }}
    - {{- with .namespaceSelector }}
      namespaceSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      podSelector:
        {{- toYaml (default (dict) .podSelector) | nindent 8 }}
    {{- end }}
  ports:
    {{- range .ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}
{{- end }}

{{/*
The service's shutdown after the drain takes at most this long, in seconds:
SHUTDOWN_TEARDOWN_S in consumer/service.py (tests/deploy/test_chart.py checks they agree).
*/}}
{{- define "deepscreen.shutdownTeardownSeconds" -}}5{{- end }}

{{/* Slack on top: the loop's last turn before the drain, signal delivery, process exit. */}}
{{- define "deepscreen.shutdownMarginSeconds" -}}5{{- end }}

{{/*
The pod's grace period: drainSeconds + the shutdown teardown + the margin, rounded up
(40 s for the default 30 s drain); terminationGracePeriodSeconds, when set, instead.
*/}}
{{- define "deepscreen.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- addf .Values.drainSeconds (include "deepscreen.shutdownTeardownSeconds" .) (include "deepscreen.shutdownMarginSeconds" .) | ceil | int64 }}
{{- else }}
{{- int64 .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}
