#!/usr/bin/env bash
# Create the project's virtualenv in .venv, install the project with its dev extras, and make the
# venv's activate script point dbt at this checkout (so `dbt build` works from the repo root).
set -euo pipefail
python_bin="${1:-python3}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

"$python_bin" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

marker="# quantwarehouse environment"
if ! grep -q "$marker" .venv/bin/activate; then
    cat >> .venv/bin/activate <<ACTIVATE
$marker
export DBT_PROJECT_DIR="$repo/dbt_project"
export DBT_PROFILES_DIR="$repo/dbt_project"
ACTIVATE
fi
