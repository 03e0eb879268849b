#!/usr/bin/env bash
# Sets up the environment if needed and runs the whole test suite (about 12 min on 2 cores).
#   bash scripts/test.sh [pytest arguments]
source "$(dirname "$0")/env.sh"
python -m pytest "$@"
