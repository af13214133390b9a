#!/usr/bin/env bash
# GPU check, ready to run on a CUDA machine (never run on a GPU yet: no GPU was lent so far).
#
#   bash scripts/gpu_check.sh [OUT.json] [gpu_check.py options...]
#
# Sets up what `make venv` sets up (the pinned .venv; nothing else), plus a CUDA build of the
# pinned torch if the venv's torch has no CUDA (TORCH_INDEX_URL chooses where pip takes it
# from; default: PyPI's torch==2.13.0, a CUDA build on Linux). Then runs
# scripts/gpu_check.py with a time budget so the whole check stays under 8 minutes: every
# registered model at 2048x1024 camera frames (network at its native size) in fp32 and fp16
# with fp16-vs-fp32 label agreement, ONNX Runtime's CUDA/TensorRT providers where they
# import, and seg_node on the GPU measured by the latency probe. Writes one JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check.json}
[ $# -gt 0 ] && shift
VENV=${VENV:-.venv}
PY=$VENV/bin/python
START=$(date +%s)

make venv VENV="$VENV"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)'; then
    echo "gpu_check: $("$PY" -c 'import torch; print(torch.__version__)') has no CUDA;" \
         "installing a CUDA build of torch==2.13.0 ${TORCH_INDEX_URL:+from $TORCH_INDEX_URL}" >&2
    # Ignore a pip configuration that points at a local CPU-only wheel folder.
    PIP_CONFIG_FILE=/dev/null "$PY" -m pip install --quiet --force-reinstall \
        ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0" -c constraints.txt
fi
"$PY" -c 'import sys, torch; print("torch", torch.__version__, "CUDA", torch.version.cuda,
  "devices", torch.cuda.device_count(), file=sys.stderr); sys.exit(0 if torch.cuda.is_available() else 2)' || {
    echo "gpu_check: torch sees no CUDA device (driver? CUDA_VISIBLE_DEVICES?)" >&2; exit 2; }

# DDS isolated to this machine and a domain of its own; shared memory for 2048x1024 images.
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( RANDOM % 100 + 1 ))}
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$PWD/config/fastdds_shm.xml}

# 8 minutes in all: what set-up took comes off the check's budget (sections that would start
# after it are skipped and say so in the JSON; the JSON is rewritten after every section).
SPENT=$(( $(date +%s) - START ))
LEFT=$(( 470 - SPENT ))
if [ "$LEFT" -lt 120 ]; then
    echo "gpu_check: set-up took ${SPENT} s; less than 2 minutes left of the 8" >&2; exit 3
fi
BUDGET=$(( LEFT - 110 ))  # the last section (node + probe) may take up to ~110 s
exec timeout --signal=INT "$LEFT" "$PY" scripts/gpu_check.py --out "$OUT" --budget-s "$BUDGET" "$@"
