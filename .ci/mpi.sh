#!/usr/bin/env bash
# Distributed-training tests on MPI.
#
# Installs Debian's Open MPI and mpi4py into the active Python environment when
# they are missing, then runs
#   1. the multi-process tests (tests/mpi/mpi_test_*.py) under `mpirun -n 2`, and
#   2. the launcher tests (tests/mpi/launch_test_*.py): a failing rank aborts the
#      whole job, checkpoints resume on 1 or 2 ranks, `fastcnn train-gan` runs
#      unchanged under mpirun.
# Exits non-zero on any failure. Run from anywhere, with the CI venv activated.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}

if ! command -v mpirun >/dev/null 2>&1 || ! command -v mpicc >/dev/null 2>&1; then
    echo "== installing Open MPI (openmpi-bin, libopenmpi-dev)"
    SUDO=""
    if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openmpi-bin libopenmpi-dev
fi

if ! "$PY" -c "import mpi4py" >/dev/null 2>&1; then
    echo "== installing mpi4py (builds against $(command -v mpicc))"
    "$PY" -m pip install --quiet "mpi4py>=3.1"
fi

"$PY" -c "import mpi4py, sys; print('mpi4py', mpi4py.__version__, 'on Python', sys.version.split()[0])"
# sed reads to the end: with pipefail, 'head' could stop mpirun with SIGPIPE
mpirun --version | sed -n 1p

MPIRUN=(mpirun -n 2 --oversubscribe)
if [ "$(id -u)" = "0" ]; then MPIRUN+=(--allow-run-as-root); fi
export FASTCNN_MPIRUN="${MPIRUN[*]}"
export FASTCNN_REQUIRE_MPI=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== ${MPIRUN[*]} $PY -m pytest tests/mpi/mpi_test_*.py"
timeout 600 "${MPIRUN[@]}" -x PYTHONPATH "$PY" -m pytest tests/mpi/mpi_test_*.py -q -p no:cacheprovider --color=no

echo "== $PY -m pytest tests/mpi/launch_test_*.py (starts mpirun itself)"
timeout 600 "$PY" -m pytest tests/mpi/launch_test_*.py -q -p no:cacheprovider

echo "== distributed tests passed"
