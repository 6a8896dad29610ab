#!/usr/bin/env bash
# The runs behind docs/RESULTS.md, one after another, each on 1 CPU thread (python recipes/run.py).
#
#   bash recipes/results_queue.sh EXPERIMENT [RUNS_DIR]     EXPERIMENT: mnist | ablation | natural
#
# Every run writes <RUNS_DIR>/<experiment>/<run>/ (config.yaml, metrics.json, logs/metrics.csv, samples/);
# a run whose metrics.json exists is skipped, so the same command finishes an interrupted queue.
# Then: python recipes/report.py <RUNS_DIR>/<experiment> --out docs/results/<experiment>
set -euo pipefail
cd "$(dirname "$0")/.."
EXPERIMENT=${1:?usage: bash recipes/results_queue.sh mnist|ablation|natural [RUNS_DIR]}
RUNS=${2:-/work/runs}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=offline
COMMON=(threads=1 logger=csv trainer.enable_progress_bar=false trainer.max_epochs=-1
        trainer.log_every_n_steps=1 sample.every_n_epochs=0 sample.n=16 checkpoint.every_n_minutes=null)

run() {  # run NAME RECIPE [key=value ...]
  local name=$1 recipe=$2; shift 2
  local out="$RUNS/$EXPERIMENT/$name"
  if [[ -f $out/metrics.json ]]; then echo "[queue] $name: done already"; return; fi
  echo "[queue] $(date -u +%T) $name: python recipes/run.py --recipe $recipe --out $out ${COMMON[*]} $*"
  python recipes/run.py --recipe "$recipe" --out "$out" "${COMMON[@]}" "$@" > "$RUNS/$EXPERIMENT/$name.log" 2>&1 \
    || echo "[queue] $name FAILED (see $RUNS/$EXPERIMENT/$name.log)"
}

mkdir -p "$RUNS/$EXPERIMENT"
case $EXPERIMENT in
  mnist)  # paper Table 4 models on the 5,000 embedded digits (4,000 / 500 / 500), equal steps
    MNIST=(data.source=embedded trainer.max_steps=300 trainer.val_check_interval=50 trainer.limit_val_batches=8)
    for seed in 0 1; do
      for recipe in mnist_pixelcnn mnist_row_lstm mnist_diagonal_bilstm_1l mnist_diagonal_bilstm_7l; do
        run "${recipe#mnist_}-s$seed" "$recipe" seed=$seed "${MNIST[@]}"
      done
    done ;;
  *) echo "unknown experiment $EXPERIMENT" >&2; exit 2 ;;
esac
