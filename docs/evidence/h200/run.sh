#!/usr/bin/env bash
# The H200 certificate: the product's own playbook at levels standard and full, on the GPU box.
# Run from the project copy on the box (device tool), after ../shared/gpu-vllm/README.md's install into /tmp/site
# and with .gpu/kit carried (ansible-core wheels installed into /tmp/site, libjemalloc.so.2). Results go to $EV
# (default /tmp/ev): one folder per level with the reports and the playbook's console log; progress.log says
# when each step began and ended. A step that fails does not stop the next.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
EV=${EV:-/tmp/ev}
mkdir -p "$EV"
export PYTHONPATH=/tmp/site VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 NCCL_NVLS_ENABLE=0 \
  TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1 PATH=/tmp/site/bin:$PATH
PY=/opt/torch/.venv/bin/python3
# pip --target puts no console script for the carried ansible-core: a wrapper of its CLI module does.
if ! command -v ansible-playbook > /dev/null; then
  printf '#!/bin/sh\nexec %s -m ansible.cli.playbook "$@"\n' "$PY" > /tmp/site/bin/ansible-playbook
  chmod +x /tmp/site/bin/ansible-playbook
fi
M=/tmp/models/qwen2.5-1.5b
step() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "== $(date -u +%T) $name: $*" >> "$EV/progress.log"
  "$@" > "$EV/$name.log" 2>&1
  echo "== $(date -u +%T) $name rc=$? $(( $(date +%s) - t0 )) s" >> "$EV/progress.log"
}
only() { [ -z "${STEPS:-}" ] || [[ ",$STEPS," == *",$1,"* ]]; }
pstep() {  # pstep name probe args...: one probe run, its JSON in $EV/name.json and its stderr in $EV/name.log
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "== $(date -u +%T) $name: probes $*" >> "$EV/progress.log"
  $PY -m probes "$@" --json > "$EV/$name.json" 2> "$EV/$name.log"
  echo "== $(date -u +%T) $name rc=$? $(( $(date +%s) - t0 )) s" >> "$EV/progress.log"
}
level() {  # level [name]: the name (default the level) keeps a second run of one level apart
  local name=${2:-$1}
  step "bootstrap-$name" ansible-playbook -i localhost, -c local playbooks/bootstrap.yml \
    -e @"$HERE/vars.yml" -e ansible_python_interpreter=$PY -e preflight_level="$1" \
    -e preflight_report_dir="$EV/$name/reports"
}

# The carried wheels are installed with --no-compile (../shared/gpu-vllm/install.sh); pip's default, what a node
# that installed vLLM the usual way has, writes the bytecode at install time. Without it every first import of a
# certification compiles vLLM's modules (tens of seconds of the server start).
if only bytecode; then step bytecode $PY -m compileall -q -j 0 /tmp/site; fi
if only jemalloc; then cp .gpu/kit/libjemalloc.so.2 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2; fi
if only model && [ ! -d $M ]; then
  step model $PY -m probes model make --shape qwen2.5-1.5b --out $M --device cuda --json
fi
if only standard; then level standard; fi
if only full; then level full; fi
# Standard again on the same node: the compile cache of vLLM (torch.compile) is warm, as on any later run.
if only again; then level standard standard-again; fi
# Warm TTFT sampled until the 95 % interval of its median is within 10 % of it (at most 400), with level full's
# server settings (compiled, budget 0.5 of the GPU, max-model-len 4096).
if only precision; then
  pstep ttft-precision ttft --model $M --max-model-len 4096 --kv-budget 0.5 -n 40 --warm-ci-pct 10 \
    --warm-max 400 --input-tokens 256 --output-tokens 32 --api completions
fi
# The server-level A/Bs: fresh eager vLLM starts per arm, interleaved and rotated, 4 per arm, one unmeasured start
# first; each factor stops at whole rounds within AB_BUDGET_S seconds. Per factor, AB_REPEATS_<factor> and
# AB_BUDGET_S_<factor> override those; with AB_CONTINUE=1 a factor whose result is in server-ab/ pools those
# starts (probes ab --continue-from: same settings, checked) and its rounds continue after them.
if only ab; then
  mkdir -p "$EV/ab"
  for factor in ${AB_FACTORS:-allocator pagecache thp}; do
    extra=()
    case $factor in
      pagecache) extra=(--drop-caches) ;;
      thp) extra=(--arms always,never --ttft-requests 5 --throughput-prompts 16) ;;
      allocator) extra=(--jemalloc-path /usr/lib/x86_64-linux-gnu/libjemalloc.so.2) ;;
    esac
    if [ -n "${AB_CONTINUE:-}" ] && [ -f "$HERE/server-ab/$factor.json" ]; then
      extra+=(--continue-from "$HERE/server-ab/$factor.json")
    fi
    repeats=AB_REPEATS_$factor budget=AB_BUDGET_S_$factor
    pstep "ab/$factor" ab --factor "$factor" --repeats "${!repeats:-4}" --warmup-starts 1 --model $M --enforce-eager \
      --max-model-len 4096 --kv-budget 0.5 --time-budget-s "${!budget:-${AB_BUDGET_S:-330}}" \
      --log-dir "$EV/ab/$factor-logs" "${extra[@]}"
  done
fi
echo "== $(date -u +%T) all done" >> "$EV/progress.log"
