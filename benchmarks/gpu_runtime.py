"""One call on a GPU: the receiver runtime (lw_runtime.runtime) against HF generate, and against the roofline.

Usage: python benchmarks/gpu_runtime.py [--quick] [--target NAME_OR_PATH] [--out DIR] [--e2e-only]
       (writes DIR/gpu_runtime.json and DIR/gpu_runtime.md; CPU dry run: --quick --device cpu, tiny sizes)

Measures (each in its own try/except: a failure is recorded in the JSON, the rest still runs):
- copy bandwidth (1 GiB bf16 copy, read + write bytes / median time): the ceiling for the roofline;
- SmolLM2-135M (the real one with --target, else random weights of its shape: hidden 576, 30
  layers, 9 heads / 3 KV heads, MLP 1536, vocab 49152, tied): decode tokens/s at batch 1, 4, 8 for
  HF generate (eager, DynamicCache) and the static runtime (CUDA graph at every batch; CUDA graph
  over torch.compile at batch 1, since each batch size compiles anew; eager at batch 1). Decode rate = batch x (N - 1) / (time(N tokens) - time(1 token)),
  so prefill is excluded on both sides; all runs are greedy with no EOS, N tokens each;
- Llama-3.1-8B shape, random bf16 weights built on the GPU (hidden 4096, 32 layers, 32/8 heads,
  MLP 14336, vocab 128256, llama3 RoPE): decode at batch 1 against the roofline = weight bytes /
  copy bandwidth (all weights, as the issue's anchor counts them; the bytes a step really reads,
  weights without the embedding table plus the KV cache, are reported beside it);
- time to first token (prefill + first greedy token) for 64 soft tokens vs a 150-token text prompt,
  ours and HF's, with the KV-cache bytes each request holds;
- peak memory of each path: torch.cuda.max_memory_allocated (reset before the path) and NVML's
  used-memory reading after it (nvidia-ml-py, when importable);
- a bf16 sanity check: relative RMS between our first-step logits and HF's forward, and how many
  greedy tokens agree before the first divergence;
- end to end (benchmarks/e2e.py; ``--e2e-only`` runs just this, otherwise it runs last), random
  weights, speed only: latent path (source prefill at the translator's layer + translator +
  lw_runtime encode (INT8, INT4) + decode + receiver prefill of soft tokens and prompt + N answer
  tokens) against text relay (the source generates a 64-token message on the static runtime, the
  target reads it with the prompt and answers the same N tokens, no EOS on either path), per stage
  and in total, with the speedup (goal >= 10x), bytes on the wire, KV bytes and peak memory.
  Pairs: Mistral-7B shape -> Llama-3.1-8B shape (high_capacity translator, 64 soft tokens,
  150-token source text) at batch 1 and 8, then SmolLM2-135M shape -> itself (embedded preset,
  16 soft tokens). Past ``--deadline`` only the 8B pair at batch 1 runs. ``--e2e-graphs`` (default)
  runs every prefill and the translator of both paths as CUDA graphs; ``--no-e2e-graphs`` gives
  the eager figures of the earlier runs.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from lw_runtime import kv_cache  # noqa: E402
from lw_runtime.decode_loop import DecodeLoop  # noqa: E402
from benchmarks import e2e  # noqa: E402
from lw_runtime.runtime import StaticRuntime, cache_length  # noqa: E402
from train.provenance import commit  # noqa: E402

T0 = time.time()
RESULTS: dict = {"meta": {}, "measurements": {}, "errors": []}
SMOL = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
            vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0, rms_norm_eps=1e-5)
LLAMA8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rms_norm_eps=1e-5,
               max_position_embeddings=131072,
               rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=256, tie_word_embeddings=True)


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def measure(name, fn, *args, **kwargs):
    """Run one measurement; its dict (or the error) goes into RESULTS["measurements"][name]."""
    log(f"-- {name}")
    try:
        out = fn(*args, **kwargs)
    except Exception as exc:  # recorded, the run goes on
        out = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        RESULTS["errors"].append({"measurement": name, "traceback": traceback.format_exc()[-4000:]})
        log(f"   ERROR {out['error'][:300]}")
    else:
        log("   " + json.dumps(out)[:400])
    RESULTS["measurements"][name] = out
    return out


class Device:
    def __init__(self, name: str):
        self.torch = torch.device(name)
        self.cuda = self.torch.type == "cuda"
        self.nvml = None
        if self.cuda:
            try:
                import pynvml

                pynvml.nvmlInit()
                self.nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device()))
            except Exception as exc:  # optional
                RESULTS["meta"]["nvml"] = f"unavailable: {type(exc).__name__}: {exc}"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def timed(self, fn, reps: int) -> float:
        """Median seconds of ``reps`` calls after one warm-up call."""
        fn()
        self.sync()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    def reset_peak(self):
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats()

    def memory(self) -> dict:
        if not self.cuda:
            return {}
        self.sync()
        out = {"torch_max_allocated_GB": round(torch.cuda.max_memory_allocated() / 1e9, 3),
               "torch_allocated_GB": round(torch.cuda.memory_allocated() / 1e9, 3)}
        if self.nvml is not None:
            pynvml, handle = self.nvml
            out["nvml_used_GB"] = round(pynvml.nvmlDeviceGetMemoryInfo(handle).used / 1e9, 3)
        return out


def copy_bandwidth(dev: Device, quick: bool) -> dict:
    n = (256 if quick else 1024) * 2**20 // 2 if dev.cuda else 2**22
    src = torch.randn(n, device=dev.torch, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    seconds = dev.timed(lambda: dst.copy_(src), 20 if dev.cuda else 5)
    nbytes = 2 * src.numel() * src.element_size()
    return {"bytes_moved": nbytes, "median_ms": round(seconds * 1e3, 4), "GB_per_s": round(nbytes / seconds / 1e9, 1)}


def build_random(shape: dict, dev: Device, dtype) -> LlamaForCausalLM:
    """A random-weight Llama built directly on the device; weights ~ N(0, 0.02), norms 1."""
    cfg = LlamaConfig(**shape)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev.torch):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if p.dim() == 1 else p.normal_(0.0, 0.02)
    return model.to(dtype).eval().requires_grad_(False)


def random_embeds(model, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Soft-token-like inputs: random rows scaled to the embedding table's RMS."""
    g = torch.Generator(device=model.device).manual_seed(seed)
    table = model.get_input_embeddings().weight
    rms = table.float().pow(2).mean().sqrt()
    x = torch.randn(batch, length, table.shape[1], generator=g, device=model.device) * rms
    return x.to(table.dtype)


def text_embeds(model, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device=model.device).manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=g, device=model.device)
    return model.get_input_embeddings()(ids)


def hf_generate(model, embeds, n: int):
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    out = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         pad_token_id=0, eos_token_id=None, temperature=None, top_p=None, top_k=None)
    if out.shape[1] != n:
        raise RuntimeError(f"HF generate made {out.shape[1]} tokens, not {n}: the timing would be wrong")
    return out


def ours_generate(rt: StaticRuntime, embeds, n: int, max_len: int):
    rt.start(embeds.shape[0], max_len)
    rt.prefill_chunk(embeds)
    return DecodeLoop(rt, rt.prefill_logits(), max_new_tokens=n, pad_token_id=0).run()


def decode_rate(dev: Device, gen, batch: int, n: int, reps: int) -> dict:
    """tokens/s of decoding alone: (time of N tokens - time of 1 token) over batch x (N - 1) tokens."""
    dev.reset_peak()
    t_n = dev.timed(lambda: gen(n), reps)
    t_1 = dev.timed(lambda: gen(1), reps)
    per_step = (t_n - t_1) / (n - 1)
    return {"batch": batch, "new_tokens": n, "ms_N_tokens": round(t_n * 1e3, 3), "ms_1_token": round(t_1 * 1e3, 3),
            "ms_per_step": round(per_step * 1e3, 4), "decode_tok_per_s": round(batch / per_step, 1),
            "end_to_end_tok_per_s": round(batch * n / t_n, 1), **dev.memory()}


def weight_bytes(model) -> dict:
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    tied = model.lm_head.weight.data_ptr() == embed.data_ptr()
    read = total - (0 if tied else embed.numel() * embed.element_size())
    return {"all_weights": total, "read_per_step": read}


def kv_bytes_per_token(model) -> int:
    return kv_cache.kv_bytes_per_token(model.config, model.dtype.itemsize)


def parity(dev: Device, model, rt: StaticRuntime, n: int) -> dict:
    embeds = random_embeds(model, 1, 64, seed=3)
    with torch.no_grad():
        want = model(inputs_embeds=embeds).logits[:, -1].float()
    rt.start(1, cache_length(64 + n))
    rt.prefill_chunk(embeds)
    got = rt.prefill_logits()
    rel = ((got - want).double().norm() / want.double().norm()).item()
    ours = ours_generate(rt, embeds, n, cache_length(64 + n))[0].tolist()
    theirs = hf_generate(model, embeds, n)[0].tolist()
    agree = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), len(ours))
    return {"first_logits_rel_rms": rel, "greedy_tokens_agree_before_divergence": agree, "of": n}


def ttft(dev: Device, model, rt: StaticRuntime, reps: int, soft: int = 64, text: int = 150) -> dict:
    out = {}
    bpt = kv_bytes_per_token(model)
    for what, embeds in (("soft", random_embeds(model, 1, soft)), ("text", text_embeds(model, 1, text))):
        length = embeds.shape[1]

        def first_token():
            rt.start(1, cache_length(length + 1))
            rt.prefill_chunk(embeds)
            return rt.prefill_logits().argmax(-1)

        dev.reset_peak()
        ours_ms = dev.timed(first_token, reps) * 1e3
        mem = dev.memory()
        dev.reset_peak()
        hf_ms = dev.timed(lambda: hf_generate(model, embeds, 1), reps) * 1e3
        out[f"{what}_{length}"] = {"ours_ms": round(ours_ms, 3), "hf_ms": round(hf_ms, 3),
                                   "kv_bytes_per_request": length * bpt, "ours_memory": mem, "hf_memory": dev.memory()}
    out["kv_bytes_per_token"] = bpt
    return out


def build_runtime(name: str, model, kw: dict):
    """A StaticRuntime, or None with the error recorded under ``name``."""
    try:
        return StaticRuntime(model, **kw)
    except Exception as exc:
        RESULTS["measurements"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        RESULTS["errors"].append({"measurement": name, "traceback": traceback.format_exc()[-4000:]})
        return None


def first_call(dev: Device, fn) -> dict:
    """Seconds of the first generation on a fresh cache shape: graph capture (and compilation) included."""
    t = time.time()
    fn()
    dev.sync()
    return {"seconds": round(time.time() - t, 2)}


def free(*objs):
    for o in objs:
        del o
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def smol_section(args, dev: Device, dtype, ceiling: dict):
    n = 32 if args.quick else 128
    reps = 1 if args.quick else 3
    batches = [1, 4] if args.quick else [1, 4, 8]
    if args.target:
        from lw_runtime.models import load_model

        model = load_model(args.target, dtype=dtype, device=dev.torch).model
        RESULTS["meta"]["smol_model"] = args.target
    else:
        model = build_random(SMOL if dev.cuda else TINY, dev, dtype)
        RESULTS["meta"]["smol_model"] = "random weights, SmolLM2-135M shape" if dev.cuda else "random tiny (CPU dry run)"
    prompt = 64
    max_len = cache_length(prompt + n)
    for b in batches:
        embeds = random_embeds(model, b, prompt)
        measure(f"smol_hf_generate_b{b}", decode_rate, dev, lambda k, e=embeds: hf_generate(model, e, k), b, n, min(reps, 2))
    variants = [("graph", dict(cuda_graphs=dev.cuda))]
    if args.compile:
        variants.append(("graph_compile", dict(cuda_graphs=dev.cuda, compile=True)))
    for label, kw in variants:
        rt = build_runtime(f"smol_ours_{label}", model, kw)
        if rt is None:
            continue
        for b in batches if label == "graph" else [1]:  # compiling per batch size costs ~a minute each
            if label == "graph_compile" and time.time() - T0 > args.deadline:
                RESULTS["measurements"][f"smol_ours_{label}_b{b}"] = {"skipped": f"past the {args.deadline}s deadline"}
                continue
            embeds = random_embeds(model, b, prompt)
            warm = measure(f"smol_ours_{label}_b{b}_first_call", first_call, dev, lambda e=embeds: ours_generate(rt, e, 2, max_len))
            if "error" in warm:
                continue
            measure(f"smol_ours_{label}_b{b}", decode_rate, dev, lambda k, e=embeds: ours_generate(rt, e, k, max_len), b, n, reps)
        if label == "graph":
            measure("smol_parity_bf16", parity, dev, model, rt, 32 if args.quick else 64)
            measure("smol_ttft", ttft, dev, model, rt, reps if args.quick else 10)
        free(rt)
    if dev.cuda:
        eager = StaticRuntime(model, cuda_graphs=False)
        embeds = random_embeds(model, 1, prompt)
        measure("smol_ours_eager_b1", decode_rate, dev, lambda k: ours_generate(eager, embeds, k, max_len), 1, min(n, 64), reps)
        free(eager)
    hf = RESULTS["measurements"].get("smol_hf_generate_b1", {}).get("decode_tok_per_s")
    for label, _ in variants:
        ours = RESULTS["measurements"].get(f"smol_ours_{label}_b1", {}).get("decode_tok_per_s")
        if hf and ours:
            RESULTS["measurements"][f"smol_speedup_{label}_b1"] = {"x_hf": round(ours / hf, 1), "goal": 20.0, "met": ours / hf >= 20}
    free(model)


def llama8b_section(args, dev: Device, dtype, ceiling: dict):
    n = 32 if args.quick else 128
    reps = 1 if args.quick else 3
    shape = LLAMA8B if dev.cuda else dict(TINY, hidden_size=128, num_attention_heads=8, num_key_value_heads=2,
                                               tie_word_embeddings=False, rope_parameters=LLAMA8B["rope_parameters"],
                                               max_position_embeddings=LLAMA8B["max_position_embeddings"])
    t = time.time()
    model = build_random(shape, dev, dtype)
    wb = weight_bytes(model)
    RESULTS["measurements"]["llama8b_build"] = {"seconds": round(time.time() - t, 1), "weight_bytes": wb}
    prompt = 64
    max_len = cache_length(prompt + n)
    embeds = random_embeds(model, 1, prompt)
    bw = ceiling.get("GB_per_s")
    variants = [("graph", dict(cuda_graphs=dev.cuda))]
    if args.compile:
        variants.append(("graph_compile", dict(cuda_graphs=dev.cuda, compile=True)))
    for label, kw in variants:
        if label == "graph_compile" and time.time() - T0 > args.deadline:
            RESULTS["measurements"][f"llama8b_ours_{label}_b1"] = {"skipped": f"past the {args.deadline}s deadline"}
            continue
        rt = build_runtime(f"llama8b_ours_{label}", model, kw)
        if rt is None:
            continue
        warm = measure(f"llama8b_ours_{label}_b1_first_call", first_call, dev, lambda: ours_generate(rt, embeds, 2, max_len))
        if "error" not in warm:
            res = measure(f"llama8b_ours_{label}_b1", decode_rate, dev, lambda k: ours_generate(rt, embeds, k, max_len), 1, n, reps)
            if bw and "decode_tok_per_s" in res:
                kv_read = max_len * kv_bytes_per_token(model)  # the graphed step reads the whole static cache
                roof = bw * 1e9 / wb["all_weights"]
                strict = bw * 1e9 / (wb["read_per_step"] + kv_read)
                res.update({"roofline_tok_per_s": round(roof, 1), "fraction_of_roofline": round(res["decode_tok_per_s"] / roof, 3),
                            "strict_roofline_tok_per_s": round(strict, 1),
                            "fraction_of_strict_roofline": round(res["decode_tok_per_s"] / strict, 3),
                            "achieved_GB_per_s_all_weights": round(res["decode_tok_per_s"] * wb["all_weights"] / 1e9, 1),
                            "goal_fraction": 0.85, "met": res["decode_tok_per_s"] / roof >= 0.85})
        if label == "graph":
            measure("llama8b_parity_bf16", parity, dev, model, rt, 16 if args.quick else 32)
            measure("llama8b_ttft", ttft, dev, model, rt, 3 if args.quick else 10)
        free(rt)
    measure("llama8b_hf_generate_b1", decode_rate, dev, lambda k: hf_generate(model, embeds, k), 1, 16 if args.quick else 32, 1)
    free(model)


def e2e_section(args, dev: Device, dtype):
    """End to end per request: latent path vs text relay (benchmarks/e2e.py). Random weights: speed only."""
    RESULTS["meta"]["e2e_weights"] = e2e.NOTE
    n = args.e2e_answer_tokens if dev.cuda else min(args.e2e_answer_tokens, 8)
    msg = args.e2e_message_tokens if dev.cuda else min(args.e2e_message_tokens, 16)
    src_len = 150 if dev.cuda else 40
    reps = 1 if args.quick else 5
    for kind in (["8b", "smol"] if dev.cuda else ["8b"]):  # on CPU both pairs shrink to the same tiny one
        past = time.time() - T0 > args.deadline
        if kind != "8b" and past:
            RESULTS["measurements"][f"e2e_{kind}"] = {"skipped": f"past the {args.deadline}s deadline"}
            continue
        try:
            pair = e2e.build_pair(kind, dev, dtype, graphs=args.e2e_graphs)
        except Exception as exc:
            RESULTS["measurements"][f"e2e_{kind}_build"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            RESULTS["errors"].append({"measurement": f"e2e_{kind}_build", "traceback": traceback.format_exc()[-4000:]})
            continue
        RESULTS["measurements"][f"e2e_{kind}_pair"] = pair.notes
        log(f"   e2e pair {pair.label}: {json.dumps(pair.notes)[:300]}")
        measure(f"e2e_{kind}_b1_first_call", e2e.first_calls, dev, pair, 1, src_len, msg, n)
        measure(f"e2e_{kind}_b1", e2e.end_to_end, dev, pair, 1, src_len, msg, n, reps)
        if kind == "8b":
            if time.time() - T0 > args.deadline:
                RESULTS["measurements"][f"e2e_{kind}_b8"] = {"skipped": f"past the {args.deadline}s deadline"}
            else:
                measure(f"e2e_{kind}_b8", e2e.end_to_end, dev, pair, 8, src_len, msg, n, max(reps - 2, 1), (8,))
        pair = None
        free()


def write(out_dir: str):
    os.makedirs(out_dir, exist_ok=True)
    RESULTS["meta"]["total_seconds"] = round(time.time() - T0, 1)
    with open(os.path.join(out_dir, "gpu_runtime.json"), "w") as fh:
        json.dump(RESULTS, fh, indent=2, default=str)
    meta, m = RESULTS["meta"], RESULTS["measurements"]
    lines = [f"# Receiver runtime on {meta['device']}", "",
             f"commit {meta['commit']}, {meta['date']}, torch {meta['torch']}, transformers {meta['transformers']}, "
             f"dtype {meta['dtype']}, {meta['total_seconds']} s", "", f"`{meta['command']}`", "",
             "Decode rate = batch x (N-1) / (t(N tokens) - t(1 token)): prefill excluded on both sides.", "",
             "| measurement | result |", "| --- | --- |"]
    for name, value in m.items():
        if isinstance(value, dict):
            text = ", ".join(f"{k}={v}" for k, v in value.items() if not isinstance(v, dict))
            nested = "; ".join(f"{k}: " + ", ".join(f"{kk}={vv}" for kk, vv in v.items() if not isinstance(vv, dict))
                               for k, v in value.items() if isinstance(v, dict))
            text = "; ".join(t for t in (text, nested) if t)
        else:
            text = str(value)
        lines.append(f"| {name} | {text.replace('|', '/')} |")
    if RESULTS["errors"]:
        lines += ["", f"{len(RESULTS['errors'])} measurement(s) failed; tracebacks in gpu_runtime.json."]
    with open(os.path.join(out_dir, "gpu_runtime.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    log(f"wrote {out_dir}/gpu_runtime.json and .md")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/runtime")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--target", default=None, help="a real SmolLM2-135M (name or path for lw_runtime.load_model) instead of random weights")
    ap.add_argument("--quick", action="store_true", help="fewer tokens, repetitions and batch sizes")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also measure torch.compile'd decode steps (default: on for CUDA)")
    ap.add_argument("--deadline", type=float, default=360.0, help="skip compile variants started after this many seconds")
    ap.add_argument("--skip-8b", action="store_true")
    ap.add_argument("--e2e-only", action="store_true", help="run only the end-to-end section (latent path vs text relay)")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--e2e-answer-tokens", type=int, default=16, help="answer tokens generated on both paths (no EOS)")
    ap.add_argument("--e2e-message-tokens", type=int, default=64, help="tokens of the relay message the source generates")
    ap.add_argument("--e2e-graphs", action=argparse.BooleanOptionalAction, default=True,
                    help="end to end with every prefill and the translator as CUDA graphs (both paths; CUDA only)")
    args = ap.parse_args()
    dev = Device(args.device)
    if dev.cuda and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu --quick for a dry run")
    args.compile = dev.cuda if args.compile is None else args.compile
    dtype = torch.bfloat16 if dev.cuda else torch.float32
    import transformers

    RESULTS["meta"].update({
        "device": torch.cuda.get_device_name() if dev.cuda else f"CPU ({platform.processor() or platform.machine()}), dry run",
        "torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "commit": commit(), "dtype": str(dtype).replace("torch.", ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv), "quick": args.quick, "compile": args.compile,
        "e2e_only": args.e2e_only, "e2e_graphs": args.e2e_graphs and dev.cuda,
    })
    torch.manual_seed(0)
    try:
        if not args.e2e_only:
            ceiling = measure("copy_bandwidth", copy_bandwidth, dev, args.quick)
            measure("smollm2_section", lambda: (smol_section(args, dev, dtype, ceiling), {"done": True})[1])
            if not args.skip_8b:
                measure("llama8b_section", lambda: (llama8b_section(args, dev, dtype, ceiling), {"done": True})[1])
        if args.e2e_only or not args.skip_e2e:
            measure("e2e_section", lambda: (e2e_section(args, dev, dtype), {"done": True})[1])
    finally:
        write(args.out)


if __name__ == "__main__":
    main()
