#!/usr/bin/env bash
# The GPU measurements README's "Measured here" asks for, on a machine with a CUDA GPU and no network.
#
# Steps (each bounded to fit a 10-minute command; run them one at a time or all in order):
#   setup    install wheels brought along in wheels/ (if present); print torch, CUDA, the GPU, MPS
#   bench20  python -m lab bench --sweep at depth 20: reference loop, lab trainer, each compile mode
#   bench56  the same at depth 56
#   packed   1, 4 and 8 ResNet-56 runs at once on the GPU as processes (eager and reduce-overhead)
#   paper    one paper-schedule ResNet-56 (64k iterations, batch 128) on generated CIFAR-10-sized data
#            (45k/5k/10k images), queued and trained through the worker; wall time from queueing to done
#   fig6     the Fig. 6 sweep (plain and residual at 20, 32, 44, 56) at half schedule (32k iterations),
#            packed 8 on the one GPU (--per-gpu 8); wall time from queueing to the last run done
#   resume   a ResNet-20 run killed (kill -9 of its process) after its first checkpoints, resumed, finished
#   summary  every figure the steps printed
#
#   bash scripts/gpu_check.sh [STEP ...]        # default: all steps in order
#   bash scripts/gpu_check.sh --dry [STEP ...]  # the same commands on the CPU with tiny sizes (a rehearsal)
#
# Environment: PY (default python3; the GPU image has torch 2.11, torchvision 0.26, pandas and tqdm),
# OUT (default gpu-check/: one log per step and the results folders), COMPILE_MODE for paper/fig6/resume
# (default reduce-overhead), STEP_TIMEOUT (seconds per step, default 570).
#
# The GPU machine has no network. Download the wheels the lab needs and the image lacks here first, into
# wheels/ at the repository root (it travels with the working tree), for the device's Python 3.12:
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       --platform manylinux_2_17_x86_64 -d wheels sqlalchemy greenlet typing-extensions scipy
# (`setup` installs whatever is in wheels/ with `pip install --no-index --find-links wheels/`; the trainer and
# the worker need only sqlalchemy beside torch, pandas and numpy; plotly, streamlit and kaleido are not needed.)
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [[ "${1:-}" == "--dry" ]]; then DRY=1; shift; fi
PY=${PY:-python3}
OUT=${OUT:-gpu-check}
MODE=${COMPILE_MODE:-reduce-overhead}
STEP_TIMEOUT=${STEP_TIMEOUT:-570}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1

if (( DRY )); then
  # a rehearsal on the CPU: the same commands, sizes that finish in a few minutes
  DEVICE=cpu; BENCH="--device cpu --gpu-sweep --iterations 3 --repeats 1 --warmup 1 --modes off,default"
  PACKED="--packed 2"; N_TRAIN=2000; N_TEST=500; PAPER_IT=20; FIG6_IT=20; FIG6_DEPTHS=20,32; PER_GPU=2
  RESUME_IT=200; RESUME_CKPT=20; KILL_AT=30; EXTRA="--eval-every 20 --log-every 10 --checkpoint-every 20 --batch-size 16"
  COMPILE="--no-compile"  # compiling on a CPU takes minutes; tests/test_gpu_path.py covers a compiled run
else
  DEVICE=cuda; BENCH="--sweep --modes off,default,reduce-overhead,max-autotune"
  PACKED="--packed 1,4,8"; N_TRAIN=50000; N_TEST=10000; PAPER_IT=64000; FIG6_IT=32000; FIG6_DEPTHS=20,32,44,56
  PER_GPU=8; RESUME_IT=20000; RESUME_CKPT=1000; KILL_AT=2500; EXTRA=""
  COMPILE="--compile --compile-mode $MODE"
fi
DATA="$OUT/data"

say() { echo "== $*"; }
lab() { "$PY" -m lab "$@"; }
bounded() { timeout --signal=INT --kill-after=20 "$STEP_TIMEOUT" "$@"; }

make_data() {  # CIFAR-10-sized random images in torchvision's layout (no download)
  [[ -f "$DATA/cifar-10-batches-py/test_batch" ]] && return 0
  "$PY" -c "from pathlib import Path; from lab.bench import write_cifar10_format as w; w(Path('$DATA'), $N_TRAIN, $N_TEST)"
}

field() {  # field RESULTS RUN_PREFIX_OR_EMPTY KEY: a value from `lab ls --json` (the first matching run)
  "$PY" - "$1" "$2" "$3" <<'EOF'
import json, subprocess, sys
results, prefix, key = sys.argv[1:]
rows = json.loads(subprocess.run([sys.executable, "-m", "lab", "ls", "--json", "--results", results],
                                 capture_output=True, text=True).stdout or "[]")
rows = [r for r in rows if r["id"].startswith(prefix)]
print(rows[0].get(key, "") if rows else "")
EOF
}

wait_done() {  # wait_done RESULTS DEADLINE_S: until no run is queued or running; prints the seconds waited
  "$PY" - "$1" "$2" <<'EOF'
import json, subprocess, sys, time
results, deadline = sys.argv[1], time.time() + float(sys.argv[2])
t0 = time.time()
while time.time() < deadline:
    rows = json.loads(subprocess.run([sys.executable, "-m", "lab", "ls", "--json", "--results", results],
                                     capture_output=True, text=True).stdout or "[]")
    if rows and all(r["status"] not in ("queued", "running") for r in rows):
        break
    time.sleep(2)
print(f"{time.time() - t0:.1f}")
EOF
}

stop_workers() {  # the step's background worker, so the next step has the GPU to itself
  "$PY" -c "import os, signal; from lab.runs.store import Store; [os.kill(w['pid'], signal.SIGTERM) for w in Store('$1').live_workers()]"
}

fresh() {  # an empty results folder for a step (stopping a worker an earlier try left there)
  [[ -f "$1/lab.db" ]] && stop_workers "$1" 2>/dev/null
  rm -rf "$1"
}

report_runs() {  # one line per run: label, status, iteration, images/s, final errors
  "$PY" - "$1" <<'EOF'
import json, subprocess, sys
rows = json.loads(subprocess.run([sys.executable, "-m", "lab", "ls", "--json", "--results", sys.argv[1]],
                                 capture_output=True, text=True).stdout or "[]")
for r in rows:
    keep = {k: r.get(k) for k in ("label", "status", "iteration", "total_iterations", "images_per_s",
                                  "elapsed_s", "final_train_error", "final_test_error") if k in r}
    print("  run", r["id"], json.dumps(keep))
EOF
}

step_setup() {
  if compgen -G "wheels/*.whl" > /dev/null; then
    say "installing wheels from wheels/"
    "$PY" -m pip install --quiet --no-index --find-links wheels/ wheels/*.whl || return 1
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  "$PY" - <<'EOF'
import torch, torchvision, sys
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
import sqlalchemy, pandas
from lab.runtime import mps_status
print(f"sqlalchemy {sqlalchemy.__version__}, pandas {pandas.__version__}; MPS: {mps_status()}")
EOF
}

step_bench20() { bounded lab bench $BENCH --depths 20 --packed 0; }
step_bench56() { bounded lab bench $BENCH --depths 56 --packed 0; }
step_packed() {
  if (( DRY )); then bounded lab bench $BENCH --depths 20 $PACKED; return; fi
  bounded lab bench --gpu-sweep --iterations 300 --modes off,reduce-overhead --depths 56 $PACKED
}

step_paper() {
  make_data || return 1
  local results="$OUT/paper"
  fresh "$results"
  say "paper schedule: ResNet-56, $PAPER_IT iterations, $COMPILE, through the worker"
  local t0=$SECONDS
  lab sweep --kinds residual --depths 56 --preset paper --dataset cifar10 --iterations "$PAPER_IT" \
      --device "$DEVICE" $COMPILE $EXTRA --data "$DATA" --results "$results" || return 1
  local waited; waited=$(wait_done "$results" "$((STEP_TIMEOUT - 30))")
  say "paper: queued to finished in $((SECONDS - t0)) s (waited $waited s); target: at most 180 s"
  report_runs "$results"
  if [[ "$(field "$results" "" status)" != "done" ]]; then
    say "paper: not done within the step's time; cancelling it (it keeps its checkpoint)"
    lab cancel "$(field "$results" "" id)" --results "$results"
  fi
  stop_workers "$results"
}

step_fig6() {
  make_data || return 1
  local results="$OUT/fig6"
  fresh "$results"
  say "Fig. 6 sweep at half schedule: plain and residual at $FIG6_DEPTHS, $FIG6_IT iterations, $PER_GPU per GPU"
  local t0=$SECONDS
  lab sweep --kinds plain,residual --depths "$FIG6_DEPTHS" --preset paper --dataset cifar10 --iterations "$FIG6_IT" \
      --device "$DEVICE" $COMPILE $EXTRA --per-gpu "$PER_GPU" --slots "$PER_GPU" \
      --data "$DATA" --results "$results" || return 1
  local waited; waited=$(wait_done "$results" "$((STEP_TIMEOUT - 30))")
  say "fig6: queued to all finished in $((SECONDS - t0)) s (waited $waited s); target: at most 240 s"
  report_runs "$results"
  grep -h "slot(s)" "$results/worker.log" 2>/dev/null | tail -1
  stop_workers "$results"
}

step_resume() {
  make_data || return 1
  local results="$OUT/resume"
  fresh "$results"
  say "resume: ResNet-20, $RESUME_IT iterations, checkpoint every $RESUME_CKPT, killed after iteration $KILL_AT"
  lab sweep --kinds residual --depths 20 --preset paper --dataset cifar10 --iterations "$RESUME_IT" \
      --checkpoint-every "$RESUME_CKPT" --device "$DEVICE" $COMPILE $EXTRA \
      --data "$DATA" --results "$results" || return 1
  local rid; rid=$(field "$results" "" id)
  # kill -9 the run's process once it is past KILL_AT (its store row, polled every 0.1 s)
  "$PY" - "$results" "$rid" "$KILL_AT" "$((STEP_TIMEOUT / 2))" <<'EOF' || return 1
import os, signal, sys, time
from lab.runs.store import Store
store, rid, at, deadline = Store(sys.argv[1]), sys.argv[2], int(sys.argv[3]), time.time() + float(sys.argv[4])
while time.time() < deadline:
    run = store.get_run(rid)
    if run["status"] == "running" and run["pid"] and (run["iteration"] or 0) >= at:
        os.kill(run["pid"], signal.SIGKILL)
        print(f"== killed run {rid} (pid {run['pid']}) at iteration {run['iteration']} with SIGKILL")
        sys.exit(0)
    if run["status"] not in ("queued", "running"):
        sys.exit(f"resume: the run ended {run['status']} before iteration {at}; nothing to kill")
    time.sleep(0.1)
sys.exit(f"resume: the run did not reach iteration {at} in time")
EOF
  sleep 5
  say "status after the kill: $(field "$results" "$rid" status)"
  lab resume "$rid" --results "$results" --data "$DATA" || return 1
  wait_done "$results" "$((STEP_TIMEOUT / 2 - 20))" > /dev/null
  report_runs "$results"
  "$PY" - "$results" "$rid" <<'EOF'
import sys
from lab.runs.store import Store
store = Store(sys.argv[1])
run = store.get_run(sys.argv[2])
steps = sorted(set(store.scalars(run["id"], ["train_error"])["step"]))
gaps = [b - a for a, b in zip(steps, steps[1:]) if b - a != steps[0]]
print(f"resume: status {run['status']}, iteration {run['iteration']} of {run['total_iterations']}, "
      f"{len(steps)} training windows, {'no gaps or repeats' if not gaps else f'irregular steps {gaps[:5]}'}; "
      f"device {run['env'].get('device')} ({run['env'].get('device_name')})")
EOF
  stop_workers "$results"
}

step_summary() {
  say "summary (full logs in $OUT/*.txt)"
  grep -hE "^(python|GPU|device:|CUDA|measured|resnet|  [0-9]+ at once|== (paper|fig6|resume):|resume:|  run )" \
      "$OUT"/{setup,bench20,bench56,packed,paper,fig6,resume}.txt 2>/dev/null
}

steps=("$@")
(( ${#steps[@]} )) || steps=(setup bench20 bench56 packed paper fig6 resume summary)
for s in "${steps[@]}"; do
  if ! declare -F "step_$s" > /dev/null; then echo "unknown step $s"; exit 2; fi
  if [[ "$s" == summary ]]; then step_summary; continue; fi
  say "step $s ($(date -u +%H:%M:%S))"
  t0=$SECONDS
  "step_$s" 2>&1 | tee "$OUT/$s.txt"
  [[ -f "$OUT/$s/lab.db" ]] && stop_workers "$OUT/$s" 2>/dev/null  # however the step ended
  say "step $s took $((SECONDS - t0)) s"
done
