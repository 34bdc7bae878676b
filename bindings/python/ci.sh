#!/usr/bin/env bash
# The Python package's check: builds the wheel in release mode, installs it into a venv of its
# own under the workspace's target/ (made on first use), and runs the pytest suite against it.
# PYTHON names the interpreter the venv is made from (default python3.11, the oldest supported).
set -euo pipefail
cd "$(dirname "$0")"
target=$(cd ../.. && pwd)/target
venv="$target/python-ci"
wheels="$target/python-wheels"

if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3.11}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  maturin==1.16.0 pytest==9.2.0 pytest-asyncio==1.5.0

rm -rf "$wheels"
"$venv/bin/maturin" build --release --quiet --interpreter "$venv/bin/python" --out "$wheels"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
  "$wheels"/pyview_fanout-*.whl

"$venv/bin/python" -m pytest -q tests
