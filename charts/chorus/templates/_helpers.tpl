{{/* chorus.name: the chart name, or nameOverride; 63 characters at most. */}}
{{- define "chorus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* chorus.fullname: "<release>-<name>" (just the release when it already contains the name), or fullnameOverride. */}}
{{- define "chorus.fullname" -}}
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

{{/* chorus.chart: "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "chorus.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* chorus.labels: the standard labels of the operator's objects (selectorLabels, version, chart...), commonLabels added but never overriding them. */}}
{{- define "chorus.labels" -}}
{{- $labels := fromYaml (include "chorus.selectorLabels" .) -}}
{{- $_ := set $labels "helm.sh/chart" (include "chorus.chart" .) -}}
{{- $_ = set $labels "app.kubernetes.io/version" .Chart.AppVersion -}}
{{- $_ = set $labels "app.kubernetes.io/managed-by" .Release.Service -}}
{{- $_ = set $labels "app.kubernetes.io/part-of" "chorus" -}}
{{- toYaml (merge $labels (.Values.commonLabels | default dict)) -}}
{{- end -}}

{{/* chorus.selectorLabels: the immutable labels that select the operator pod. */}}
{{- define "chorus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chorus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* chorus.sampleLabels: labels of a sample TTSVoice/TTSService (call with dict "root" $ "item" .): chorus.labels as component "sample", plus the item's own labels. */}}
{{- define "chorus.sampleLabels" -}}
{{- $labels := merge (dict "app.kubernetes.io/component" "sample") (fromYaml (include "chorus.labels" .root)) (.item.labels | default dict) -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* chorus.serviceAccountName: the operator's ServiceAccount (serviceAccount.name, else the full name when created, else "default"). */}}
{{- define "chorus.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "chorus.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* chorus.operatorImage: "<image.repository>:<image.tag or appVersion>". */}}
{{- define "chorus.operatorImage" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* chorus.serverImage: "<serverImage.repository>:<serverImage.tag or appVersion>", the operator's --server-image. */}}
{{- define "chorus.serverImage" -}}
{{- printf "%s:%s" .Values.serverImage.repository (.Values.serverImage.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* chorus.clusterWide: "true" when watchNamespaces is empty (the operator watches every namespace), else "". */}}
{{- define "chorus.clusterWide" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* chorus.namespacedRules: the rules on Chorus objects and their children, in a ClusterRole (cluster-wide) or a Role per watched namespace. */}}
{{- define "chorus.namespacedRules" -}}
# Chorus (kopf handlers): watch TTSVoices and TTSServices; kopf stores handler progress
# in annotations, hence patch.
- apiGroups: ["tts.chorus.dev"]
  resources: ["ttsvoices", "ttsservices"]
  verbs: ["get", "list", "watch", "patch"]
# Chorus: writes .status (phase, conditions, endpoint) of both kinds.
- apiGroups: ["tts.chorus.dev"]
  resources: ["ttsvoices/status", "ttsservices/status"]
  verbs: ["get", "patch"]
# Chorus: creates and patches each TTSService's ConfigMap (voice list, server settings)
# and its Service (Wyoming and HTTP ports).
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "create", "patch"]
# Chorus: the voices claim; deleted when storage switches to EmptyDir.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create", "patch", "delete"]
# Chorus: the server Deployment; watched for readiness (replicas, rollout).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Chorus: the HorizontalPodAutoscaler and PodDisruptionBudget; removed when autoscaling
# or replicas change.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch", "delete"]
# Chorus: the PodMonitor of a service with monitoring.podMonitor (Prometheus Operator);
# read on every pass so that turning it off removes it. Harmless where that CRD is absent.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: ["get", "create", "patch", "delete"]
# Chorus: lists the server pods to poll each one's voice-manager status port.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# kopf: posts Events about handler successes and failures on the objects it handles.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
