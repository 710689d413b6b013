#!/usr/bin/env bash
# The whole suite N times (default 3) while stress-ng keeps 2 CPUs busy: the suite must pass
# on a busy machine (it waits on events, never on timing luck). Needs root, libvirtd up and
# Debian's stress-ng (installed here if missing); prints one line per run.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
command -v stress-ng >/dev/null || apt-get install -y -qq stress-ng >/dev/null
stress-ng --cpu 2 --timeout 0 --quiet &
stress=$!
trap 'kill "$stress" 2>/dev/null' EXIT
for run in $(seq 1 "$runs"); do
  started=$(date +%s)
  CI=true .venv/bin/python -m pytest -q -p no:cacheprovider > "/tmp/stress-suite-$run.log" 2>&1
  status=$?
  summary=$(grep -E "^=+ .*(passed|failed)" "/tmp/stress-suite-$run.log" | tail -1 | tr -d '=')
  echo "run $run: exit $status,${summary} ($(( $(date +%s) - started )) s; log /tmp/stress-suite-$run.log)"
done
