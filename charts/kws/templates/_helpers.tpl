{{/* Labels on every object (constant across rollout steps: never a weight or a model). */}}
{{- define "kws.labels" -}}
app.kubernetes.io/name: kws
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: kws-mlops
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* InferenceService name of a version: (list $ "v1") -> <release>-v1; KServe names its
     Deployment and Service <isvc>-predictor. */}}
{{- define "kws.isvcName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" $root.Release.Name (index . 1) -}}
{{- end }}

{{- define "kws.serviceAccountName" -}}
{{- default (printf "%s-predictor" .Release.Name) .Values.serviceAccount.name -}}
{{- end }}

{{/* What the schema cannot say: weights sum to 100, names are unique, Knative has two
     revisions at most. Fails the render with Helm's error. */}}
{{- define "kws.validate" -}}
{{- $total := 0 -}}
{{- $seen := dict -}}
{{- range .Values.versions -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "versions: name %q appears more than once" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- $total = add $total .weight -}}
{{- end -}}
{{- if ne (int $total) 100 -}}
{{- fail (printf "versions: weights sum to %d, not 100" (int $total)) -}}
{{- end -}}
{{- if and .Values.knative.enabled (gt (len .Values.versions) 2) -}}
{{- fail "knative.enabled: Knative splits between the latest revision and the previous one only (at most 2 versions)" -}}
{{- end -}}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) -}}
{{- fail "autoscaling: minReplicas is greater than maxReplicas" -}}
{{- end -}}
{{- $cpu := toString (dig "limits" "cpu" "" (.Values.resources | default dict)) -}}
{{- if $cpu -}}
{{- $cores := ternary (divf (trimSuffix "m" $cpu | float64) 1000) (float64 $cpu) (hasSuffix "m" $cpu) -}}
{{- if gt (float64 (.Values.server.workers | default 1)) (ceil $cores) -}}
{{- fail (printf "server.workers: %v workers on a CPU limit of %s: one worker per core at most (raise resources.limits.cpu)" .Values.server.workers $cpu) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* The predictor pod spec fields of one version: (dict "root" $ "version" $v "knative" bool). */}}
{{- define "kws.predictorPod" -}}
{{- $root := .root -}}
{{- $v := .version -}}
{{- $values := $root.Values -}}
{{- $modelPath := $v.model -}}
{{- $claim := "" -}}
{{- if hasPrefix "pvc://" $v.model -}}
{{- $parts := splitList "/" (trimPrefix "pvc://" $v.model) -}}
{{- $claim = first $parts -}}
{{- $modelPath = printf "/mnt/models/%s" (join "/" (rest $parts)) -}}
{{- end -}}
serviceAccountName: {{ include "kws.serviceAccountName" $root }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ $values.shutdown.terminationGracePeriodSeconds }}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ $values.securityContext.runAsUser }}
  runAsGroup: {{ $values.securityContext.runAsGroup }}
  fsGroup: {{ $values.securityContext.runAsGroup }}
  seccompProfile:
    type: RuntimeDefault
containers:
  - name: kserve-container
    image: {{ $v.image | default (printf "%s:%s" $values.image.repository $values.image.tag) | quote }}
    imagePullPolicy: {{ $values.image.pullPolicy }}
    command: ["kws"]
    args: ["serve", "--model", "$(KWS_MODEL_URI)", "--port", "8080", "--threads", {{ $values.server.threads | quote }}, "--workers", {{ $values.server.workers | default 1 | quote }}]
    env:
      - name: KWS_MODEL_URI
        value: {{ $modelPath | quote }}
      - name: KWS_POLL_SECONDS
        value: {{ $values.server.pollSeconds | quote }}
      - name: MLFLOW_TRACKING_URI
        value: {{ $values.mlflow.trackingUri | quote }}
      {{- with $values.mlflow.credentialsSecret }}
      - name: MLFLOW_TRACKING_USERNAME
        valueFrom:
          secretKeyRef:
            name: {{ . }}
            key: {{ $values.mlflow.usernameKey }}
      - name: MLFLOW_TRACKING_PASSWORD
        valueFrom:
          secretKeyRef:
            name: {{ . }}
            key: {{ $values.mlflow.passwordKey }}
      {{- end }}
      {{- with $values.s3.endpoint }}
      - name: MLFLOW_S3_ENDPOINT_URL
        value: {{ . | quote }}
      - name: AWS_ENDPOINT_URL_S3
        value: {{ . | quote }}
      {{- end }}
      {{- with $values.s3.credentialsSecret }}
      - name: AWS_ACCESS_KEY_ID
        valueFrom:
          secretKeyRef:
            name: {{ . }}
            key: {{ $values.s3.accessKeyKey }}
      - name: AWS_SECRET_ACCESS_KEY
        valueFrom:
          secretKeyRef:
            name: {{ . }}
            key: {{ $values.s3.secretKeyKey }}
      {{- end }}
      # the root filesystem is read-only: caches and downloads go to the /tmp emptyDir
      - name: HOME
        value: /tmp
      - name: NUMBA_CACHE_DIR
        value: /tmp/numba
    ports:
      - name: http1
        containerPort: 8080
        protocol: TCP
    readinessProbe:
      httpGet:
        path: /v2/health/ready
        port: 8080
      {{- toYaml $values.probes.readiness | nindent 6 }}
    livenessProbe:
      httpGet:
        path: /v2/health/live
        port: 8080
      {{- if .knative }}
      {{- /* Knative takes no startup probe: the liveness probe waits for the model instead */}}
      {{- toYaml (merge (dict) $values.probes.liveness (dict "initialDelaySeconds" 60)) | nindent 6 }}
      {{- else }}
      {{- toYaml $values.probes.liveness | nindent 6 }}
      {{- end }}
    {{- if not .knative }}
    startupProbe:
      httpGet:
        path: /v2/health/live
        port: 8080
      {{- toYaml $values.probes.startup | nindent 6 }}
    lifecycle:
      preStop:
        # endpoint removal and SIGTERM race: keep answering until the routes have moved on
        sleep:
          seconds: {{ $values.shutdown.preStopSleepSeconds }}
    {{- end }}
    resources:
      {{- toYaml $values.resources | nindent 6 }}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      runAsNonRoot: true
      capabilities:
        drop: ["ALL"]
    volumeMounts:
      - name: tmp
        mountPath: /tmp
      {{- if $claim }}
      - name: models
        mountPath: /mnt/models
        readOnly: true
      {{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 1Gi
  {{- if $claim }}
  - name: models
    persistentVolumeClaim:
      claimName: {{ $claim }}
      readOnly: true
  {{- end }}
{{- end }}

{{/* Pod annotations of a version: scrape annotations and the model URI. */}}
{{- define "kws.predictorAnnotations" -}}
{{- $values := .root.Values -}}
{{- if and $values.monitoring.scrapeAnnotations (not .knative) }}
prometheus.io/scrape: "true"
prometheus.io/port: "8080"
prometheus.io/path: /metrics
{{- end }}
kws-mlops/model: {{ .version.model | quote }}
{{- with $values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}
