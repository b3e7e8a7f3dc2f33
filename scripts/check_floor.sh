#!/usr/bin/env bash
# Test the declared dependency floor: a fresh venv with the LOWEST versions that
# pyproject.toml allows for the runtime dependencies (scripts/floor_requirements.py turns
# each `name>=X` into `name==X`), the project installed without dependencies, then the
# core test subset below. Any failure means the declared floor is wrong: raise it.
#
# Usage: scripts/check_floor.sh [VENV_DIR]        (default: a fresh temporary folder)
# Environment:
#   PYTHON           interpreter for the venv (default python3; the floor job uses 3.10)
#   TORCH_INDEX_URL  extra index for torch/torchvision, e.g.
#                    https://download.pytorch.org/whl/cpu (CPU wheels, ~200 MB instead of
#                    ~2.5 GB of CUDA libraries from PyPI); unset: PyPI only
#   FLOOR_TESTS      override the test selection (space-separated pytest arguments)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${1:-$(mktemp -d)/floor-venv}
# The core API: models, losses, metrics, classes, the public surface, the data layer, the
# trainer and its checkpoints (torch.load(weights_only=True) refusals), the predictor.
FLOOR_TESTS=${FLOOR_TESTS:-tests/models tests/losses tests/test_metrics.py tests/test_classes.py tests/test_public_api.py tests/data/test_transforms.py tests/data/test_dataset.py tests/engine/test_trainer.py tests/engine/test_checkpoint.py tests/reliability/test_untrusted_checkpoints.py tests/inference/test_predictor.py}

start=$(date +%s)
floor=$(mktemp)
"$PYTHON" scripts/floor_requirements.py > "$floor"
echo "== declared floor:"; cat "$floor"

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip

index_args=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  index_args=(--extra-index-url "$TORCH_INDEX_URL")
fi
# Binary wheels only: an sdist build of an old numpy/pillow would test a different thing.
python -m pip install --only-binary=:all: "${index_args[@]}" -r "$floor"
python -m pip install --no-deps -e .
# Test tools, constrained so they cannot move a runtime dependency off its floor.
python -m pip install -c "$floor" "pytest>=8.0" "hypothesis>=6.100"

echo "== installed (must equal the floor):"
python - "$floor" <<'PY'
import sys
from importlib.metadata import version

bad = []
for line in open(sys.argv[1]):
    name, want = line.strip().split("==")
    got = version(name)
    # "2.2" pins 2.2.0; a local tag (+cpu) is the same release
    same = got.split("+")[0].split(".") + ["0"] * 3
    print(f"  {name:18} {got}")
    if [int(p) for p in same[:3]] != ([int(p) for p in want.split(".")] + [0] * 3)[:3]:
        bad.append(f"{name}: wanted {want}, got {got}")
if bad:
    sys.exit("floor not installed: " + "; ".join(bad))
PY

set +e
# shellcheck disable=SC2086
python -m pytest -q -p no:cacheprovider $FLOOR_TESTS
rc=$?
set -e
echo "== floor check: pytest exit $rc, $(( $(date +%s) - start )) s wall"
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
