{{/* Names, labels and the pieces every Conveyor pod shares. */}}

{{- define "conveyor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: "<release>-conveyor", or the release alone if it says conveyor. */}}
{{- define "conveyor.fullname" -}}
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

{{/* "<fullname>-<suffix>", cut to a valid object name. Takes (list $ "suffix"). */}}
{{- define "conveyor.component" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "conveyor.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "conveyor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component. Takes (list $ "component"). */}}
{{- define "conveyor.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "conveyor.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Every label of one component. Takes (list $ "component"). */}}
{{- define "conveyor.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "conveyor.chart" $root }}
{{ include "conveyor.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: conveyor
{{- end }}

{{- define "conveyor.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "conveyor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "conveyor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the chart makes for the URLs and the key given as values. */}}
{{- define "conveyor.secretName" -}}
{{- include "conveyor.fullname" . }}
{{- end }}

{{/* True when the chart has to make its own Secret (some value is not in an existing one). */}}
{{- define "conveyor.ownsSecret" -}}
{{- if or (not .Values.database.existingSecret) (not .Values.broker.existingSecret) (not .Values.secretKey.existingSecret) }}true{{ end }}
{{- end }}

{{/* Refuse to render without a database or a broker: Conveyor bundles neither. */}}
{{- define "conveyor.validate" -}}
{{- if not (or .Values.database.url .Values.database.existingSecret) }}
{{- fail "database.url or database.existingSecret is required: Conveyor keeps its state in an external Postgres (postgresql://user:password@host:5432/conveyor)" }}
{{- end }}
{{- if not (or .Values.broker.url .Values.broker.existingSecret) }}
{{- fail "broker.url or broker.existingSecret is required: Conveyor's workers take steps from an external Redis (redis://host:6379/0) or RabbitMQ" }}
{{- end }}
{{- end }}

{{/* One env entry read from a Secret. Takes (list $ "ENV_NAME" .Values.<block> "chart-key"). */}}
{{- define "conveyor.secretEnv" -}}
{{- $root := index . 0 }}
{{- $block := index . 2 -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      {{- if $block.existingSecret }}
      name: {{ $block.existingSecret }}
      key: {{ $block.existingSecretKey }}
      {{- else }}
      name: {{ include "conveyor.secretName" $root }}
      key: {{ index . 3 }}
      {{- end }}
{{- end }}

{{/*
The environment of a Conveyor container. Each process gets only the secrets it uses:
beat and Flower need the broker alone, the migration job the database alone.
Takes (dict "root" $ "database" bool "broker" bool "secretKey" bool).
*/}}
{{- define "conveyor.env" -}}
{{- $root := .root }}
{{- $entries := list }}
{{- if .database }}
{{- $entries = append $entries (include "conveyor.secretEnv" (list $root "CONVEYOR_DATABASE_URL" $root.Values.database "database-url")) }}
{{- end }}
{{- if .broker }}
{{- $entries = append $entries (include "conveyor.secretEnv" (list $root "CONVEYOR_BROKER_URL" $root.Values.broker "broker-url")) }}
{{- end }}
{{- if .secretKey }}
{{- $entries = append $entries (include "conveyor.secretEnv" (list $root "CONVEYOR_SECRET_KEY" $root.Values.secretKey "secret-key")) }}
{{- end }}
{{- with $root.Values.extraEnv }}
{{- $entries = append $entries (toYaml .) }}
{{- end }}
{{- join "\n" $entries }}
{{- end }}

{{/* The ConfigMap of settings, then the user's own sources. */}}
{{- define "conveyor.envFrom" -}}
- configMapRef:
    name: {{ include "conveyor.fullname" . }}
{{- with .Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Hashes of the settings and of the chart's Secret, so that pods roll when either changes
(a new database password, say). The Secret is hashed only when it holds the sealing key:
a hash of URLs alone would let anyone who reads pods test guesses of a password.
*/}}
{{- define "conveyor.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if and (include "conveyor.ownsSecret" .) (not .Values.secretKey.existingSecret) }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/*
Pod-level settings of every Conveyor pod. Service links are off: Kubernetes would
otherwise inject variables such as CONVEYOR_API_PORT or FLOWER_PORT (named after the
Services) that Conveyor's and Flower's settings would try to read.
Takes (list $ .Values.<component>), or (list $ .Values.<component> "service-account").
*/}}
{{- define "conveyor.podSpec" -}}
{{- $root := index . 0 }}
{{- $values := index . 1 }}
{{- $account := include "conveyor.serviceAccountName" $root }}
{{- if gt (len .) 2 }}
{{- $account = index . 2 }}
{{- end -}}
serviceAccountName: {{ $account }}
automountServiceAccountToken: {{ $root.Values.automountServiceAccountToken }}
enableServiceLinks: false
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Image and hardening of a Conveyor container. */}}
{{- define "conveyor.containerBase" -}}
image: {{ include "conveyor.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end }}

{{/*
The root filesystem is read-only: the data directory (also the user's home) and /tmp
are the only places a process writes. Takes (list $ shared): with shared true the data
directory is the shared claim when one is set (the API and the workers).
*/}}
{{- define "conveyor.volumes" -}}
{{- $root := index . 0 -}}
- name: data
  {{- if and (index . 1) $root.Values.dataVolume.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ $root.Values.dataVolume.existingClaim }}
  {{- else if $root.Values.dataVolume.sizeLimit }}
  emptyDir:
    sizeLimit: {{ $root.Values.dataVolume.sizeLimit }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "conveyor.volumeMounts" -}}
- name: data
  mountPath: {{ .Values.dataDir }}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
A worker's values: its own keys, each missing one taken from workerDefaults (maps key by
key). Done by hand because sprig's merge treats false and 0 as unset, and
`autoscaling.enabled: false` or `replicas: 0` must win over a default.
Takes (list $dst $src) and fills $dst in place.
*/}}
{{- define "conveyor.fillDefaults" -}}
{{- $dst := index . 0 }}
{{- range $key, $value := index . 1 }}
{{- if not (hasKey $dst $key) }}
{{- $_ := set $dst $key (deepCopy $value) }}
{{- else if and (kindIs "map" $value) (kindIs "map" (index $dst $key)) }}
{{- include "conveyor.fillDefaults" (list (index $dst $key) $value) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The workers as a JSON map name -> values with the defaults filled in. */}}
{{- define "conveyor.workers" -}}
{{- $result := dict }}
{{- range $name, $worker := .Values.workers }}
{{- $values := deepCopy (default (dict) $worker) }}
{{- include "conveyor.fillDefaults" (list $values $.Values.workerDefaults) }}
{{- if $values.enabled }}
{{- $_ := set $result $name $values }}
{{- end }}
{{- end }}
{{- toJson $result }}
{{- end }}

{{/* Whether the Docker sidecar runs as a native sidecar. Takes $. */}}
{{- define "conveyor.dindNative" -}}
{{- $mode := toString .Values.dind.nativeSidecar }}
{{- if eq $mode "auto" }}
{{- if semverCompare ">=1.29-0" .Capabilities.KubeVersion.Version }}true{{ end }}
{{- else if eq $mode "true" }}true{{ end }}
{{- end }}

{{/* Where the Docker sidecar's socket lives, in a volume both containers mount. */}}
{{- define "conveyor.dockerSocketDir" -}}
/run/conveyor-docker
{{- end }}

{{/*
The Docker-in-Docker sidecar: the pod's only privileged container. dockerd listens on a
unix socket alone (no TCP port another pod could reach), owned by the worker's group.
Takes $.
*/}}
{{- define "conveyor.dindContainer" -}}
{{- $socket := printf "%s/docker.sock" (include "conveyor.dockerSocketDir" .) -}}
- name: docker
  image: {{ printf "%s:%s" .Values.dind.image.repository .Values.dind.image.tag | quote }}
  imagePullPolicy: {{ .Values.dind.image.pullPolicy }}
  args:
    - dockerd
    - --host=unix://{{ $socket }}
    - --group={{ .Values.podSecurityContext.runAsGroup | default 10001 }}
    {{- range .Values.dind.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- if include "conveyor.dindNative" . }}
  restartPolicy: Always
  # The worker starts once the engine answers.
  startupProbe:
    exec:
      command: [docker, --host, unix://{{ $socket }}, version]
    periodSeconds: 2
    failureThreshold: 90
  {{- end }}
  securityContext:
    privileged: true
    runAsNonRoot: false
    runAsUser: 0
    runAsGroup: 0
  {{- with .Values.dind.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: docker-socket
      mountPath: {{ include "conveyor.dockerSocketDir" . }}
    - name: docker-storage
      mountPath: /var/lib/docker
    # The worker's data directory at the same path, so a bind mount of a path the worker
    # sees (CONVEYOR_DOCKER_ALLOWED_MOUNTS) means the same files to the engine.
    - name: data
      mountPath: {{ .Values.dataDir }}
{{- end }}
