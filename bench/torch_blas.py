"""Which BLAS the PyTorch peer of the benches runs, and how fast: checked before torch is timed.

Prints one JSON line: {"torch", "blas_libraries" (BLAS/MKL files mapped into this process),
"openblas_core" (OpenBLAS's core type, null without OpenBLAS), "threads", "gemm_gflops" (fp32
[1024 x 768] @ [768 x 3072], best of --reps after a warm-up)}.
  python3 bench/torch_blas.py [--threads N] [--reps 3]
"""
import argparse
import ctypes
import json
import math
import os
import time

import torch


def mapped_blas_libraries():
    """The BLAS and MKL shared objects this process has mapped (torch loads its BLAS on import)."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if len(line.split()) >= 6}
    return sorted(p for p in paths if "blas" in os.path.basename(p) or "mkl" in os.path.basename(p))


def openblas_core(libraries):
    """OpenBLAS's own name of the kernels it chose (e.g. SkylakeX, Haswell, Prescott)."""
    for path in libraries:
        try:
            corename = getattr(ctypes.CDLL(path), "openblas_get_corename", None)
        except OSError:
            continue
        if corename is not None:
            corename.restype = ctypes.c_char_p
            return corename().decode()
    return None


def gemm_gflops(reps):
    m, k, n = 1024, 768, 3072
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gflops = gemm_gflops(args.reps)
    libraries = mapped_blas_libraries()
    print(json.dumps({"torch": torch.__version__, "blas_libraries": libraries, "openblas_core": openblas_core(libraries), "threads": args.threads, "gemm_gflops": gflops}), flush=True)


if __name__ == "__main__":
    main()
