"""SGDSolver against Caffe's formulas: learning rates, the update, iter_size,
snapshots and the log lines Caffe's parse_log.py reads."""

import datetime
import io
import logging
import math
import pathlib
import re

import numpy as np
import pytest

from fecaffe_hw import TEST, SGDSolver
from fecaffe_hw.caffe import caffe_pb2, prototxt
from fecaffe_hw.errors import SolverError
from fecaffe_hw.reference.caffe_log import GlogFormatter
from fecaffe_hw.reference.lr_policy import learning_rate


def net_text(batch, extra_param=""):
    return f"""
name: "tiny"
layer {{ name: "in" type: "Input" top: "data" top: "label"
        input_param {{ shape {{ dim: {batch} dim: 6 }} shape {{ dim: {batch} }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" {extra_param}
        inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.3 }}
                               bias_filler {{ type: "uniform" min: -0.2 max: 0.2 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include {{ phase: TEST }} }}
"""


def solver_param(batch=4, extra_param="", **fields):
    settings = dict(base_lr=0.1, lr_policy='"fixed"', momentum=0.9, weight_decay=0.01,
                    max_iter=10, display=0, random_seed=3, snapshot_after_train="false")
    settings.update(fields)
    lines = [f"{k}: {v}" for k, v in settings.items() if k != "stepvalue"]
    lines += [f"stepvalue: {v}" for v in settings.get("stepvalue", ())]
    text = "net_param {" + net_text(batch, extra_param) + "}\n" + "\n".join(lines)
    return prototxt.parse_solver(text)


class Bank:
    """Deterministic batches: the train net gets batch ``solver.iter`` (one per
    forward with ``iter_size``), the test net cycles through its own batches."""

    def __init__(self, batch, seed=0, chunks=1):
        self.batch, self.chunks = batch, chunks
        g = np.random.default_rng(seed)
        self.x = g.standard_normal((64, batch * chunks, 6)).astype(np.float32)
        self.y = g.integers(0, 3, (64, batch * chunks)).astype(np.float32)
        self.tx = g.standard_normal((5, batch, 6)).astype(np.float32)
        self.ty = g.integers(0, 3, (5, batch)).astype(np.float32)
        self.solver, self.calls, self.test_calls = None, 0, 0

    def __call__(self, net):
        if net.phase == TEST:
            k = self.test_calls % len(self.tx)
            self.test_calls += 1
            x, y = self.tx[k], self.ty[k]
        else:
            part = self.calls % self.chunks
            self.calls += 1
            rows = slice(part * self.batch, (part + 1) * self.batch)
            x, y = self.x[self.solver.iter, rows], self.y[self.solver.iter, rows]
        net.blobs["data"].data[...] = x
        net.blobs["label"].data[...] = y


def make_solver(param, bank, **kw):
    solver = SGDSolver(param, feed=bank, **kw)
    bank.solver = solver
    return solver


def softmax_grad(x, w, b, labels):
    s = x.astype(np.float64) @ w.T.astype(np.float64) + b
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(labels)), labels.astype(int)] -= 1
    p /= len(labels)
    return p.T @ x, p.sum(0)


# -- learning-rate policies ---------------------------------------------------------

def policy(**fields):
    return caffe_pb2.SolverParameter(base_lr=0.01, **fields)


@pytest.mark.parametrize("fields, iteration, want", [
    (dict(lr_policy="fixed"), 12345, 0.01),
    (dict(lr_policy="step", gamma=0.1, stepsize=100), 250, 0.01 * 0.1 ** 2),
    (dict(lr_policy="step", gamma=0.1, stepsize=100), 99, 0.01),
    (dict(lr_policy="exp", gamma=0.99), 10, 0.01 * 0.99 ** 10),
    (dict(lr_policy="inv", gamma=1e-4, power=0.75), 1000, 0.01 * 1.1 ** -0.75),
    (dict(lr_policy="poly", power=2.0, max_iter=100), 25, 0.01 * 0.75 ** 2),
    (dict(lr_policy="sigmoid", gamma=-0.1, stepsize=50), 60, 0.01 / (1 + math.e)),
])
def test_lr_policies_match_caffe_formulas(fields, iteration, want):
    rate, _ = learning_rate(policy(**fields), iteration)
    assert rate == pytest.approx(want, rel=2e-6)


def test_multistep_advances_one_step_per_call():
    p = policy(lr_policy="multistep", gamma=0.5, stepvalue=[5, 8])
    step, rates = 0, []
    for it in range(11):
        rate, step = learning_rate(p, it, step)
        rates.append(rate)
    assert rates == pytest.approx([0.01] * 5 + [0.005] * 3 + [0.0025] * 3, rel=1e-6)
    # Resuming at iteration 9 with the step lost would catch up one step per call.
    assert learning_rate(p, 9, 0) == (pytest.approx(0.005, rel=1e-6), 1)


def test_bad_policy_and_solver_type_are_solver_errors():
    with pytest.raises(SolverError, match="bogus"):
        SGDSolver(solver_param(lr_policy='"bogus"'))
    with pytest.raises(SolverError, match="Adam"):
        SGDSolver(solver_param(type='"Adam"'))
    with pytest.raises(SolverError, match="stepsize"):
        learning_rate(policy(lr_policy="step", gamma=0.1), 3)


# -- the update -----------------------------------------------------------------------

@pytest.mark.parametrize("regularization", ["L2", "L1"])
def test_two_sgd_steps_equal_the_hand_written_update(regularization):
    mults = "param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }"
    param = solver_param(extra_param=mults, regularization_type=f'"{regularization}"')
    bank = Bank(4)
    solver = make_solver(param, bank)
    w, b = (p.data.astype(np.float64).copy() for p in solver.net.params["ip"])
    hw, hb = np.zeros_like(w), np.zeros_like(b)
    lr, momentum, decay = 0.1, 0.9, 0.01
    for it in range(2):
        gw, gb = softmax_grad(bank.x[it], w, b, bank.y[it])
        reg = w if regularization == "L2" else np.sign(w)
        hw = momentum * hw + lr * 1 * (gw + decay * 1 * reg)
        hb = momentum * hb + lr * 2 * (gb + decay * 0 * b)
        w, b = w - hw, b - hb
        solver.step(1)
        np.testing.assert_allclose(solver.net.params["ip"][0].data, w, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(solver.net.params["ip"][1].data, b, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(solver.history[0], hw, rtol=1e-5, atol=1e-7)
    assert solver.iter == 2


def test_iter_size_equals_a_bigger_batch():
    small = make_solver(solver_param(batch=4, iter_size=2), bank_a := Bank(4, chunks=2))
    big = make_solver(solver_param(batch=8, iter_size=1), Bank(8, chunks=1))
    np.testing.assert_array_equal(small.net.params["ip"][0].data, big.net.params["ip"][0].data)
    np.testing.assert_array_equal(bank_a.x, Bank(8).x)  # the same samples, split in two
    small.step(3)
    big.step(3)
    for a, b in zip(small.net.learnable_params, big.net.learnable_params):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-7)


def test_clip_gradients_scales_to_the_global_norm():
    param = solver_param(momentum=0, weight_decay=0, base_lr=1, clip_gradients=0.05)
    bank = Bank(4)
    solver = make_solver(param, bank)
    before = [p.data.astype(np.float64).copy() for p in solver.net.learnable_params]
    gw, gb = softmax_grad(bank.x[0], before[0], before[1], bank.y[0])
    norm = math.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    assert norm > 0.05
    solver.step(1)
    moved = [b - p.data for b, p in zip(before, solver.net.learnable_params)]
    np.testing.assert_allclose(moved[0], gw * 0.05 / norm, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(moved[1], gb * 0.05 / norm, rtol=1e-4, atol=1e-7)


# -- snapshots --------------------------------------------------------------------------

def test_restore_resumes_bit_identically(tmp_path):
    fields = dict(lr_policy='"multistep"', gamma=0.5, stepvalue=(3, 4),
                  snapshot_prefix=f'"{tmp_path / "snap"}"')
    straight = make_solver(solver_param(**fields), Bank(4))
    straight.step(10)

    first = make_solver(solver_param(**fields), Bank(4))
    first.step(5)
    model, state = first.snapshot()
    assert model.endswith("snap_iter_5.caffemodel") and state.endswith("snap_iter_5.solverstate")

    # A different seed: every weight must come from the snapshot.
    resumed = make_solver(solver_param(**dict(fields, random_seed=99)), Bank(4))
    resumed.restore(state)
    assert (resumed.iter, resumed.current_step) == (5, 2)
    resumed.step(5)
    compare(straight, resumed)

    # A snapshot pair moved elsewhere still restores (learned_net is looked up
    # beside the .solverstate), and solve() resumes to max_iter.
    moved = tmp_path / "moved"
    moved.mkdir()
    for path in (model, state):
        pathlib.Path(path).rename(moved / pathlib.Path(path).name)
    again = make_solver(solver_param(**dict(fields, random_seed=98)), Bank(4))
    again.solve(resume_file=moved / "snap_iter_5.solverstate")
    assert again.iter == 10
    compare(straight, again)


def compare(straight, resumed):
    for a, b in zip(straight.net.learnable_params, resumed.net.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)
    for a, b in zip(straight.history, resumed.history):
        np.testing.assert_array_equal(a, b)


# -- testing, display and the log ---------------------------------------------------

# Caffe's tools/extra/parse_log.py, verbatim.
REGEX_ITERATION = re.compile(r"Iteration (\d+)")
REGEX_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
GLOG_PREFIX = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+:\d+\] ")


def extract_datetime_from_line(line, year):
    # parse_log.py's own parser of glog time stamps.
    line = line.strip().split()
    month, day = int(line[0][1:3]), int(line[0][3:])
    timestamp = line[1]
    pos = timestamp.rfind(".")
    hour, minute, second = (int(x) for x in timestamp[:pos].split(":"))
    return datetime.datetime(year, month, day, hour, minute, second, int(timestamp[pos + 1:]))


def parse_log(text):
    """parse_log.py's loop: rows of (iteration, seconds, lr, outputs) for train and test."""
    iteration, lr, start = -1, float("nan"), None
    train, test = {}, {}
    for line in text.splitlines():
        if start is None and "Solving" in line:
            start = extract_datetime_from_line(line, 2026)
        match = REGEX_ITERATION.search(line)
        if match:
            iteration = int(match.group(1))
        if iteration == -1:
            continue
        assert (extract_datetime_from_line(line, 2026) - start).total_seconds() >= 0
        match = REGEX_LEARNING_RATE.search(line)
        if match:
            lr = float(match.group(1))
        for regex, rows in ((REGEX_TRAIN_OUTPUT, train), (REGEX_TEST_OUTPUT, test)):
            match = regex.search(line)
            if match:
                rows.setdefault(iteration, {})[match.group(2)] = float(match.group(3))
                rows[iteration]["lr"] = lr
    return train, test


def test_solve_logs_tests_and_snapshots_like_caffe(tmp_path):
    fields = dict(max_iter=6, display=2, test_interval=3, test_iter=2, snapshot=4,
                  snapshot_after_train="true", snapshot_prefix=f'"{tmp_path / "lenet"}"',
                  lr_policy='"step"', gamma=0.5, stepsize=2)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(GlogFormatter())
    logger = logging.getLogger("test_solver.capture")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    bank = Bank(4)
    seen = []
    solver = make_solver(solver_param(**fields), bank, log=logger,
                         on_iteration=lambda s: seen.append(s.iter))
    try:
        solver.solve()
    finally:
        logger.removeHandler(handler)
    log = stream.getvalue()
    lines = log.splitlines()

    assert seen == [1, 2, 3, 4, 5, 6]
    assert all(GLOG_PREFIX.match(line) for line in lines), lines[:3]
    assert lines[-1].endswith("] Optimization Done.")
    for n in (4, 6):
        assert (tmp_path / f"lenet_iter_{n}.caffemodel").exists()
        assert (tmp_path / f"lenet_iter_{n}.solverstate").exists()
    assert [int(m) for m in re.findall(r"Iteration (\d+), Testing net \(#0\)", log)] == [0, 3, 6]

    train, test = parse_log(log)
    assert sorted(train) == [0, 2, 4]
    # parse_log.py reads the rate of the lr line before the outputs: Caffe logs
    # "Iteration N, lr = R" after iteration N's outputs, so the column lags.
    assert train[2]["lr"] == pytest.approx(0.1, rel=1e-6)
    lrs = {int(REGEX_ITERATION.search(line).group(1)):
           float(REGEX_LEARNING_RATE.search(line).group(1))
           for line in lines if REGEX_LEARNING_RATE.search(line)}
    assert lrs == pytest.approx({0: 0.1, 2: 0.05, 4: 0.025}, rel=1e-6)
    assert sorted(test) == [0, 3, 6]
    assert set(test[6]) == {"accuracy", "loss", "lr"}
    assert re.search(r"Test net output #1: loss = \S+ \(\* 1 = \S+ loss\)", log)

    # The last test's means, from the final weights with NumPy.
    w, b = (p.data.astype(np.float64) for p in solver.net.params["ip"])
    accs, losses = [], []
    for k in (4 % 5, 5 % 5):  # the last test's two batches: feeds 4 and 5 (2 per test)
        s = bank.tx[k] @ w.T + b
        accs.append(np.mean(s.argmax(1) == bank.ty[k]))
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        losses.append(-np.mean(np.log(p[np.arange(4), bank.ty[k].astype(int)])))
    assert solver.test_scores[0]["accuracy"] == pytest.approx(np.mean(accs), abs=1e-6)
    assert solver.test_scores[0]["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert test[6]["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    # Iteration 4's train loss (average_loss 1) is the loss of batch 4 under
    # the weights before update 4: those of the snapshot taken at iteration 4.
    weights = caffe_pb2.NetParameter()
    weights.ParseFromString((tmp_path / "lenet_iter_4.caffemodel").read_bytes())
    ip = next(layer for layer in weights.layer if layer.name == "ip")
    w4 = np.array(ip.blobs[0].data, np.float64).reshape(3, 6)
    b4 = np.array(ip.blobs[1].data, np.float64)
    assert train[4]["loss"] == pytest.approx(softmax_loss(bank.x[4], w4, b4, bank.y[4]),
                                             rel=1e-5)


def softmax_loss(x, w, b, labels):
    s = x.astype(np.float64) @ w.T + b
    s -= s.max(1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(1, keepdims=True))
    return -np.mean(logp[np.arange(len(labels)), labels.astype(int)])


def test_smoothed_loss_averages_over_average_loss():
    # base_lr 0 keeps the weights, so every iteration's loss is known in advance.
    bank = Bank(4)
    solver = make_solver(solver_param(average_loss=3, base_lr=0.0), bank)
    w, b = (p.data.astype(np.float64) for p in solver.net.params["ip"])
    losses = [softmax_loss(bank.x[i], w, b, bank.y[i]) for i in range(5)]
    solver.step(2)
    assert solver.smoothed_loss == pytest.approx(np.mean(losses[:2]), rel=1e-5)
    solver.step(5)  # a new step() restarts the average, as Caffe's Step does
    losses = [softmax_loss(bank.x[i], w, b, bank.y[i]) for i in range(2, 7)]
    assert solver.smoothed_loss == pytest.approx(np.mean(losses[2:5]), rel=1e-5)


def test_glog_formatter_writes_glog_lines():
    record = logging.LogRecord("fecaffe_hw.solver", logging.INFO, "/x/solver.py", 218,
                               "Iteration %d, lr = %s", (100, "0.01"), None)
    record.created = datetime.datetime(2026, 11, 25, 18, 5, 57, 123456).timestamp()
    record.process = 1234
    assert GlogFormatter().format(record) == \
        "I1125 18:05:57.123456  1234 solver.py:218] Iteration 100, lr = 0.01"
    record.levelno, record.msg, record.args = logging.WARNING, "two\nlines", ()
    assert [line[:1] for line in GlogFormatter().format(record).split("\n")] == ["W", "W"]
