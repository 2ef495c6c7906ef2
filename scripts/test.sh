#!/usr/bin/env bash
# Runs the whole test suite against real emulators. Extra arguments go to pytest.
source "$(dirname "$0")/bootstrap.sh"
project=${GCLOUD_PROJECT:-demo-buddy}
exec firebase emulators:exec --only auth,firestore,pubsub --project "$project" \
  "python -m pytest $(printf '%q ' "$@")"
