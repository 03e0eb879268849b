# Sourced by the other scripts: makes the project's virtual environment and installs
# the package into it when it is missing or setup.py changed since the last install.
# TWOPLUSONE_VENV picks another place for it (default: .venv in the repository).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TWOPLUSONE_VENV:-$REPO/.venv}"
PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtual environment $VENV"
  "$PYTHON_BIN" -m venv "$VENV"
fi
STAMP="$VENV/.twoplusone-installed"
if [ ! -f "$STAMP" ] || [ "$REPO/setup.py" -nt "$STAMP" ]; then
  echo "setup: installing twoplusone and its dependencies (a few minutes the first time)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$REPO[test]"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
cd "$REPO"
