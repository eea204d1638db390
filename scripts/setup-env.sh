# Sourced by scripts/run and scripts/test: create .venv on first use and install what is
# missing. The venv sees the system's site-packages, so a torch you already have (a CUDA
# build, say) is used as it is; only where no torch is importable is torch==2.13.0 installed.
set -eu
PYTHON=${PYTHON:-python3}
VENV=${BATCHBENCH_VENV:-.venv}
EXTRAS=${EXTRAS:-}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
stamp="$VENV/.batchbench-installed$EXTRAS"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
  fi
  "$VENV/bin/python" -m pip install --quiet -e ".$EXTRAS"
  touch "$stamp"
fi
