# The last staging call on the GPU machine (docs/GPU.md): join the pieces, cut the two GGUFs apart,
# check their sha256, convert both once into $LATENTWIRE_CACHE. Run from the repo root.
set -e
mkdir -p /tmp/lwstage /tmp/lw
# the last piece is the one this call carried (only carried ignored folders travel)
cp .stage/p*/piece_* /tmp/lwstage/
# pieces in numeric order (piece_10 after piece_9); the sha256 check below catches a missing one
ls /tmp/lwstage/piece_* | sort -t_ -k2 -n | xargs cat > /tmp/lwstage/all
head -c 253113024 /tmp/lwstage/all > /tmp/lw/gemma-3-270m-q4_k_m.gguf
tail -c +253113025 /tmp/lwstage/all > /tmp/lw/SmolLM2-135M-Instruct.Q4_1.gguf
rm /tmp/lwstage/all
cd /tmp/lw && printf '%s\n' \
  "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  gemma-3-270m-q4_k_m.gguf" \
  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c && cd - >/dev/null
. scripts/device_env.sh
python3 -c "import sys; from lw_runtime.models import load_model; [load_model(p) for p in sys.argv[1:]]" "$LW_SOURCE" "$LW_TARGET" 2>&1 | grep -v "Loading weights" | tail -3
