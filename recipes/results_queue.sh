#!/usr/bin/env bash
# The runs behind docs/RESULTS.md, one after another, each on 1 CPU thread (python recipes/run.py).
#
#   bash recipes/results_queue.sh EXPERIMENT [SEED ...]     EXPERIMENT: mnist | natural | ablation
#   RUNS=/work/runs bash recipes/results_queue.sh ...        (where the run folders go; default /work/runs)
#   ONLY="row_lstm-s1 diagonal_bilstm-s1" bash recipes/results_queue.sh natural 1   (just those runs)
#
# Every run writes $RUNS/<experiment>/<run>/ (config.yaml, metrics.json, logs/metrics.csv, samples/);
# a run whose metrics.json exists is skipped, so the same command finishes an interrupted queue.
# Tables and curves: python recipes/report.py $RUNS/<experiment> --out docs/results/<experiment>
set -euo pipefail
cd "$(dirname "$0")/.."
EXPERIMENT=${1:?usage: bash recipes/results_queue.sh mnist|natural|ablation [SEED ...]}
shift
SEEDS=("${@:-0}")
RUNS=${RUNS:-/work/runs}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=offline
COMMON=(threads=1 logger=csv trainer.enable_progress_bar=false trainer.max_epochs=-1
        trainer.log_every_n_steps=1 sample.every_n_epochs=0 checkpoint.every_n_minutes=null)

run() {  # run NAME SCRIPT RECIPE [key=value ...]
  local name=$1 script=$2 recipe=$3; shift 3
  local out="$RUNS/$EXPERIMENT/$name"
  if [[ -n ${ONLY:-} && " $ONLY " != *" $name "* ]]; then return; fi
  if [[ -f $out/metrics.json ]]; then echo "[queue] $name: done already"; return; fi
  echo "[queue] $(date -u +%T) $name: python $script --recipe $recipe --out $out ${COMMON[*]} $*"
  python "$script" --recipe "$recipe" --out "$out" "${COMMON[@]}" "$@" > "$RUNS/$EXPERIMENT/$name.log" 2>&1 \
    || echo "[queue] $name FAILED (see $RUNS/$EXPERIMENT/$name.log)"
}

mkdir -p "$RUNS/$EXPERIMENT"
case $EXPERIMENT in
  mnist)  # paper Table 4 models on the 5,000 embedded digits (4,000 / 500 / 500), equal steps
    MNIST=(data.source=embedded trainer.max_steps=300 trainer.val_check_interval=50 trainer.limit_val_batches=8
           sample.n=16)
    for seed in "${SEEDS[@]}"; do
      for recipe in mnist_pixelcnn mnist_row_lstm mnist_diagonal_bilstm_1l mnist_diagonal_bilstm_7l; do
        run "${recipe#mnist_}-s$seed" recipes/run.py "$recipe" seed="$seed" "${MNIST[@]}"
      done
    done ;;
  natural)  # 32x32 RGB patches of scikit-image's photographs, split by photograph; equal steps, small models
    NATURAL=(data.name=skimage_patches data.val_size=null model.hidden=12 model.layers=3 model.head_channels=32
             model.lr=0.01 trainer.max_steps=120 trainer.val_check_interval=40 sample.n=8)
    for seed in "${SEEDS[@]}"; do
      run "pixelcnn-s$seed" recipes/run.py cifar10_pixelcnn seed="$seed" "${NATURAL[@]}"
      run "row_lstm-s$seed" recipes/run.py cifar10_row_lstm seed="$seed" "${NATURAL[@]}"
      run "diagonal_bilstm-s$seed" recipes/run.py cifar10_diagonal_bilstm seed="$seed" "${NATURAL[@]}"
      run "multiscale_row_lstm-s$seed" recipes/run.py cifar10_row_lstm seed="$seed" "${NATURAL[@]}" \
        model.arch=multiscale model.base=row_lstm model.low_res=16 model.cond_maps=12 \
        paper.test=null paper.train=null \
        "paper.where=no multi-scale CIFAR-10 figure in the paper"
    done ;;
  ablation)  # residual x skip of the MNIST Row LSTM (7 layers h=16), by the sweep runner, per seed
    for seed in "${SEEDS[@]}"; do
      echo "[queue] $(date -u +%T) ablation seed $seed"
      python recipes/sweep.py --sweep residual_skip --recipe mnist_row_lstm --out "$RUNS/ablation" --seeds "$seed" \
        "${COMMON[@]}" data.source=embedded trainer.max_steps=150 trainer.val_check_interval=50 \
        trainer.limit_val_batches=8 sample.n=16 > "$RUNS/ablation/sweep-s$seed.log" 2>&1 \
        || echo "[queue] ablation seed $seed: a run FAILED (see $RUNS/ablation/sweep-s$seed.log)"
    done ;;
  *) echo "unknown experiment $EXPERIMENT: mnist | natural | ablation" >&2; exit 2 ;;
esac
