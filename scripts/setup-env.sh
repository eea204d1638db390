# Sourced by scripts/run and scripts/test: create .venv on first use and install what is
# missing. The venv sees the system's site-packages, so a torch you already have (a CUDA
# build, say) is used as it is; only where no torch is importable is torch==2.13.0 installed.
set -eu
PYTHON=${PYTHON:-python3}
VENV=${BATCHBENCH_VENV:-.venv}
EXTRAS=${EXTRAS:-}
say() { echo "batchbench set-up: $*" >&2; }
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV (first run only)"
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
stamp="$VENV/.batchbench-installed$EXTRAS"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    say "installing torch==2.13.0 (CPU build; a torch you already have is used instead) ..."
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
  fi
  say "installing batchbench$EXTRAS and its dependencies (about a minute the first time) ..."
  "$VENV/bin/python" -m pip install --quiet -e ".$EXTRAS"
  touch "$stamp"
  say "done"
fi
