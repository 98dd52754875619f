# On the GPU machine: report a sweep that runs in the background (setsid) and pack its small files
# (summaries, validation lines, log tails, sweep.json/md) into $OUT/sweep.tgz (one file: a call
# returns only a few). Usage: bash scripts/poll_sweep.sh SWEEP_DIR SECONDS_TO_WAIT
dir=$1; wait_s=${2:-0}
end=$(( $(date +%s) + wait_s ))
while [ "$(date +%s)" -lt "$end" ] && pgrep -f "train.sweep" >/dev/null; do sleep 5; done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
pack=$(mktemp -d)
for run in "$dir"/*/; do
  name=$(basename "$run"); mkdir -p "$pack/$name"
  cp "$run"/summary.json "$pack/$name/" 2>/dev/null
  grep -h '"val_acc"' "$run"/metrics.jsonl 2>/dev/null > "$pack/$name/val.jsonl"
  tail -c 4000 "$run"/stdout.log > "$pack/$name/stdout_tail.log" 2>/dev/null
  echo "== $name $(tail -n 1 "$run"/metrics.jsonl 2>/dev/null | cut -c1-60)"
  python3 -c "import sys,json; print(' '.join(f\"{d['step']}:{d['val_acc']:.2f}\" for d in map(json.loads,open(sys.argv[1]))))" "$pack/$name/val.jsonl"
  [ -f "$run/summary.json" ] && python3 -c "import sys,json; d=json.load(open(sys.argv[1])); print({k: d.get(k) for k in ('best_val_acc','best_step','test_bridged_acc','steps_run')})" "$run/summary.json"
done
cp "$dir"/sweep.json "$dir"/sweep.md "$dir"/sweep.log "$pack/" 2>/dev/null
tar czf "$OUT/sweep.tgz" -C "$pack" .
pgrep -f "train.sweep" >/dev/null && echo "sweep still running" || echo "sweep finished"
