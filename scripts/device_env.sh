# Source on the GPU machine after staging (see docs/GPU.md): wheels in /tmp/site, GGUFs in /tmp/lw.
export PYTHONPATH=/tmp/site:$PWD LATENTWIRE_CACHE=/tmp/lwcache PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export LW_SOURCE=/tmp/lw/gemma-3-270m-q4_k_m.gguf LW_TARGET=/tmp/lw/SmolLM2-135M-Instruct.Q4_1.gguf
