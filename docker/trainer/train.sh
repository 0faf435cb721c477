#!/bin/sh
# Train in the Compose stack: register the ZenML `compose` stack (MLflow service), then
# run the pipeline once per config (arguments, else $KWS_PIPELINE_CONFIGS: baseline variant),
# each registering one model version. $KWS_PIPELINE_SET: space-separated params overrides
# for every run (e.g. "data.max_per_class=5 train.epochs=1" for a tiny run).
set -eu
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI to the MLflow service (http://mlflow:5000)}"
# shellcheck disable=SC2086  # a space-separated list: one argument per config
[ "$#" -gt 0 ] || set -- ${KWS_PIPELINE_CONFIGS:-baseline variant}
overrides=""
for assignment in ${KWS_PIPELINE_SET:-}; do
    overrides="$overrides --set $assignment"
done
kws pipeline stack compose --var "MLFLOW_TRACKING_URI=$MLFLOW_TRACKING_URI" \
    --var "MLFLOW_TRACKING_USERNAME=${MLFLOW_TRACKING_USERNAME:-kws}" \
    --var "MLFLOW_TRACKING_PASSWORD=${MLFLOW_TRACKING_PASSWORD:-unused}"
for config in "$@"; do
    echo "== kws pipeline run --config $config$overrides"
    # shellcheck disable=SC2086  # one word per override
    kws pipeline run --config "$config" --params "$KWS_PARAMS" $overrides
done
kws registry list --params "$KWS_PARAMS"
