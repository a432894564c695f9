#!/usr/bin/env bash
# Run the whole test suite against every ComfyUI version prepared by scripts/setup_versions.sh
# (each with its own extra packages on PYTHONPATH; the main environment is unchanged).
# Fails when any version fails, or when no version could be prepared.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
versions=$(bash scripts/setup_versions.sh)
[ -n "$versions" ] || { echo "test-versions: no ComfyUI archives found in ${COMFYUI_ARCHIVES:-../shared/comfyui}" >&2; exit 1; }
status=0
while read -r version root site; do
  echo "=== ComfyUI $version ($root)"
  start=$(date +%s)
  if COMFYUI_ROOT="$root" PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m pytest -q "$@"; then
    echo "=== ComfyUI $version: passed in $(( $(date +%s) - start )) s"
  else
    echo "=== ComfyUI $version: FAILED after $(( $(date +%s) - start )) s"; status=1
  fi
done <<< "$versions"
exit $status
