#!/usr/bin/env bash
# mergekit lives in the benchmark's own environment (it is not a dependency of hf_soups). The venv sees the system's
# torch==2.13.0 (CPU) through --system-site-packages, so no other torch build is downloaded.
set -euo pipefail
venv="$(dirname "$0")/.venv-mergekit"
python -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q "mergekit==0.1.5"
"$venv/bin/mergekit-yaml" --help >/dev/null && echo "mergekit ready: $venv/bin/mergekit-yaml"
