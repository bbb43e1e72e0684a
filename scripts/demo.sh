#!/usr/bin/env bash
# A newcomer's first run: set up, bring up the guestbook lab, look at it, prove it, take it down.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
NETLAB=.venv/bin/netlab
LAB=${1:-labs/guestbook}

cleanup() { "$NETLAB" down guestbook >/dev/null 2>&1 || true; }
trap cleanup EXIT

step() { printf '\n\033[1m$ netlab %s\033[0m\n' "$*"; "$NETLAB" "$@"; }
step up "$LAB"
step get nodes -o wide
step get pods -o wide
step get svc
step get endpoints
if "$NETLAB" verify --help >/dev/null 2>&1; then
  step verify
fi
step down guestbook
trap - EXIT
