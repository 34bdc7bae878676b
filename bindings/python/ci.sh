#!/usr/bin/env bash
# The Python package's check: builds the wheel in release mode, installs it into a venv of its
# own under the workspace's target/ (made on first use), and runs the pytest suite against it,
# PyView integration tests included.
# PYTHON names the interpreter the venv is made from (default python3.11, the oldest supported).
set -euo pipefail
cd "$(dirname "$0")"
target=$(cd ../.. && pwd)/target
venv="$target/python-ci"
wheels="$target/python-wheels"

# The browser tests drive Debian's Chromium (playwright downloads no browser here).
if [ ! -x /usr/bin/chromium ]; then
  echo "ci.sh: installing chromium"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3.11}" -m venv "$venv"
fi
# The PyView integration tests run a real pyview-web 0.9.0 app (Starlette's test client needs
# httpx2); pytest-timeout turns a websocket that never answers into a failure.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  maturin==1.16.0 pytest==9.2.0 pytest-asyncio==1.5.0 pytest-timeout==2.4.0 \
  pyview-web==0.9.0 starlette==1.10.0 uvicorn==0.38.0 httpx2==2.17.0 playwright==1.64.1

rm -rf "$wheels"
"$venv/bin/maturin" build --release --quiet --interpreter "$venv/bin/python" --out "$wheels"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
  "$wheels"/pyview_fanout-*.whl

# Screenshots of the browser tests' pages land in target/pyview-browser/.
"$venv/bin/python" -m pytest -q tests
