{{/*
The release's base name: the release name, or release-chart when the
release name does not contain the chart's. With the release named tasker,
the servers are tasker-server-0..N-1, as in deploy/kubernetes.
*/}}
{{- define "tasker.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The servers' StatefulSet, Service, PDB and ServiceAccount. */}}
{{- define "tasker.serverName" -}}
{{- printf "%s-server" (include "tasker.fullname" .) -}}
{{- end -}}

{{- define "tasker.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "tasker.labels" -}}
{{ include "tasker.selectorLabels" . }}
app.kubernetes.io/part-of: tasker
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tasker.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
The agent's default ports (agent/config.go). Not values: every sidecar
agent expects them.
*/}}
{{- define "tasker.port.rpc" -}}7421{{- end -}}
{{- define "tasker.port.gossip" -}}7422{{- end -}}
{{- define "tasker.port.raft" -}}7423{{- end -}}

{{/*
server.replicas, checked: an even count adds a server without adding a
failure it survives, and the agent's -bootstrap-expect takes 1 to 9.
*/}}
{{- define "tasker.replicas" -}}
{{- $n := int .Values.server.replicas -}}
{{- if or (lt $n 1) (gt $n 9) (eq (mod $n 2) 0) -}}
{{- fail (printf "server.replicas is %d: use an odd number from 1 to 9 (3 survives one failure, 5 two); an even count tolerates no more failures than the odd count below it" $n) -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{/*
The gossip addresses of every server: the stable DNS names the headless
Service gives the StatefulSet's pods.
*/}}
{{- define "tasker.retryJoin" -}}
{{- $name := include "tasker.serverName" . -}}
{{- $addrs := list -}}
{{- range $i := until (int (include "tasker.replicas" .)) -}}
{{- $addrs = append $addrs (printf "%s-%d.%s.%s.svc:%s" $name $i $name $.Release.Namespace (include "tasker.port.gossip" $)) -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end -}}
