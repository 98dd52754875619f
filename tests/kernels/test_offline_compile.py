"""Every Triton kernel compiles for the H100 (sm_90), checked on a CPU-only machine.

The interpreter tests run kernels as numpy and miss what only the compiler checks (a helper with
two differently shaped returns passed them all and failed on the GPU). lw_kernels.offline_compile
records each launch the public ops make and compiles it with Triton's compiler and bundled ptxas.
Subprocesses: the kernel tests' conftest sets TRITON_INTERPRET for this process.
"""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")


def _run(code_or_module, tmp_path=None):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton_cache") if tmp_path else env.get("TRITON_CACHE_DIR", "")
    if not env["TRITON_CACHE_DIR"]:
        env.pop("TRITON_CACHE_DIR")
    cmd = [sys.executable, "-m", code_or_module] if "\n" not in code_or_module else [sys.executable, "-c", code_or_module]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def test_every_kernel_launch_compiles_for_sm90(tmp_path):
    done = _run("lw_kernels.offline_compile", tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    last = done.stdout.strip().splitlines()[-1]
    count = int(last.split()[0])
    assert count >= 40 and last.endswith(", 0 failed"), last
    for kernel in ("_xattn_fwd_kernel", "_xattn_bwd_dq_kernel", "_xattn_bwd_dkdv_kernel", "_rms_ln_fwd_kernel",
                   "_rms_ln_bwd_kernel", "_quantize_kernel", "_dequantize_kernel", "_dequantize_rms_match_kernel"):
        assert f"ok   {kernel}" in done.stdout


def test_the_check_fails_on_a_kernel_only_the_compiler_rejects(tmp_path):
    """The bug the interpreter missed: a jit helper whose two returns have different shapes."""
    module = tmp_path / "broken_kernel.py"
    module.write_text(textwrap.dedent('''
        import triton
        import triton.language as tl

        @triton.jit
        def _load(ptr, TRANS: tl.constexpr):
            r = tl.arange(0, 16)
            c = tl.arange(0, 64)
            if TRANS:
                return tl.load(ptr + r[None, :] + c[:, None])
            return tl.load(ptr + r[:, None] + c[None, :])

        @triton.jit
        def broken_kernel(x_ptr, out_ptr, n, TRANS: tl.constexpr):
            t = _load(x_ptr, TRANS)
            tl.store(out_ptr + tl.arange(0, 16), tl.sum(t, axis=0) if TRANS else tl.sum(t, axis=1))

        def launch():
            import torch
            x = torch.zeros(2048)
            broken_kernel[(1,)](x, x, 16, TRANS=False, num_warps=4)  # compiles: one return is seen
            broken_kernel[(1,)](x, x, 16, TRANS=True, num_warps=4)   # does not
    '''))
    done = _run(textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import broken_kernel
        from lw_kernels.offline_compile import compile_all
        failures = compile_all(modules=(broken_kernel,), exercise=broken_kernel.launch)
        print("FAILURES", len(failures), failures)
    '''), tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "ok   broken_kernel TRANS=False" in done.stdout, done.stdout[-2000:]
    assert "FAILURES 1" in done.stdout and "Inconsistent return types" in done.stdout, done.stdout[-2000:]
