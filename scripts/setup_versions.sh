#!/usr/bin/env bash
# Prepare the ComfyUI version matrix for `make test-versions`: unpack each ComfyUI source archive
# found in $COMFYUI_ARCHIVES (default ../shared/comfyui) into .versions/<version>/ and install the
# packages that version imports beyond the main environment into .versions/<version>/site
# (pip --target --no-deps, so .venv stays as it is). Prints one line per prepared version:
#   <version> <ComfyUI root> <site folder>
# Idempotent: a finished version is left as is.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHIVES=${COMFYUI_ARCHIVES:-../shared/comfyui}
VENV=${VENV:-.venv}
OUT=.versions

# Packages each version needs beyond ComfyUI 0.3.75's (what its code imports at start-up and in
# the tests; torchaudio has no build for torch 2.14, 2.11.1 imports and serves what is touched),
# and the frontend that version's requirements.txt pins (the browser test loads it).
extras_for() {
  case "$1" in
    0.13.0) echo "comfy-kitchen==0.2.7 comfy-aimdo==0.1.8 kornia kornia-rs spandrel torchaudio==2.11.1 comfyui-frontend-package==1.38.13" ;;
    0.33.0) echo "comfy-kitchen==0.2.31 comfy-aimdo==0.4.13 blake3 simpleeval>=1.0.0 kornia kornia-rs spandrel torchaudio==2.11.1 comfyui-frontend-package==1.49.6" ;;
    *) echo "" ;;
  esac
}

shopt -s nullglob
found=0
for archive in "$ARCHIVES"/comfyui-*.tar.gz; do
  version=$(basename "$archive" .tar.gz); version=${version#comfyui-}
  dest="$OUT/$version"
  if [ ! -f "$dest/.ready" ]; then
    rm -rf "$dest"; mkdir -p "$dest/site"
    tar -xzf "$archive" -C "$dest"
    extras=$(extras_for "$version")
    if [ -n "$extras" ]; then
      # shellcheck disable=SC2086
      "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps --target "$dest/site" $extras >&2
    fi
    touch "$dest/.ready"
  fi
  root=$(find "$dest" -maxdepth 2 -name main.py -printf '%h\n' | head -1)
  echo "$version $(realpath "$root") $(realpath "$dest/site")"
  found=$((found + 1))
done
[ "$found" -gt 0 ] || echo "no ComfyUI archives in $ARCHIVES" >&2
