#!/usr/bin/env bash
# Runs the whole test suite against real emulators: type checks first, then pytest.
# Extra arguments go to pytest.
source "$(dirname "$0")/bootstrap.sh"
# Browser tests drive Debian's Chromium through the playwright package (never
# `playwright install`, which downloads a browser from outside the package archives).
if [ ! -x /usr/bin/chromium ]; then
  echo "» installing chromium (apt-get)" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null
fi
echo "» mypy" >&2
mypy
project=${GCLOUD_PROJECT:-demo-buddy}
exec firebase emulators:exec --config "$BUDDY_FIREBASE_CONFIG" --only "$BUDDY_EMULATORS" \
  --project "$project" "python -m pytest ${*:+$(printf '%q ' "$@")}"
