#!/usr/bin/env bash
# Create the project's virtualenv and install the project with its dev tools into it.
# Installs Debian's python3-venv first when the interpreter cannot make a venv.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "bootstrap: installing python3-venv (needs apt-get)"
  apt-get update -qq && apt-get install -y -qq python3-venv
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]"
echo "bootstrap: $venv ready"
