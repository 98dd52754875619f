"""Compile time of the frozen target's forward + backward (what the captured training step compiles
for it), with and without ``--compile-regions`` (``train.captured.block_regions``: one block compiled
and stamped out for every block).

Usage: python benchmarks/compile_time.py [--target embedded:smollm2-135m-instruct | random:SHAPE] [--device cpu]
                                         [--batch 4 --length 40] [--out results/train/compile_time.json]

Each variant runs in its own process with its own empty inductor (and Triton) cache folder, so every
compile is cold and no variant reuses another's kernels, ``torch.compile(dynamic=False)`` as the captured
step (inductor; on CUDA also ``mode="reduce-overhead"``). Reported per variant: the first call's seconds
(compile + one run), the median of three later calls, and the loss against an eager call on the same
inputs (a variant whose loss is off by more than 1e-4 relative, 2e-2 in bf16, is reported as an error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one(variant: str, target_name: str, device: str, batch: int, length: int) -> dict:
    import torch
    import torch.nn.functional as F

    from lw_runtime.models import load_model
    from train.captured import block_regions

    torch._inductor.config.fx_graph_cache = False
    torch._functorch.config.enable_autograd_cache = False
    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    if target_name.startswith("random:"):  # a published shape with random weights (train.random_models): no files
        from train.random_models import build_random

        target = build_random(target_name.split(":", 1)[1], device=device, dtype=dtype)
    else:
        target = load_model(target_name, dtype=dtype, device=device)
    model = target.model
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator(device="cpu").manual_seed(0)
    embeds = torch.randn(batch, length, model.config.hidden_size, generator=gen).to(device=device, dtype=model.dtype)
    labels = torch.randint(0, model.config.vocab_size, (batch * 4,), generator=gen).to(device)

    def step(x):
        hidden = model.base_model(inputs_embeds=x, use_cache=False).last_hidden_state
        return F.cross_entropy(model.get_output_embeddings()(hidden[:, -4:]).float().flatten(0, 1), labels)

    def timed(fn) -> tuple[float, float]:
        x = embeds.clone().requires_grad_()
        if device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = fn(x)
        loss.backward()
        if device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - t, float(loss.detach())

    options = {"mode": "reduce-overhead"} if device != "cpu" else {}
    with block_regions(target) if variant == "regions" else contextlib.nullcontext():
        fn = torch.compile(step, dynamic=False, **options)
        first, loss = timed(fn)
        later = [timed(fn)[0] for _ in range(3)]
    eager = float(step(embeds))
    tol = 1e-4 if dtype == torch.float32 else 2e-2  # bf16: compiled and eager kernels round differently
    if abs(loss - eager) > tol * abs(eager):
        raise AssertionError(f"{variant}: compiled loss {loss} != eager {eager} (relative tolerance {tol})")
    return {"variant": variant, "first_call_s": round(first, 2), "later_call_s_median": round(statistics.median(later), 4),
            "loss": loss, "eager_loss": eager, "blocks": len(model.base_model.layers)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="embedded:smollm2-135m-instruct")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=40)
    p.add_argument("--out", default="")
    p.add_argument("--variant", default="", help=argparse.SUPPRESS)  # internal: one variant in this process
    args = p.parse_args(argv)
    if args.variant:
        print("RESULT " + json.dumps(one(args.variant, args.target, args.device, args.batch, args.length)))
        return 0
    rows = []
    for variant in ("plain", "regions"):
        cache = tempfile.mkdtemp(prefix=f"compile_time_{variant}_")  # cold: nothing compiled before
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": os.path.join(cache, "triton")}
        run = subprocess.run([sys.executable, __file__, "--variant", variant, "--target", args.target, "--device", args.device,
                              "--batch", str(args.batch), "--length", str(args.length)],
                             capture_output=True, text=True, env=env)
        shutil.rmtree(cache, ignore_errors=True)
        line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
        rows.append(json.loads(line[7:]) if line else {"variant": variant, "error": run.stderr[-2000:]})
        print(rows[-1], flush=True)
    if args.out:
        from train.provenance import commit

        report = {"command": "python " + " ".join(sys.argv), "commit": commit(),
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": args.device, "rows": rows}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
