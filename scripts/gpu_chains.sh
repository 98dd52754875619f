# On the GPU machine: start each line of a chains plan ("name: TASKS [flags]") as its own background
# `python -m train.curriculum` (setsid, so it outlives the call) in OUT_DIR/name, with the common
# flags after the plan. Usage: bash scripts/gpu_chains.sh PLAN OUT_DIR [common flags]
plan=$1; out=$2; shift 2
mkdir -p "$out"; cp "$plan" "$out/"
grep -v '^\s*#' "$plan" | grep ':' | while IFS= read -r line; do
  name=${line%%:*}; rest=${line#*:}
  # shellcheck disable=SC2086
  setsid nohup python -m train.curriculum $rest --out-dir "$out/$name" "$@" > "$out/$name.log" 2>&1 < /dev/null &
  echo "started $name"
done
