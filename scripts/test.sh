#!/usr/bin/env bash
# Set up this machine and run the whole test suite (unit tests, then the root integration tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
