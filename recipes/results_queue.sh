#!/usr/bin/env bash
# The runs behind docs/RESULTS.md, one after another, each on 1 CPU thread (python recipes/run.py).
#
#   bash recipes/results_queue.sh EXPERIMENT [SEED ...]     EXPERIMENT: see below
#   RUNS=/work/runs bash recipes/results_queue.sh ...        (where the run folders go; default /work/runs)
#   ONLY="row_lstm-s1 diagonal_bilstm-s1" bash recipes/results_queue.sh natural 1   (just those runs)
#
# Experiments:
#   mnist | ablation | natural               the runs RESULTS.md reports today (300 / 150 / 120 steps, seeds 0 1)
#   mnist_long | ablation_long | natural_long   issue 22's runs: 2,000 / 1,000 / 600 steps, meant for seeds
#       0 1 2; a step checkpoint every 100 steps (re-running the same command resumes an unfinished run),
#       logged every 10 steps, and each finished run's record (config.yaml, metrics.json, logs/metrics.csv)
#       copied to $RECORDS/<experiment>/<run>/ (default docs/results/runs/), from which
#       python -m pixel_lightning.tools.report docs/results/runs/<experiment> --out docs/results/<experiment>
#       regenerates the tables and curves.
#   records EXPERIMENT                        copy the records of EXPERIMENT's finished runs (no training)
#
# Every run writes $RUNS/<experiment>/<run>/ (config.yaml, metrics.json, logs/metrics.csv, samples/);
# a run whose metrics.json exists is skipped, so the same command finishes an interrupted queue.
# Tables and curves: python -m pixel_lightning.tools.report $RUNS/<experiment> --out docs/results/<experiment>
set -euo pipefail
cd "$(dirname "$0")/.."
EXPERIMENT=${1:?usage: bash recipes/results_queue.sh EXPERIMENT [SEED ...] (see the head of this file)}
shift
RUNS=${RUNS:-/work/runs}
RECORDS=${RECORDS:-docs/results/runs}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=offline
COMMON=(threads=1 logger=csv trainer.enable_progress_bar=false trainer.max_epochs=-1
        trainer.log_every_n_steps=1 sample.every_n_epochs=0 checkpoint.every_n_minutes=null)
LONG=(threads=1 logger=csv trainer.enable_progress_bar=false trainer.max_epochs=-1
      trainer.log_every_n_steps=10 sample.every_n_epochs=0 checkpoint.every_n_minutes=null
      checkpoint.every_n_steps=100)

record() {  # record RUN: a finished run's config.yaml, metrics.json and logs/metrics.csv into $RECORDS
  local name=$1 src="$RUNS/$EXPERIMENT/$1" dst="$RECORDS/$EXPERIMENT/$1"
  [[ -f $src/metrics.json ]] || return 0
  mkdir -p "$dst/logs"
  cp "$src/config.yaml" "$src/metrics.json" "$dst/"
  cp "$src/logs/metrics.csv" "$dst/logs/"
  echo "[queue] $name: record in $dst"
}

run() {  # run NAME SCRIPT RECIPE [key=value ...]
  local name=$1 script=$2 recipe=$3; shift 3
  local out="$RUNS/$EXPERIMENT/$name"
  if [[ -n ${ONLY:-} && " $ONLY " != *" $name "* ]]; then return; fi
  if [[ -f $out/metrics.json ]]; then echo "[queue] $name: done already"; return; fi
  echo "[queue] $(date -u +%T) $name: python $script --recipe $recipe --out $out ${SHARED[*]} $*"
  python "$script" --recipe "$recipe" --out "$out" "${SHARED[@]}" "$@" > "$RUNS/$EXPERIMENT/$name.log" 2>&1 \
    || echo "[queue] $name FAILED (see $RUNS/$EXPERIMENT/$name.log)"
  if [[ -n ${KEEP_RECORDS:-} ]]; then record "$name"; fi
}

mnist() {  # mnist STEPS SEED...: paper Table 4 models on the 5,000 embedded digits (4,000 / 500 / 500)
  local steps=$1; shift
  local args=(data.source=embedded trainer.max_steps="$steps" trainer.val_check_interval=50
              trainer.limit_val_batches=8 sample.n=16)
  for seed in "$@"; do
    for recipe in mnist_pixelcnn mnist_row_lstm mnist_diagonal_bilstm_1l mnist_diagonal_bilstm_7l; do
      run "${recipe#mnist_}-s$seed" recipes/run.py "$recipe" seed="$seed" "${args[@]}"
    done
  done
}

natural() {  # natural STEPS VAL_EVERY SEED...: 32x32 patches of scikit-image's photographs, split by photograph
  local steps=$1 every=$2; shift 2
  local args=(data.name=skimage_patches data.val_size=null model.hidden=12 model.layers=3 model.head_channels=32
              model.lr=0.01 trainer.max_steps="$steps" trainer.val_check_interval="$every" sample.n=8)
  for seed in "$@"; do
    run "pixelcnn-s$seed" recipes/run.py cifar10_pixelcnn seed="$seed" "${args[@]}"
    run "row_lstm-s$seed" recipes/run.py cifar10_row_lstm seed="$seed" "${args[@]}"
    run "diagonal_bilstm-s$seed" recipes/run.py cifar10_diagonal_bilstm seed="$seed" "${args[@]}"
    run "multiscale_row_lstm-s$seed" recipes/run.py cifar10_row_lstm seed="$seed" "${args[@]}" \
      model.arch=multiscale model.base=row_lstm model.low_res=16 model.cond_maps=12 \
      paper.test=null paper.train=null \
      "paper.where=no multi-scale CIFAR-10 figure in the paper"
  done
}

ablation() {  # ablation STEPS SEED...: residual x skip of the MNIST Row LSTM (7 layers h=16), by the sweep runner
  local steps=$1; shift
  for seed in "$@"; do
    echo "[queue] $(date -u +%T) ablation seed $seed"
    python -m pixel_lightning.tools.sweep --sweep residual_skip --recipe mnist_row_lstm --out "$RUNS/$EXPERIMENT" --seeds "$seed" \
      "${SHARED[@]}" data.source=embedded trainer.max_steps="$steps" trainer.val_check_interval=50 \
      trainer.limit_val_batches=8 sample.n=16 > "$RUNS/$EXPERIMENT/sweep-s$seed.log" 2>&1 \
      || echo "[queue] ablation seed $seed: a run FAILED (see $RUNS/$EXPERIMENT/sweep-s$seed.log)"
    if [[ -n ${KEEP_RECORDS:-} ]]; then records; fi
  done
}

records() {  # every finished run of $EXPERIMENT
  for dir in "$RUNS/$EXPERIMENT"/*/; do record "$(basename "$dir")"; done
}

setup() {  # setup short|long: the shared overrides, the run folders and (long) the records
  if [[ $1 == long ]]; then
    SHARED=("${LONG[@]}"); KEEP_RECORDS=1; RUNS="$RUNS/long"; EXPERIMENT=${EXPERIMENT%_long}
  else
    SHARED=("${COMMON[@]}")
  fi
  mkdir -p "$RUNS/$EXPERIMENT"
}

if [[ $EXPERIMENT == *_long && $# -eq 0 ]]; then set -- 0 1 2; fi  # issue 22: three seeds
case $EXPERIMENT in
  mnist) setup short; mnist 300 "${@:-0}" ;;
  natural) setup short; natural 120 40 "${@:-0}" ;;
  ablation) setup short; ablation 150 "${@:-0}" ;;
  mnist_long) setup long; mnist 2000 "${@:-0}" ;;
  natural_long) setup long; natural 600 40 "${@:-0}" ;;
  ablation_long) setup long; ablation 1000 "${@:-0}" ;;
  records)  # records EXPERIMENT (mnist, ..., mnist_long, ...): copy the finished runs' records, no training
    EXPERIMENT=${1:?usage: bash recipes/results_queue.sh records EXPERIMENT}
    if [[ $EXPERIMENT == *_long ]]; then RUNS="$RUNS/long"; EXPERIMENT=${EXPERIMENT%_long}; fi
    records ;;
  *) echo "unknown experiment $EXPERIMENT: mnist | natural | ablation | mnist_long | natural_long |" \
          "ablation_long | records" >&2; exit 2 ;;
esac
