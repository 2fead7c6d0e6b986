{{/* Name of the chart (nameOverride wins). */}}
{{- define "revati.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the chart's objects: <release>-revati, or the release name if it already contains it. */}}
{{- define "revati.fullname" -}}
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

{{/* Labels on every object of the chart. */}}
{{- define "revati.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "revati.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select the operator pod. */}}
{{- define "revati.selectorLabels" -}}
app.kubernetes.io/name: {{ include "revati.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "revati.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "revati.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag of an image from .Values.images (tag defaults to the chart's appVersion). */}}
{{- define "revati.image" -}}
{{- $img := index .root.Values.images .name -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/* Namespaces the operator watches when it is not cluster-wide: the release namespace first. */}}
{{- define "revati.watchedNamespaces" -}}
{{- $all := list .Release.Namespace -}}
{{- range .Values.watchNamespaces -}}
{{- if not (has . $all) -}}{{- $all = append $all . -}}{{- end -}}
{{- end -}}
{{- toJson $all -}}
{{- end -}}

{{/*
The operator's permissions: exactly what it reads and writes (docs: the Kubernetes contract).
Shared by the namespaced Role(s) and, with rbac.clusterWide, the ClusterRole.
*/}}
{{- define "revati.rules" -}}
# Its own custom resources.
- apiGroups: [revati.dev]
  resources: [emulateddeployments, emulationsweeps]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [revati.dev]
  resources: [emulateddeployments/status, emulationsweeps/status]
  verbs: [get, patch, update]
- apiGroups: [revati.dev]
  resources: [emulateddeployments/finalizers, emulationsweeps/finalizers]
  verbs: [update]
# The replicas are bare Pods the operator creates (one per replica); the router's and the load
# generator's come from a Deployment and a Job. It reads their status and the load generator's log.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
# Each EmulatedDeployment's secret, which its relays prove they know to join its clock: the
# operator only creates it (an existing one is left as it is), it never reads or lists Secrets.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
{{- if .Values.networkPolicy.enabled }}
# Each EmulatedDeployment's NetworkPolicy: only its own pods reach its coordinator and replicas.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, patch]
{{- end }}
# kopf posts events about its handlers.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
