#!/usr/bin/env bash
# Brings the whole local stack up; Ctrl-C stops it and saves its data in .emulator-data/.
# --fresh starts with no data (the data saved last moves to .emulator-data.previous/).
source "$(dirname "$0")/bootstrap.sh"
exec python -m buddy.devstack up "$@"
