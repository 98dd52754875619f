"""One timing rule for the standalone GPU scripts (gpu_kernels.py, gpu_translator.py).

Decisions: on the GPU, triton.testing's medians (do_bench flushes L2 before each rep; do_bench_cudagraph
removes launch overhead); in a CPU smoke run (interpreter, tiny sizes) one wall-clock call after a
warm-up, since those numbers only show the script runs. Triton is imported only when a GPU timing runs.
"""

from __future__ import annotations

import time


def median_ms(fn, smoke: bool, warmup: int, rep: int, graph: bool = False) -> float:
    """Milliseconds per call of ``fn`` (called once first, to compile and warm up)."""
    fn()
    if smoke:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    import torch
    from triton.testing import do_bench, do_bench_cudagraph

    torch.cuda.synchronize()
    if graph:
        return do_bench_cudagraph(fn, rep=rep, return_mode="median")
    return do_bench(fn, warmup=warmup, rep=rep, return_mode="median")
