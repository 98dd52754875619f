# On the GPU machine: report a sweep that runs in the background (setsid) and copy its small files to
# $OUT. Usage: bash scripts/poll_sweep.sh SWEEP_DIR SECONDS_TO_WAIT
dir=$1; wait_s=${2:-0}
end=$(( $(date +%s) + wait_s ))
while [ "$(date +%s)" -lt "$end" ] && pgrep -f "train.sweep" >/dev/null; do sleep 5; done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
for run in "$dir"/*/; do
  name=$(basename "$run"); mkdir -p "$OUT/$name"
  cp "$run"/summary.json "$OUT/$name/" 2>/dev/null
  grep -h '"val_acc"' "$run"/metrics.jsonl 2>/dev/null > "$OUT/$name/val.jsonl"
  tail -c 4000 "$run"/stdout.log > "$OUT/$name/stdout_tail.log" 2>/dev/null
  echo "== $name $(tail -n 1 "$run"/metrics.jsonl 2>/dev/null | cut -c1-160)"
  grep -h '"val_acc"' "$run"/metrics.jsonl 2>/dev/null | python3 -c "import sys,json; print(' '.join(f\"{d['step']}:{d['val_acc']:.2f}\" for d in map(json.loads,sys.stdin)))"
done
cp "$dir"/sweep.json "$dir"/sweep.md "$dir"/sweep.log "$OUT/" 2>/dev/null
pgrep -f "train.sweep" >/dev/null && echo "sweep still running" || echo "sweep finished"
