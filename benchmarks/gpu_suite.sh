#!/usr/bin/env bash
# The GPU benchmark suite: every benchmark in one short call, most important first.
#
#   bash benchmarks/gpu_suite.sh [--quick] [--out DIR] [--wheels DIR] [--budget-s N]
#
# Stages, in order (each under `timeout`, each writing its JSON into DIR as it goes, so a
# run cut short still leaves every finished figure):
#   env         nvidia-smi, Python/torch/CUDA/cuDNN versions, whether smp imports
#   train_step  384x384, batch 6: V3 vs DeepLabV3-ResNet50 (and smp Unet when importable),
#               fp32 / bf16 / bf16+channels_last, then +torch.compile and the largest
#               batch while its time budget lasts               -> train_step.json
#   epoch       epoch.py --full: 1525 synthetic 640x480 images (1220/305), 2 epochs,
#               min(16, CPUs) workers, 50-epoch estimate        -> epoch.json
#   inference   inference.py --full                             -> inference.json
#   epoch_device  the same epochs with augment_on="device" and cache="shared" (uint8
#               batches, DeviceAugment on the GPU), on the same synthetic set
#                                                               -> epoch_device.json
#   data        data.py --full with the time left               -> data.json
#   augment     augment.py --full with the time left            -> augment.json
# then suite.json (stage, status, exit code, seconds) and the markdown tables of
# benchmarks/report.py, printed into the log. DIR holds at most 8 files (the device tool
# brings back 8): suite.log, suite.json and one JSON per stage.
#
# Options (or environment variables):
#   --quick       (SUIMSEG_SUITE_QUICK=1) everything tiny on the CPU, well under 2 minutes
#   --out DIR     (SUIMSEG_SUITE_OUT, else $OUT, else benchmarks/results/suite)
#   --wheels DIR  (SUIMSEG_SUITE_WHEELS) pip-install DIR/*.whl (no index, no deps) into a
#                 temporary folder first, e.g. the segmentation-models-pytorch wheel
#   --budget-s N  (SUIMSEG_SUITE_BUDGET_S) wall-clock budget of all stages; default 480
#                 (about 8 minutes on an H100), 100 with --quick
# PYTHON picks the interpreter (default python3). The suite sets PYTHONPATH to the
# checkout's src/ (no install needed) and PYTHONUNBUFFERED=1.
# Exit code: 0 when every stage that ran succeeded, 1 otherwise.

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=${SUIMSEG_SUITE_QUICK:-0}
OUTDIR=${SUIMSEG_SUITE_OUT:-${OUT:-$REPO/benchmarks/results/suite}}
WHEELS=${SUIMSEG_SUITE_WHEELS:-}
BUDGET=${SUIMSEG_SUITE_BUDGET_S:-}
PY=${PYTHON:-python3}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUTDIR=$2; shift ;;
        --wheels) WHEELS=$2; shift ;;
        --budget-s) BUDGET=$2; shift ;;
        -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "gpu_suite.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$QUICK" in 0|1) ;; *) echo "gpu_suite.sh: SUIMSEG_SUITE_QUICK must be 0 or 1, got '$QUICK'" >&2; exit 2 ;; esac
if [ -z "$BUDGET" ]; then
    if [ "$QUICK" = 1 ]; then BUDGET=100; else BUDGET=480; fi
fi
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_suite.sh: --budget-s must be a whole number of seconds, got '$BUDGET'" >&2; exit 2 ;; esac

mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/suite.log
# The synthetic SUIM set the two epoch stages share (outside DIR: it is not brought back).
SYNTH=$(mktemp -d "${TMPDIR:-/tmp}/suimseg_suite_synth.XXXXXX") || exit 2
trap 'rm -rf "$SYNTH"' EXIT
SYNTH=$SYNTH/suim
cd "$REPO" || exit 2
export PYTHONUNBUFFERED=1
export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}

START=$(date +%s)
DEADLINE=$((START + BUDGET))
STAGES=()       # "name|status|rc|wall_s|limit_s|json" per stage, for suite.json
FAILED=0
ENV_JSON='{}'

now() { date +%s; }

write_suite_json() {
    "$PY" - "$OUTDIR/suite.json" "$ENV_JSON" "$QUICK" "$BUDGET" "$(( $(now) - START ))" "${STAGES[@]}" <<'PYEOF'
import json, os, sys, tempfile
path, env, quick, budget, elapsed, *stages = sys.argv[1:]
rows = []
for s in stages:
    name, status, rc, wall, limit, js = s.split("|")
    rows.append({"stage": name, "status": status, "rc": int(rc) if rc else None,
                 "wall_s": int(wall) if wall else None, "limit_s": int(limit) if limit else None,
                 "json": js or None})
report = {"benchmark": "suimseg gpu suite", "environment": json.loads(env),
          "settings": {"quick": quick == "1", "budget_s": int(budget)},
          "results": rows, "elapsed_s": int(elapsed)}
d = os.path.dirname(path)
fd, tmp = tempfile.mkstemp(dir=d, prefix=".suite.", suffix=".tmp")
with os.fdopen(fd, "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
os.chmod(tmp, 0o644)
os.replace(tmp, path)
PYEOF
}

# run_stage NAME CAP_S MIN_S JSON_NAME COMMAND...: run under `timeout` with the smaller of
# CAP_S and the suite's time left; skip when less than MIN_S is left. "{BUDGET}" in the
# command becomes the limit minus a margin (the script's soft budget).
run_stage() {
    local name=$1 cap=$2 min=$3 json=$4
    shift 4
    local left=$((DEADLINE - $(now)))
    if [ "$left" -lt "$min" ]; then
        echo "=== $name: skipped, ${left}s of the suite budget left (needs ${min}s)"
        STAGES+=("$name|skipped (suite budget)|||$left|")
        write_suite_json
        return 0
    fi
    local limit=$cap
    [ "$left" -lt "$limit" ] && limit=$left
    local soft=$((limit - limit / 5 - 5))
    [ "$soft" -lt 1 ] && soft=1
    local args=() a
    for a in "$@"; do args+=("${a//\{BUDGET\}/$soft}"); done
    echo "=== $name: limit ${limit}s (soft budget ${soft}s), $(date -u +%H:%M:%S) UTC"
    echo "+ ${args[*]}"
    local t0 rc status
    t0=$(now)
    timeout --kill-after=10 "$limit" "${args[@]}"
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status="timed out" ;;
        *) status=failed ;;
    esac
    [ "$rc" -ne 0 ] && FAILED=1
    local wall=$(( $(now) - t0 ))
    echo "=== $name: $status (exit $rc) in ${wall}s"
    [ -n "$json" ] && [ ! -f "$OUTDIR/$json" ] && json=""
    STAGES+=("$name|$status|$rc|$wall|$limit|$json")
    write_suite_json
}

main() {
    echo "=== suimseg GPU suite: quick=$QUICK budget=${BUDGET}s out=$OUTDIR, $(date -u) "
    echo "repo $REPO, commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi || true
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit \
            --format=csv || true
    else
        echo "nvidia-smi: not found"
    fi
    echo "CPUs: $(nproc 2>/dev/null || echo '?'); python: $(command -v "$PY")"
    if [ -n "$WHEELS" ]; then
        if compgen -G "$WHEELS/*.whl" >/dev/null; then
            local site=${TMPDIR:-/tmp}/suimseg_suite_site
            echo "=== installing $(ls "$WHEELS"/*.whl | xargs -n1 basename | tr '\n' ' ')into $site"
            if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
                --upgrade --target "$site" "$WHEELS"/*.whl; then
                export PYTHONPATH=$PYTHONPATH:$site
            else
                echo "pip install of the wheels failed: continuing without them"
            fi
        else
            echo "--wheels $WHEELS: no *.whl there: continuing without"
        fi
    fi
    ENV_JSON=$("$PY" - <<'PYEOF'
import json, platform
env = {"python": platform.python_version()}
try:
    import torch, torchvision
    env.update(torch=torch.__version__, torchvision=torchvision.__version__,
               cuda_available=torch.cuda.is_available(), cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   multiprocessors=p.multi_processor_count, bf16=torch.cuda.is_bf16_supported())
except Exception as e:  # reported, the stages then fail on their own
    env["torch_error"] = repr(e)
try:
    import segmentation_models_pytorch as smp
    env["segmentation_models_pytorch"] = smp.__version__
except Exception as e:
    env["segmentation_models_pytorch"] = f"not importable ({type(e).__name__}: {e})"
try:
    import suimseg
    env["suimseg"] = suimseg.__version__
except Exception as e:
    env["suimseg"] = f"not importable ({e!r})"
print(json.dumps(env))
PYEOF
) || ENV_JSON='{"error": "environment probe failed"}'
    [ -z "$ENV_JSON" ] && ENV_JSON='{}'
    echo "environment: $ENV_JSON"
    STAGES+=("env|ok|0|$(( $(now) - START ))||")
    write_suite_json

    local B=benchmarks
    if [ "$QUICK" = 1 ]; then
        run_stage train_step 90 10 train_step.json "$PY" $B/train_step.py --device cpu \
            --size 32 --batch 2 --variants fp32 --max-batch --max-batch-variants fp32 \
            --max-batch-limit 4 --warmup 0 --repeats 1 --steps 1 --threads 1 --tiny-models \
            --budget-s "{BUDGET}" --out "$OUTDIR/train_step.json"
        run_stage epoch 90 10 epoch.json "$PY" $B/epoch.py --device cpu --n-images 12 \
            --source-size 64x48 --image-size 32 --batch-size 2 --epochs 2 --gen-workers 2 \
            --threads 1 --data-root "$SYNTH" --budget-s "{BUDGET}" --out "$OUTDIR/epoch.json"
        run_stage inference 60 10 inference.json "$PY" $B/inference.py --device cpu \
            --sizes 32 --batches 1 --warmup 0 --repeats 1 --threads 1 --tiny-models \
            --budget-s "{BUDGET}" --out "$OUTDIR/inference.json"
        run_stage epoch_device 90 10 epoch_device.json "$PY" $B/epoch.py --device cpu \
            --n-images 12 --source-size 64x48 --image-size 32 --batch-size 2 --epochs 2 \
            --threads 1 --data-root "$SYNTH" --augment-on device --cache shared \
            --budget-s "{BUDGET}" --out "$OUTDIR/epoch_device.json"
        run_stage data 60 10 data.json "$PY" $B/data.py --n-images 4 --repeats 1 \
            --out "$OUTDIR/data.json"
    else
        run_stage train_step 200 60 train_step.json "$PY" $B/train_step.py --full \
            --compile-reserve-s 60 --budget-s "{BUDGET}" --out "$OUTDIR/train_step.json"
        run_stage epoch 170 60 epoch.json "$PY" $B/epoch.py --full --data-root "$SYNTH" \
            --budget-s "{BUDGET}" --out "$OUTDIR/epoch.json"
        run_stage inference 60 30 inference.json "$PY" $B/inference.py --full \
            --budget-s "{BUDGET}" --out "$OUTDIR/inference.json"
        run_stage epoch_device 120 60 epoch_device.json "$PY" $B/epoch.py --full \
            --data-root "$SYNTH" --augment-on device --cache shared \
            --budget-s "{BUDGET}" --out "$OUTDIR/epoch_device.json"
        run_stage data 150 45 data.json "$PY" $B/data.py --full --repeats 2 \
            --out "$OUTDIR/data.json"
    fi
    if [ "$QUICK" = 1 ]; then
        run_stage augment 60 8 augment.json "$PY" $B/augment.py --device cpu --size 64 \
            --batch 2 --n-images 1 --warmup 0 --repeats 1 --out "$OUTDIR/augment.json"
    else
        run_stage augment 120 20 augment.json "$PY" $B/augment.py --full \
            --out "$OUTDIR/augment.json"
    fi

    echo "=== done in $(( $(now) - START ))s; report (python benchmarks/report.py $OUTDIR):"
    "$PY" $B/report.py "$OUTDIR" || FAILED=1
    find "$OUTDIR" -maxdepth 1 -name '.*.tmp' -delete 2>/dev/null
    ls -la "$OUTDIR"
    return "$FAILED"
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
