"""Training speed of the float reference on LeNet (the --board cpu baseline).

Prints milliseconds per iteration (forward + backward + SGD update, batch 64)
for BLAS limited to one thread and for BLAS's default thread count, measured
in one run, and their ratio. Needs the MNIST LMDBs (`fecaffe-hw data mnist`)
in the working directory, or prepares them in a temporary directory.

    python benchmarks/train_speed.py [--iters 50] [--json]
"""

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

from threadpoolctl import threadpool_info, threadpool_limits

ROOT = pathlib.Path(__file__).resolve().parent.parent


def measure(solver, iters):
    solver.step(2)                      # warm up caches and allocations
    started = time.perf_counter()
    solver.step(iters)
    return (time.perf_counter() - started) / iters


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from fecaffe_hw.caffe import read_solver
    from fecaffe_hw.data.mnist import prepare_mnist
    from fecaffe_hw.reference.solver import SGDSolver

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="fecaffe-bench-"))
    try:
        shutil.copytree(ROOT / "nets", workdir / "nets")
        prepare_mnist(workdir / "data" / "mnist")
        os.chdir(workdir)
        param = read_solver("nets/lenet_solver.prototxt")
        param.test_interval = 10**9     # time training only
        param.snapshot = 0
        param.snapshot_after_train = False
        solver = SGDSolver(param)
        threads = max((p["num_threads"] for p in threadpool_info()), default=1)
        with threadpool_limits(limits=1):
            one = measure(solver, args.iters)
        default = measure(solver, args.iters)
    finally:
        os.chdir(ROOT)
        shutil.rmtree(workdir, ignore_errors=True)

    result = {"ms_per_iter_1_thread": round(one * 1e3, 2),
              f"ms_per_iter_{threads}_threads": round(default * 1e3, 2),
              "ratio_default_over_1": round(default / one, 3),
              "iters": args.iters,
              "projected_2000_iters_s_1_thread": round(one * 2000, 1)}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:34s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
