"""Inference-time CUDA graphs for a function of tensors (the translator's forward on the sender).

Decisions:
- ``CudaGraphed(fn)`` captures ``fn(*tensors)`` once per input signature (shapes, dtypes, devices)
  and replays it; the inputs are copied into static buffers first. A small launch-bound network
  (the translator: a few dozen kernels, ~10 ms eager for Mistral-7B -> Llama-3.1-8B shapes) then
  costs one launch. ``torch.cuda.make_graphed_callables`` exists but targets training (it graphs
  the backward too and wants requires_grad inputs); this is the inference half, in ~50 lines.
- Outputs are the graph's static buffers, cloned on return by default (``clone_outputs=False``
  skips the copy when the caller consumes them before the next call).
- One warm-up call on a side stream before capture (cuBLAS workspaces, Triton JIT, the allocator);
  ``fn`` must be free of host reads and data-dependent shapes, like any captured code.
- On CPU, or with ``enabled=False``, it just calls ``fn``: the same code runs on both stacks.
- An LRU of ``max_graphs`` signatures bounds the memory held by captured graphs. Each graph has its
  own memory pool: a pool handle shared across captures breaks the caching allocator once every
  graph of the pool was dropped and another capture reuses the handle (an INTERNAL ASSERT in
  CUDACachingAllocator.cpp, seen on the H100 with torch 2.11 when a benchmark cleared its runtimes).
"""

from __future__ import annotations

from collections import OrderedDict

import torch


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
        entry = self._graphs.pop(key, None)
        if entry is None:
            while len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)
            entry = self._capture(args)
        self._graphs[key] = entry
        graph, static_in, static_out = entry
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
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(stream):
            self.fn(*static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self.fn(*static_in)
        if isinstance(static_out, list):
            static_out = tuple(static_out)
        return graph, static_in, static_out

    def clear(self) -> None:
        """Drop every captured graph (e.g. after the wrapped module's weights changed place)."""
        self._graphs.clear()
