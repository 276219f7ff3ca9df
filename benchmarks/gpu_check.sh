#!/usr/bin/env bash
# One check of pyrovae on a GPU machine, in under 8 minutes:
#
#   env          GPU name, torch / CUDA / cuDNN / Pyro versions, the commit           -> env.txt
#   cuda-tests   tests/test_cuda.py and tests/test_cuda_runs.py                        -> cuda-tests.log, .xml
#   suite        the rest of the test suite (with cuda-tests: the whole suite)         -> suite.log, .xml
#   fit          pyrovae fit on Fashion-MNIST on cuda, 10 epochs                        -> fit-fashion-mnist-cuda/
#   evaluate     pyrovae evaluate of that run on cuda: first 1,000 test images, k=5000  -> .../evaluation.json
#   plots        pyrovae plots of that run (reconstructions, latent space, curves)      -> .../*.png
#   throughput   benchmarks/throughput.py --device cuda (16,384 images, batch 128 and 1024, 3 rounds;
#                eager, compiled and cudagraph meanfield beside the hand-written eager and CUDA-graph steps)
#                                                                                      -> throughput_cuda.{json,md}
#
# and summary.md (each step's status, seconds and limit). Every step runs under `timeout`: it gets
# its own limit, cut so that the whole script ends within GPU_CHECK_BUDGET_S seconds (460) with the
# minimum time of every later step still left, so one hung step cannot eat the others' time.
# A failed step does not stop the others; the exit status is 1 if any step failed or was cut.
#
# On the lent GPU machine (Python 3.12, torch with CUDA; Pyro and ArviZ come from the carry):
#     bash ../shared/gpu/prepare-carry.sh                      # here, once: fills .gpu-carry/
#     source .gpu-carry/setup.sh && bash benchmarks/gpu_check.sh  # there (carry: .gpu-carry)
#
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR] [--steps a,b,...] [--dry-run | --cpu-smoke]
#   OUT_DIR      where everything is written (default: $OUT if set, else benchmarks/results/gpu)
#   --steps      run only these steps (e.g. --steps throughput to redo one); the others are listed.
#                evaluate and plots read the fit's run directory, whose checkpoint.pt the plots step
#                removes when it has run: redo them together with fit
#   --dry-run    print the plan (limits and commands) and run nothing
#   --cpu-smoke  run the same steps on the CPU with tiny settings (digits), the test steps left out:
#                a check of this script where there is no GPU (tests/test_benchmarks.py runs it)
# Environment: GPU_CHECK_BUDGET_S (460; a step that ignores its SIGTERM is killed 10 s later),
#   GPU_CHECK_COMMIT (the commit to report where the copy has no .git, e.g.
#   GPU_CHECK_COMMIT=$(git rev-parse --short HEAD) on the command line), PYTHON (python3).

set -uo pipefail

BUDGET_S=${GPU_CHECK_BUDGET_S:-460}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MPLBACKEND=${MPLBACKEND:-Agg}

STEP_NAMES=() STEP_CAPS=() STEP_MINS=() STEP_CMDS=()
ROWS=()
FAILED=0

add_step() {  # name, cap seconds, minimum seconds (kept free for it by earlier steps), command words...
  local name=$1 cap=$2 min=$3
  shift 3
  STEP_NAMES+=("$name") STEP_CAPS+=("$cap") STEP_MINS+=("$min") STEP_CMDS+=("$(printf '%q ' "$@")")
}

env_report() {  # what the machine is; with "gpu", fail unless torch sees a CUDA GPU
  local need=$1
  echo "commit: $COMMIT"
  if command -v nvidia-smi >/dev/null; then
    echo "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 4 | paste -sd ';')"
  fi
  "$PY" - "$need" <<'PY'
import os, platform, sys
from importlib import metadata

need = sys.argv[1]
try:
    import torch
except ImportError as error:
    sys.exit(f"cannot import torch ({error}): this needs a Python with torch")
print(f"python: {sys.version.split()[0]} ({platform.platform()}, {os.cpu_count()} cores)")
print(f"torch: {torch.__version__}; built with CUDA {torch.version.cuda}; cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"gpu {i}: {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB")
else:
    print("gpu: none visible to torch")
for name in ("pyro-ppl", "numpy", "scipy", "arviz", "arviz-stats", "scikit-learn", "matplotlib", "click", "pytest",
             "hypothesis"):
    try:
        print(f"{name}: {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name}: not installed")
try:
    import pyrovae
except ImportError as error:
    sys.exit(f"cannot import pyrovae ({error}): on the GPU machine run `source .gpu-carry/setup.sh` first")
print(f"pyrovae: {pyrovae.__version__} from {os.path.dirname(pyrovae.__file__)}")
if need == "gpu" and not torch.cuda.is_available():
    sys.exit("torch sees no CUDA GPU: this check is for a GPU machine (--cpu-smoke tries its steps on a CPU)")
PY
}

plan() {  # the steps of a mode: gpu or cpu-smoke
  local mode=$1 run
  if [ "$mode" = gpu ]; then
    run="$OUT_DIR/fit-fashion-mnist-cuda"
    add_step env 60 10 env_report gpu
    # (a test file that cannot be imported, e.g. for want of hypothesis, is reported; the others still run)
    add_step cuda-tests 150 30 "$PY" -m pytest -q -p no:cacheprovider -rs --durations=10 --continue-on-collection-errors \
      --junitxml="$OUT_DIR/cuda-tests.xml" tests/test_cuda.py tests/test_cuda_runs.py
    add_step suite 300 60 "$PY" -m pytest -q -p no:cacheprovider -rs --durations=15 --continue-on-collection-errors \
      --junitxml="$OUT_DIR/suite.xml" tests --ignore=tests/test_cuda.py --ignore=tests/test_cuda_runs.py
    add_step fit 90 40 "$PY" -m pyrovae fit --dataset fashion-mnist --device cuda --epochs 10 --no-progress \
      --out "$run"
    add_step evaluate 75 25 "$PY" -m pyrovae evaluate "$run" --device cuda --points 1000 --k 5000 --no-progress
    add_step plots 45 15 "$PY" -m pyrovae plots "$run"
    add_step throughput 180 90 "$PY" benchmarks/throughput.py --device cuda --dataset fashion-mnist \
      --n-train 16384 --batch-sizes 128,1024 --elbos meanfield,compiled-meanfield,cudagraph-meanfield \
      --rounds 3 --breakdown-batches 128,1024 --breakdown-repeats 20 --out "$OUT_DIR"
  else
    run="$OUT_DIR/fit-digits-cpu"
    add_step env 60 5 env_report any
    add_step cuda-tests 0 0 :
    add_step suite 0 0 :
    add_step fit 120 5 "$PY" -m pyrovae fit --dataset digits --device cpu --epochs 1 --z-dim 4 --hidden 32 \
      --batch-size 256 --no-progress --out "$run"
    add_step evaluate 120 5 "$PY" -m pyrovae evaluate "$run" --device cpu --points 20 --k 30 --no-progress
    add_step plots 120 5 "$PY" -m pyrovae plots "$run"
    add_step throughput 180 5 "$PY" benchmarks/throughput.py --device cpu --dataset digits --n-train 256 \
      --batch-sizes 128 --elbos meanfield --rounds 1 --no-breakdown --threads 1 --out "$OUT_DIR"
  fi
  RUN_DIR=$run
}

record() {  # name, status, seconds, limit, log; rewrites summary.md so that a killed script leaves one
  ROWS+=("| $1 | $2 | $3 | $4 | $5 |")
  {
    echo "# pyrovae GPU check ($MODE)"
    echo
    echo "commit $COMMIT; started $STARTED; time budget ${BUDGET_S} s; machine: see env.txt"
    echo
    echo "| step | status | seconds | limit (s) | log |"
    echo "| --- | --- | ---: | ---: | --- |"
    printf '%s\n' "${ROWS[@]}"
  } >"$OUT_DIR/summary.md"
}

run_step() {  # index of the step in the plan
  local i=$1 name=${STEP_NAMES[$1]} cap=${STEP_CAPS[$1]} cmd=${STEP_CMDS[$1]}
  local log="$OUT_DIR/$name.log" later=0 j left limit t0 rc seconds status
  [ "$name" = env ] && log="$OUT_DIR/env.txt"
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then
    record "$name" "not selected" - - -
    return
  fi
  if [ "$cap" = 0 ]; then
    echo "== $name: left out in $MODE mode"
    record "$name" "left out ($MODE)" - - -
    return
  fi
  for ((j = i + 1; j < ${#STEP_NAMES[@]}; j++)); do
    if [ -z "$ONLY" ] || [[ ",$ONLY," == *",${STEP_NAMES[$j]},"* ]]; then later=$((later + STEP_MINS[j])); fi
  done
  left=$((DEADLINE - $(date +%s) - later))
  limit=$((cap < left ? cap : left))
  if ((limit < 1)); then
    echo "== $name: not run, the time budget is spent"
    record "$name" "**not run: budget spent**" - 0 -
    FAILED=1
    return
  fi
  echo "== $name (limit ${limit} s): $cmd"
  t0=$(date +%s%N)
  if [ "$name" = env ]; then  # a shell function: run it in a subshell under the limit
    COMMIT=$COMMIT PY=$PY timeout -k 10 "$limit" bash -c "$(declare -f env_report); $cmd" >"$log" 2>&1
  else
    timeout -k 10 "$limit" bash -c "$cmd" >"$log" 2>&1
  fi
  rc=$?
  seconds=$(awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.1f", ns / 1e9 }')
  case $rc in
    0) status=ok ;;
    124 | 137) status="**timeout after ${limit} s**" FAILED=1 ;;
    *) status="**failed (exit $rc)**" FAILED=1 ;;
  esac
  tail -n 4 "$log" | sed 's/^/   /'
  echo "   -> $status in $seconds s"
  record "$name" "$status" "$seconds" "$limit" "$(basename "$log")"
}

main() {
  MODE=gpu ONLY="" OUT_DIR=""
  local dry=0
  while [ $# -gt 0 ]; do
    case $1 in
      --dry-run) dry=1 ;;
      --cpu-smoke) MODE=cpu-smoke ;;
      --steps) ONLY=${2:?--steps needs a comma-separated list}; shift ;;
      --steps=*) ONLY=${1#--steps=} ;;
      -h | --help) sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; return 0 ;;
      -*) echo "unknown option $1 (see --help)" >&2; return 2 ;;
      *) OUT_DIR=$1 ;;
    esac
    shift
  done
  OUT_DIR=${OUT_DIR:-${OUT:-}}
  [ -n "$OUT_DIR" ] && OUT_DIR=$(realpath -m -- "$OUT_DIR")  # a folder given is relative to where we were
  cd "$(dirname "${BASH_SOURCE[0]}")/.." || return 2
  OUT_DIR=${OUT_DIR:-benchmarks/results/gpu}
  COMMIT=${GPU_CHECK_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo "unknown (no git; set GPU_CHECK_COMMIT)")}
  STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  plan "$MODE"
  local known
  known=$(IFS=,; echo "${STEP_NAMES[*]}")
  for name in ${ONLY//,/ }; do
    [[ ",$known," == *",$name,"* ]] || { echo "unknown step $name: the steps are $known" >&2; return 2; }
  done
  if ((dry)); then
    echo "pyrovae GPU check, $MODE mode: plan (time budget ${BUDGET_S} s; output to $OUT_DIR; commit $COMMIT)"
    for i in "${!STEP_NAMES[@]}"; do
      printf '%-11s limit %3s s, keeps %3s s for itself: %s\n' "${STEP_NAMES[$i]}" "${STEP_CAPS[$i]}" "${STEP_MINS[$i]}" "${STEP_CMDS[$i]}"
    done
    return 0
  fi
  if [[ -e $RUN_DIR && ( -z $ONLY || ,$ONLY, == *,fit,* ) ]]; then
    echo "$RUN_DIR exists already: give another output folder (or remove it)" >&2
    return 2
  fi
  mkdir -p "$OUT_DIR" || return 2
  DEADLINE=$(($(date +%s) + BUDGET_S))
  echo "pyrovae GPU check ($MODE): output to $OUT_DIR, time budget ${BUDGET_S} s, commit $COMMIT"
  for i in "${!STEP_NAMES[@]}"; do
    run_step "$i"
    case ${STEP_NAMES[$i]},${ROWS[-1]} in
      "env,| env | ok |"* | "env,| env | not selected"*) ;;
      env,*)
        echo "the machine check failed (see env.txt): nothing else is run" >&2
        return 1
        ;;
      "plots,| plots | not selected"*) ;;
      plots,*) rm -f "$RUN_DIR/checkpoint.pt" ;;  # weights (8 MB on Fashion-MNIST) are not a result to keep
    esac
  done
  echo
  cat "$OUT_DIR/summary.md"
  return $FAILED
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
  exit $?
fi
