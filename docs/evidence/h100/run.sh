#!/usr/bin/env bash
# The H100 certificate: the product's own CLI and playbook on the GPU box, in priority order.
# Run from the repo root on the box (device tool) after ../shared/gpu-vllm/README.md's install into /tmp/site
# and with .dev/ carried (libjemalloc.so.2, ansible-core wheels). Results go to $EV (default /tmp/ev);
# each step appends to $EV/progress.log and keeps its JSON and stderr. A step that fails does not stop the rest.
set -u
EV=${EV:-/tmp/ev}
mkdir -p "$EV"
export PYTHONPATH=/tmp/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 NCCL_NVLS_ENABLE=0 \
  TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1 PATH=/tmp/site/bin:$PATH
PY=$(command -v python3)
M=/tmp/models/qwen2.5-1.5b
JE=$PWD/.dev/libjemalloc.so.2
step() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "== $(date -u +%T) $name: $*" >> "$EV/progress.log"
  "$@" > "$EV/$name.json" 2> "$EV/$name.err"
  echo "== $(date -u +%T) $name rc=$? $(( $(date +%s) - t0 )) s" >> "$EV/progress.log"
}
only() { [ -z "${STEPS:-}" ] || [[ ",$STEPS," == *",$1,"* ]]; }

only model && step model $PY -m probes model make --shape qwen2.5-1.5b --out $M --device cuda --json
only facts && step facts ansible localhost -c local -i localhost, -m node_facts -e ansible_python_interpreter=$PY
only load && step load $PY -m probes load --model $M --device cuda --drop-caches --repeats 4 --json
only generate && step generate $PY -m probes generate --model $M --device cuda --allocators glibc,jemalloc \
  --processes 4 --calls 4 --jemalloc-path "$JE" --json
only ttft && step ttft $PY -m probes ttft --model $M --max-model-len 4096 --kv-budget 0.5 -n 20 --max-tokens 64 \
  --prompt-words 128 --api completions,chat --log-dir $EV/logs --json
only batching && step batching $PY -m probes batching --model $M --max-model-len 4096 --kv-budget 0.5 -N 64 \
  --max-concurrency 64 --repeats 1 --max-tokens 128 --prompt-words 128 --time-budget-s 240 --log-dir $EV/logs --json
only bootstrap && step bootstrap ansible-playbook -i localhost, -c local playbooks/bootstrap.yml \
  -e @docs/evidence/h100/vars.yml -e preflight_report_dir=$EV/reports -e ansible_python_interpreter=$PY \
  -e preflight_level=${LEVEL:-standard}
only kv && step kv $PY -m probes kv --model $M --enforce-eager --max-model-len 4096,16384,32768 \
  --kv-budget 0.5,0.3,0.7 --json
only ab_allocator && step ab_allocator $PY -m probes ab --factor allocator --repeats 3 --model $M --enforce-eager \
  --max-model-len 4096 --kv-budget 0.5 --jemalloc-path "$JE" --json
only ab_pagecache && step ab_pagecache $PY -m probes ab --factor pagecache --drop-caches --repeats 2 --model $M \
  --enforce-eager --max-model-len 4096 --kv-budget 0.5 --json
only ab_thp && step ab_thp $PY -m probes ab --factor thp --repeats 2 --model $M --enforce-eager \
  --max-model-len 4096 --kv-budget 0.5 --json
echo "== $(date -u +%T) all done" >> "$EV/progress.log"
