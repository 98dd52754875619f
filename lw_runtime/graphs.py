"""Inference-time CUDA graphs for a function of tensors (the translator's forward on the sender).

Decisions:
- ``CudaGraphed(fn)`` captures ``fn(*tensors)`` once per input signature (shapes, dtypes, devices)
  and replays it; the inputs are copied into static buffers first. A small launch-bound network
  (the translator: a few dozen kernels, ~10 ms eager for Mistral-7B -> Llama-3.1-8B shapes) then
  costs one launch. ``torch.cuda.make_graphed_callables`` exists but targets training (it graphs
  the backward too and wants requires_grad inputs); this is the inference half, in ~50 lines.
- Outputs are the graph's static buffers, cloned on return by default (``clone_outputs=False``
  skips the copy when the caller consumes them before the next call).
- One warm-up call on a side stream before capture (``capture``: cuBLAS workspaces, Triton JIT, the allocator);
  ``fn`` must be free of host reads and data-dependent shapes, like any captured code.
- On CPU, or with ``enabled=False``, it just calls ``fn``: the same code runs on both stacks.
- ``capture`` (warm up on a side stream, put back the state the warm-up advanced, record) and
  ``lru_entry`` are shared with the static runtime's decode and prefill graphs.
- An LRU of ``max_graphs`` signatures bounds the memory held by captured graphs. Each graph has its
  own memory pool: a pool handle shared across captures breaks the caching allocator once every
  graph of the pool was dropped and another capture reuses the handle (an INTERNAL ASSERT in
  CUDACachingAllocator.cpp, seen on the H100 with torch 2.11 when a benchmark cleared its runtimes).
"""

from __future__ import annotations

from collections import OrderedDict

import torch


def capture(fn, *, warmups: int = 1, restore: tuple = ()):
    """Record ``fn()`` into a CUDA graph; returns (graph, fn's output inside the graph's memory).

    ``warmups`` eager calls run first on a side stream (cuBLAS workspaces, Triton JIT, torch.compile,
    the allocator); the tensors in ``restore`` are put back afterwards as they were before them, for
    state the warm-up advances that the recorded call must find unchanged. All under inference_mode."""
    with torch.inference_mode():
        saved = [t.clone() for t in restore]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(warmups):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    with torch.inference_mode():
        for dst, src in zip(restore, saved):
            dst.copy_(src)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        out = fn()
    return graph, out


def lru_entry(table: OrderedDict, key, limit: int, make):
    """``table[key]``, made with ``make()`` when missing, as the most recent entry; the oldest entries
    are dropped so that at most ``limit`` remain."""
    entry = table.pop(key, None)
    if entry is None:
        while len(table) >= limit:
            table.popitem(last=False)
        entry = make()
    table[key] = entry
    return entry


class CudaGraphed:
    def __init__(self, fn, *, enabled: bool | None = None, max_graphs: int = 4, clone_outputs: bool = True):
        self.fn, self.max_graphs, self.clone_outputs = fn, max_graphs, clone_outputs
        self.enabled = torch.cuda.is_available() if enabled is None else enabled
        self._graphs: OrderedDict = OrderedDict()

    @staticmethod
    def _key(args) -> tuple:
        if not all(torch.is_tensor(a) for a in args):
            raise TypeError("CudaGraphed takes tensors only (capture fixes every other argument)")
        return tuple((tuple(a.shape), a.dtype, a.device) for a in args)

    def __call__(self, *args):
        key = self._key(args)
        if not self.enabled or any(a.device.type != "cuda" for a in args):
            with torch.inference_mode():
                return self.fn(*args)
        graph, static_in, static_out = lru_entry(self._graphs, key, self.max_graphs, lambda: self._capture(args))
        with torch.inference_mode():  # the static buffers are inference tensors, whatever mode the caller is in
            for buf, a in zip(static_in, args):
                buf.copy_(a)
            graph.replay()
        if not self.clone_outputs:
            return static_out
        # cloned in the caller's mode: outside inference mode the copies are ordinary tensors
        return tuple(o.clone() for o in static_out) if isinstance(static_out, tuple) else static_out.clone()

    def _capture(self, args):
        with torch.inference_mode():
            static_in = [a.clone() for a in args]
        graph, static_out = capture(lambda: self.fn(*static_in))
        if isinstance(static_out, list):
            static_out = tuple(static_out)
        return graph, static_in, static_out

    def clear(self) -> None:
        """Drop every captured graph (e.g. after the wrapped module's weights changed place)."""
        self._graphs.clear()
