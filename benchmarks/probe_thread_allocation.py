"""Throughput of numpy operations on two threads, with and without fresh output arrays.

A diagnostic for the ``n_jobs=2`` speed-up of the iterative fits (see the
section "n_jobs=2 against n_jobs=1" of benchmarks/README.md): each
operation of one block of ``SharedObjectiveRegressor``'s long-layout network
(``(n_components, n_rows)`` arrays of about 2 MB, and smaller 1-D ones)
runs ``--repeats`` times on one thread, then the same count on each of two
threads at once; the ratio
is the throughput of two threads over one (2.0 = perfect). Each operation
runs twice: allocating its result, as numpy does by default, and writing
into an output array that the thread keeps (``out=``).

    python benchmarks/probe_thread_allocation.py --output probe.json
"""

import argparse
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

# One block of the network at 1,000 tasks x 4,000 rows x 20 features:
# 4 MB of the transposed design (21 rows) is 25,000 columns; 10 components.
P, K, N = 21, 10, 25_000


def operations(rng):
    XT = rng.normal(size=(P, N))
    first = rng.normal(size=(P, K))
    H = rng.normal(size=(K, N))
    y = rng.normal(size=N)
    small = rng.normal(size=2_000)
    local = threading.local()

    def buffer(shape=(K, N)):
        # Per thread and shape, as a workspace would be.
        if shape not in local.__dict__:
            local.__dict__[shape] = np.empty(shape)
        return local.__dict__[shape]

    return {
        "elementwise (n,) * (n,), 195 kB": (
            lambda: y * y, lambda: np.multiply(y, y, out=buffer((N,)))),
        "elementwise (2000,) * (2000,), 16 kB": (
            lambda: small * small, lambda: np.multiply(small, small, out=buffer((2_000,)))),
        "forward product (k, p) @ (p, n)": (
            lambda: first.T @ XT, lambda: np.matmul(first.T, XT, out=buffer())),
        "elementwise (k, n) * (n,)": (
            lambda: H * y, lambda: np.multiply(H, y, out=buffer())),
        "ReLU (k, n)": (
            lambda: np.maximum(H, 0.0), lambda: np.maximum(H, 0.0, out=buffer())),
    }


def throughput(func, repeats, executor):
    func()
    tic = time.perf_counter()
    for _ in range(repeats):
        func()
    one = (time.perf_counter() - tic) / repeats
    tic = time.perf_counter()
    jobs = [executor.submit(lambda: [func() for _ in range(repeats)]) for _ in range(2)]
    for job in jobs:
        job.result()
    two = (time.perf_counter() - tic) / repeats
    return {"one_thread_s": one, "two_threads_s": two, "throughput_ratio": 2 * one / two}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    results = {"shape": {"p": P, "k": K, "n": N}, "load_before": os.getloadavg(),
               "blas_threads": 1, "operations": {}}
    with threadpool_limits(1), ThreadPoolExecutor(2) as executor:
        for name, (fresh, kept) in operations(np.random.default_rng(0)).items():
            res = {"fresh output": throughput(fresh, args.repeats, executor),
                   "kept output (out=)": throughput(kept, args.repeats, executor)}
            results["operations"][name] = res
            print(f"{name:34s} " + ", ".join(
                f"{kind}: {r['one_thread_s'] * 1e6:.0f} us, two threads {r['throughput_ratio']:.2f}x"
                for kind, r in res.items()), flush=True)
    results["load_after"] = os.getloadavg()
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
