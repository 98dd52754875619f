# On the GPU machine: report training runs that go on in the background (setsid: train.sweep,
# scripts/gpu_chains.sh) and pack their small files (summaries, validation lines, log tails, the
# sweep/curriculum tables) into $OUT/sweep.tgz (one file: a call returns only a few).
# Usage: [POLL_PATTERN=train.curriculum] [PACK_TRANSLATORS="RUN ..."] bash scripts/poll_sweep.sh DIR SECONDS_TO_WAIT
dir=$1; wait_s=${2:-0}; pattern="python3? -m ${POLL_PATTERN:-train.sweep}"
: "${OUT:?set OUT, the output folder of the call}"
end=$(( $(date +%s) + wait_s ))
while [ "$(date +%s)" -lt "$end" ] && pgrep -f "$pattern" >/dev/null; do sleep 5; done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
pack=$(mktemp -d)
find "$dir" -name metrics.jsonl | sort | while read -r metrics; do
  run=$(dirname "$metrics"); name=$(realpath --relative-to="$dir" "$run" | tr '/' '_'); mkdir -p "$pack/$name"
  cp "$run"/summary.json "$run"/evaluation.json "$pack/$name/" 2>/dev/null
  grep -h '"val_acc"' "$metrics" > "$pack/$name/val.jsonl"
  tail -c 4000 "$run"/stdout.log > "$pack/$name/stdout_tail.log" 2>/dev/null
  echo "== $name $(tail -n 1 "$metrics" | cut -c1-60)"
  python3 -c "import sys,json; print(' '.join(f\"{d['step']}:{d['val_acc']:.2f}\" for d in map(json.loads,open(sys.argv[1]))))" "$pack/$name/val.jsonl"
  [ -f "$run/summary.json" ] && python3 -c "import sys,json; d=json.load(open(sys.argv[1])); print({k: d.get(k) for k in ('best_val_acc','best_step','test_bridged_acc','steps_run')})" "$run/summary.json"
done
# the tables and provenance of sweeps and curricula one or two folders down, and the launch logs
{ find "$dir" -maxdepth 3 \( -name 'sweep.*' -o -name 'curriculum.*' -o -name '*.plan' \); find "$dir" -maxdepth 2 -name '*.log' ! -name stdout.log; } | while read -r f; do
  rel=$(realpath --relative-to="$dir" "$f" | tr '/' '_'); cp "$f" "$pack/$rel"; done
tar czf "$OUT/sweep.tgz" -C "$pack" .
# PACK_TRANSLATORS="RUN [RUN ...]" (run folders relative to DIR): each finished run's translator as
# a bf16 $OUT/<run>.tgz (~14.5 MB for the embedded default; a call returns at most 8 files of 16 MiB)
for run in ${PACK_TRANSLATORS:-}; do
  if [ -f "$dir/$run/translator/translator_config.json" ]; then
    python3 "$(dirname "$0")/pack_translator.py" "$dir/$run/translator" "$OUT/$(echo "$run" | tr '/' '_').tgz"
  else echo "no translator yet in $dir/$run"; fi
done
pgrep -f "$pattern" >/dev/null && echo "runs still going" || echo "runs finished"
