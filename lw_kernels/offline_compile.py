"""Compile every lw_kernels Triton kernel for a GPU target on a machine without a GPU.

Why: CI has no GPU, and Triton's interpreter (TRITON_INTERPRET=1) runs kernels as numpy, so it
never checks what only the compiler checks. A helper with two ``return`` statements of different
shapes passed every interpreter test and then failed to compile on the H100
("Inconsistent return types"). Triton's own compiler (with the ptxas its wheel ships) runs on a
CPU-only machine; this module drives it.

How: every ``*_kernel`` JITFunction in the kernel modules gets its launch replaced by a recorder;
the public ops then run (forward and backward) over the configurations they support, on CPU tensors
with ``LW_FORCE_TRITON=1``, so the real launch code computes the real arguments, strides, block
sizes and constexprs; nothing executes (outputs are garbage and are discarded). Each distinct
(kernel, signature, constexprs) is then compiled with ``triton.compile`` for ``GPUTarget("cuda",
90, 32)`` (H100) down to a cubin. Integer arguments are compiled unspecialised (Triton would also
build variants for 1 and multiples of 16; those differ only in alignment hints).

Usage: ``python -m lw_kernels.offline_compile`` (exit 1 and the compiler's message on a failure).
Must run in a process where TRITON_INTERPRET is unset before triton is imported.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

ARCH = 90
_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "uint8": "u8", "int8": "i8",
           "int16": "i16", "int32": "i32", "int64": "i64", "bool": "i1"}


def _signature(kernel, args, kwargs):
    import torch

    values = dict(zip(kernel.arg_names, args))
    options = {}
    for key, value in kwargs.items():
        if key in kernel.arg_names:
            values[key] = value
        else:
            options[key] = value  # num_warps, num_stages, ...
    signature, constexprs = {}, {}
    for param in kernel.params:
        value = values[param.name]
        if param.is_constexpr or value is None:
            signature[param.name], constexprs[param.name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[param.name] = "*" + _DTYPES[str(value.dtype).removeprefix("torch.")]
        elif isinstance(value, bool):
            signature[param.name] = "i1"
        elif isinstance(value, int):
            signature[param.name] = "i32" if -(2**31) <= value < 2**31 else "i64"
        elif isinstance(value, float):
            signature[param.name] = "fp32"
        else:
            raise TypeError(f"{kernel.__name__}: argument {param.name} of type {type(value).__name__}")
    return signature, constexprs, options


@contextmanager
def recorded_launches(modules=None):
    """Within the block, launches of the ``*_kernel`` functions of ``modules`` (default: lw_kernels'
    kernel modules) are recorded as (kernel, args, kwargs), not run."""
    import triton

    if modules is None:
        from . import cross_attention, quant, rms_layernorm

        modules = (cross_attention, quant, rms_layernorm)
    launches, patched = [], []
    for module in modules:
        for name in dir(module):
            kernel = getattr(module, name)
            if name.endswith("_kernel") and isinstance(kernel, triton.runtime.jit.JITFunction):
                def record(*args, grid=None, warmup=False, _kernel=kernel, **kwargs):
                    launches.append((_kernel, args, kwargs))

                kernel.run = record
                patched.append(kernel)
    try:
        yield launches
    finally:
        for kernel in patched:
            del kernel.run  # back to the class's method


def exercise_ops() -> None:
    """Call every public op on the Triton path over the dtypes and options the ops support."""
    import torch

    import lw_kernels as K

    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        # few queries (block sizes differ: the shape that exposed the two-return helper) and 64 queries
        for (lq, lk), masked in ((shape, m) for shape in ((5, 37), (64, 300)) for m in (True, False)):
            q = torch.randn(2, 2, lq, 64, dtype=dtype, requires_grad=True)
            k = torch.randn(2, 2, lk, 64, dtype=dtype, requires_grad=True)
            v = torch.randn(2, 2, lk, 64, dtype=dtype, requires_grad=True)
            gate = torch.zeros((), dtype=dtype, requires_grad=True)
            residual = torch.randn(2, lq, 128, dtype=dtype, requires_grad=True)
            mask = torch.ones(2, lk, dtype=torch.bool) if masked else None
            K.gated_cross_attention(q, k, v, mask, gate, residual).sum().backward()
        for affine in (True, False):
            x = torch.randn(3, 576, dtype=dtype, requires_grad=True)
            w = torch.randn(576, dtype=dtype, requires_grad=True) if affine else None
            b = torch.randn(576, dtype=dtype, requires_grad=True) if affine else None
            K.rms_matched_layer_norm(x, w, b, target_rms=0.5).sum().backward()
        for bits in K.SUPPORTED_BITS:
            x = torch.randn(3, 4096, dtype=dtype)
            packed, scales = K.quantize(x, bits)
            K.dequantize(packed, scales, bits, dim=4096, dtype=dtype)
            K.dequantize_rms_match(packed, scales, bits, target_rms=0.5, dim=4096, dtype=dtype)
            K.fake_quant(x.requires_grad_(), bits).sum().backward()


def compile_all(arch: int = ARCH, log=print, modules=None, exercise=None) -> list[str]:
    """Record every launch of ``exercise`` (default ``exercise_ops``) of the kernels in ``modules``
    (default lw_kernels') and compile each distinct one; returns the failures."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("offline compilation needs TRITON_INTERPRET unset before triton is imported")
    os.environ["LW_FORCE_TRITON"] = "1"
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    with recorded_launches(modules) as launches:
        (exercise or exercise_ops)()
    seen, failures = set(), []
    for kernel, args, kwargs in launches:
        signature, constexprs, options = _signature(kernel, args, kwargs)
        key = (kernel.__name__, tuple(signature.items()), tuple((k, repr(v)) for k, v in constexprs.items()),
               tuple(sorted(options.items())))
        if key in seen:
            continue
        seen.add(key)
        label = f"{kernel.__name__} {', '.join(f'{k}={v}' for k, v in constexprs.items())}"
        try:
            triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", arch, 32), options=options)
            log(f"ok   {label}")
        except Exception as error:  # the compiler's own message is the point
            cause = f" (cause: {error.__cause__!r})" if error.__cause__ is not None else ""
            failures.append(f"{label}: {type(error).__name__}: {error}{cause}")
            log(f"FAIL {label}: {error}{cause}")
    if not seen:
        failures.append("no kernel launch was recorded")
    log(f"{len(seen)} distinct launches compiled for sm_{arch}, {len(failures)} failed")
    return failures


if __name__ == "__main__":
    sys.exit(1 if compile_all() else 0)
