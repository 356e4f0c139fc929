#!/usr/bin/env bash
# Load and allocator probes on a GPU host (the H100 proof of issue 4), one JSON envelope per probe.
#
#   bench/gpu_probes.sh load     OUTDIR [SHAPE]   # cold/warm load with --drop-caches, disk read, H2D copy
#   bench/gpu_probes.sh generate OUTDIR [SHAPE]   # glibc vs jemalloc, fresh processes
#
# SHAPE defaults to qwen2.5-1.5b, built on the GPU into $PREFLIGHT_MODEL_CACHE (default
# /tmp/preflight-models) unless already there. jemalloc: $JEMALLOC, else .dev/libjemalloc.so.2, else the host's.
# Knobs: LOAD_REPEATS (5), GEN_PROCESSES (6), GEN_CALLS (5), NEW_TOKENS (64), PROMPT_TOKENS (16).
set -euo pipefail

what=${1:?usage: $0 load|generate OUTDIR [SHAPE]}
out=${2:?usage: $0 load|generate OUTDIR [SHAPE]}
shape=${3:-qwen2.5-1.5b}
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 HF_HUB_DISABLE_PROGRESS_BARS=1
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
export PREFLIGHT_MODEL_CACHE=${PREFLIGHT_MODEL_CACHE:-/tmp/preflight-models}
mkdir -p "$out"
cd "$here"

{
  echo "# $(date -u +%FT%TZ) $(hostname) $what $shape"
  nvidia-smi --query-gpu=index,name,pci.bus_id,pcie.link.gen.current,pcie.link.width.current,memory.total,driver_version \
    --format=csv 2>&1 || echo "nvidia-smi: not available"
  "$py" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'
} >"$out/$what.host.txt" 2>&1

# Build (or find) the model first, so that its build time is not inside the first measured run.
start=$(date +%s)
"$py" -m probes model resolve "$shape" --device auto --json >"$out/model.json"
echo "model ready in $(( $(date +%s) - start )) s" >>"$out/$what.host.txt"

case "$what" in
  load)
    cmd=("$py" -m probes load --model "$shape" --device auto --repeats "${LOAD_REPEATS:-5}" --drop-caches --json)
    ;;
  generate)
    jemalloc=${JEMALLOC:-}
    if [[ -z "$jemalloc" && -f .dev/libjemalloc.so.2 ]]; then jemalloc=.dev/libjemalloc.so.2; fi
    cmd=("$py" -m probes generate --model "$shape" --device auto --allocators glibc,jemalloc
         --processes "${GEN_PROCESSES:-6}" --calls "${GEN_CALLS:-5}" --new-tokens "${NEW_TOKENS:-64}"
         --prompt-tokens "${PROMPT_TOKENS:-16}" --json)
    if [[ -n "$jemalloc" ]]; then cmd+=(--jemalloc-path "$jemalloc"); fi
    ;;
  *) echo "unknown probe $what (load or generate)" >&2; exit 2 ;;
esac

echo "command: ${cmd[*]}" >>"$out/$what.host.txt"
rc=0
"${cmd[@]}" >"$out/$what.json" 2>"$out/$what.stderr.txt" || rc=$?
echo "exit status $rc" >>"$out/$what.host.txt"
"$py" - "$out/$what.json" <<'EOF'
import json, sys
from probes import result
doc = json.load(open(sys.argv[1]))
result.validate(doc)
result.emit(doc, False)
EOF
exit $rc
