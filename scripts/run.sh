#!/usr/bin/env bash
# Brings the whole local stack up; Ctrl-C stops it.
source "$(dirname "$0")/bootstrap.sh"
exec python -m buddy.devstack up
