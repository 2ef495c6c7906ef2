#!/usr/bin/env bash
# Benchmarks against the emulators; writes bench/results.{json,md,png}. `--quick`: under a minute.
source "$(dirname "$0")/bootstrap.sh"
project=${GCLOUD_PROJECT:-demo-buddy}
exec firebase emulators:exec --config "$BUDDY_FIREBASE_CONFIG" --only "$BUDDY_EMULATORS" \
  --project "$project" "python -m bench.run ${*:+$(printf '%q ' "$@")}"
