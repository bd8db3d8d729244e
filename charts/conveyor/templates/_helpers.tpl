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
    {{- include "conveyor.workspaceMount" . | nindent 4 }}
{{- end }}

{{/* "true" when every worker sees one workspace directory (a shared claim): nothing is copied. */}}
{{- define "conveyor.workspaceShared" -}}
{{- if or .Values.workspaces.sharedClaim .Values.dataVolume.existingClaim }}true{{ end }}
{{- end }}

{{/* The shared workspaces claim's mount, at the workspace root, when one is set. Takes $. */}}
{{- define "conveyor.workspaceMount" -}}
{{- if .Values.workspaces.sharedClaim }}
- name: workspaces
  mountPath: {{ printf "%s/workspaces" (trimSuffix "/" .Values.dataDir) }}
{{- end }}
{{- end }}

{{- define "conveyor.workspaceVolume" -}}
{{- if .Values.workspaces.sharedClaim }}
- name: workspaces
  persistentVolumeClaim:
    claimName: {{ .Values.workspaces.sharedClaim }}
{{- end }}
{{- end }}

{{/*
How many worker pods may run at once: replicas, or the most an autoscaler may make. Takes $.
*/}}
{{- define "conveyor.workerPods" -}}
{{- $pods := 0 }}
{{- range $name, $w := include "conveyor.workers" . | fromJson }}
{{- if and $.Values.autoscaling.keda.enabled $w.keda.enabled }}
{{- $pods = add $pods $w.keda.maxReplicas }}
{{- else if $w.autoscaling.enabled }}
{{- $pods = add $pods $w.autoscaling.maxReplicas }}
{{- else }}
{{- $pods = add $pods $w.replicas }}
{{- end }}
{{- end }}
{{- $pods }}
{{- end }}

{{/*
Refuse workers that could not hand a run's workspace from one pod to the next: without a
shared claim it goes through the artifact store, which must then be one every pod reaches.
*/}}
{{- define "conveyor.validateWorkspaces" -}}
{{- $pods := include "conveyor.workerPods" . | int }}
{{- $s3 := eq (toString (index .Values.config "CONVEYOR_ARTIFACT_STORE")) "s3" }}
{{- if and (gt $pods 1) (not $s3) (not (include "conveyor.workspaceShared" .)) }}
{{- fail (printf "up to %d worker pods would share no directory, and a run's workspace goes from one to the next through the artifact store, here each pod's own (CONVEYOR_ARTIFACT_STORE is not s3): set config.CONVEYOR_ARTIFACT_STORE=s3 (and CONVEYOR_S3_BUCKET), or workspaces.sharedClaim or dataVolume.existingClaim to a ReadWriteMany claim" $pods) }}
{{- end }}
{{- end }}

{{/* The broker KEDA reads queue lengths from: redis or rabbitmq. Takes $. */}}
{{- define "conveyor.kedaBroker" -}}
{{- $keda := .Values.autoscaling.keda }}
{{- if $keda.broker }}
{{- $keda.broker }}
{{- else if .Values.broker.url }}
{{- $scheme := (urlParse .Values.broker.url).scheme }}
{{- if has $scheme (list "redis" "rediss") }}redis
{{- else if has $scheme (list "amqp" "amqps" "pyamqp") }}rabbitmq
{{- else }}
{{- fail (printf "autoscaling.keda: KEDA reads queue lengths from Redis (redis://, rediss://) or RabbitMQ (amqp://, amqps://), not a %s:// broker" $scheme) }}
{{- end }}
{{- else }}
{{- fail "autoscaling.keda.broker (redis or rabbitmq) is required with broker.existingSecret: the chart cannot read the broker's URL to tell" }}
{{- end }}
{{- end }}

{{/*
What KEDA needs of a broker given as broker.url, as keys of the chart's Secret:
Redis's host:port and password apart, RabbitMQ's URL with an amqp(s) scheme. Takes $.
*/}}
{{- define "conveyor.kedaSecretData" -}}
{{- if and .Values.autoscaling.keda.enabled .Values.broker.url (not .Values.broker.existingSecret) }}
{{- $url := urlParse .Values.broker.url }}
{{- if eq (include "conveyor.kedaBroker" .) "redis" }}
{{- $host := $url.host }}
{{- if not (contains ":" $host) }}{{ $host = printf "%s:6379" $host }}{{ end }}
keda-redis-address: {{ $host | b64enc | quote }}
{{- $user := splitn ":" 2 ($url.userinfo | default "") }}
{{- if $user._1 }}
keda-redis-password: {{ $user._1 | b64enc | quote }}
{{- end }}
{{- if $user._0 }}
keda-redis-username: {{ $user._0 | b64enc | quote }}
{{- end }}
{{- else }}
keda-rabbitmq-host: {{ regexReplaceAll "^pyamqp://" .Values.broker.url "amqp://" | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A pool's KEDA ScaledObject: its Deployment scaled on the length of each queue it consumes
(one trigger per queue; KEDA follows the longest). Takes (dict "root" $ "name" pool
"worker" values "fullname" deployment "component" label "queues" list).
*/}}
{{- define "conveyor.scaledObject" -}}
{{- $root := .root }}
{{- $w := .worker }}
{{- $keda := $root.Values.autoscaling.keda }}
{{- $broker := include "conveyor.kedaBroker" $root }}
{{- if and (has "control" .queues) (lt ($w.keda.minReplicas | int) 1) }}
{{- fail (printf "workers.%s.keda.minReplicas must be at least 1: the pool consumes the control queue, where the reconciler's task runs, so it never scales to zero" .name) }}
{{- end }}
{{- if lt ($w.keda.maxReplicas | int) ($w.keda.minReplicas | int) }}
{{- fail (printf "workers.%s.keda.maxReplicas is below its minReplicas" .name) }}
{{- end }}
{{- $perPod := $w.keda.stepsPerReplica | default $w.concurrency | int }}
{{- $tls := false }}
{{- $db := 0 }}
{{- if and (eq $broker "redis") $root.Values.broker.url (not $root.Values.broker.existingSecret) }}
{{- $url := urlParse $root.Values.broker.url }}
{{- $tls = eq $url.scheme "rediss" }}
{{- $db = trimPrefix "/" $url.path | default "0" | int }}
{{- else if eq $broker "redis" }}
{{- $tls = $keda.redis.enableTLS }}
{{- $db = $keda.redis.databaseIndex | int }}
{{- end }}
---
# Scales {{ .fullname }} on how many steps wait in {{ join ", " .queues }}.
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ .fullname }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "conveyor.labels" (list $root .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .fullname }}
  pollingInterval: {{ $keda.pollingInterval | int }}
  cooldownPeriod: {{ $keda.cooldownPeriod | int }}
  minReplicaCount: {{ $w.keda.minReplicas | int }}
  maxReplicaCount: {{ $w.keda.maxReplicas | int }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: {{ $keda.scaleDownStabilizationSeconds | int }}
  triggers:
    {{- range .queues }}
    {{- if eq $broker "redis" }}
    # Celery keeps a queue on Redis as a list named after it.
    - type: redis
      metadata:
        listName: {{ . | quote }}
        listLength: {{ $perPod | quote }}
        databaseIndex: {{ $db | quote }}
        enableTLS: {{ $tls | toString | quote }}
        {{- if $root.Values.broker.existingSecret }}
        address: {{ $keda.redis.address | quote }}
        {{- end }}
      authenticationRef:
        name: {{ include "conveyor.component" (list $root "broker") }}
    {{- else }}
    - type: rabbitmq
      metadata:
        protocol: amqp
        queueName: {{ . | quote }}
        mode: QueueLength
        value: {{ $perPod | quote }}
      authenticationRef:
        name: {{ include "conveyor.component" (list $root "broker") }}
    {{- end }}
    {{- end }}
{{- end }}
