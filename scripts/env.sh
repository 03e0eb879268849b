# The project's virtual environment: makes it and installs the package into it when it
# is missing or setup.py changed since the last install. Run it to set up, then activate:
#
#   bash scripts/env.sh            # once, and again after setup.py changes
#   source .venv/bin/activate      # in every new shell
#
# The other scripts source it, and then run inside it from the repository.
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
  # setup.py names OpenCV's headless build, which installs the same cv2 package as
  # the GUI build an older setup.py named; with both, removing either breaks cv2.
  if "$VENV/bin/python" -m pip show --quiet opencv-python >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip uninstall --quiet --yes opencv-python opencv-python-headless
  fi
  "$VENV/bin/python" -m pip install --quiet -e "$REPO[test]"
  touch "$STAMP"
fi
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then  # run, not sourced: the caller activates it
  echo "setup: ready; activate it with: source ${VENV#"$PWD"/}/bin/activate"
  exit 0
fi
export PATH="$VENV/bin:$PATH"
cd "$REPO"
