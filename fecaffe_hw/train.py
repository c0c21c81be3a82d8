"""``fecaffe-hw run``: train a network as its solver prototxt says."""

import contextlib
import json
import logging
import sys
import time

__all__ = ["run_training"]


def run_training(args):
    from .reference import caffe_log
    from .reference.solver import SGDSolver

    if args.max_iter is not None and args.max_iter < 0:
        raise ValueError(f"--max-iter must be non-negative, not {args.max_iter}")
    logger = logging.getLogger("fecaffe_hw")
    handler = None if args.quiet else caffe_log.install(logger, stream=sys.stderr)
    try:
        solver = SGDSolver(args.solver, log=logging.getLogger("fecaffe_hw.solver"))
        param = solver.param
        if args.max_iter is not None:
            param.max_iter = args.max_iter
        if args.weights:
            solver.net.copy_from(args.weights)
        if args.resume:
            solver.restore(args.resume)
        start_iter = solver.iter
        total = max(param.max_iter - start_iter, 0)
        with _progress(total, enabled=not args.quiet and sys.stderr.isatty()) as bar:
            if bar is not None:
                solver.on_iteration = lambda s: (bar.update(1), bar.set_postfix(
                    loss=f"{s.smoothed_loss:.4f}" if s.smoothed_loss is not None else "-"))
            started = time.perf_counter()
            solver.solve()
            wall = time.perf_counter() - started
    finally:
        if handler is not None:
            logger.removeHandler(handler)

    scores = solver.test_scores[0] if solver.test_scores else {}
    if args.json:
        print(json.dumps({
            "board": args.board,
            "iterations": solver.iter,
            "final_loss": _number(solver.smoothed_loss),
            "test_accuracy": _number(scores.get("accuracy")),
            "test_scores": {k: _number(v) for k, v in scores.items()},
            "wall_s": round(wall, 3),
        }))
    return 0


def _number(value):
    return None if value is None else float(value)


@contextlib.contextmanager
def _progress(total, *, enabled):
    if not enabled:
        yield None
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm
    with tqdm(total=total, unit="iter", dynamic_ncols=True, leave=False) as bar, \
            logging_redirect_tqdm(loggers=[logging.getLogger("fecaffe_hw")]):
        yield bar
