# The quality ladder (relay-QA 1/2/4/8 facts x soft_only/context) on one GPU: the eight runs as
# concurrent processes (train.ablations --only), then one call that collects them into
# quality.json/.md and the plots. Usage: bash scripts/gpu_quality.sh OUT_DIR [train.fsdp flags]
set -u
out=$1; shift
runs="soft_only_f1 soft_only_f2 soft_only_f4 soft_only_f8 context_f1 context_f2 context_f4 context_f8"
mkdir -p "$out"
for run in $runs; do
  timeout "${LW_RUN_TIMEOUT:-540}" python -m train.ablations quality --only "$run" --out-dir "$out" --no-progress --threads 1 "$@" \
    > "$out/$run.log" 2>&1 &
done
wait
for run in $runs; do echo "== $run"; grep -v "Loading" "$out/$run.log" | tail -2; done
python -m train.ablations quality --collect --out-dir "$out" --no-progress --threads 1 "$@" 2>&1 | grep -v "Loading" | tail -40
