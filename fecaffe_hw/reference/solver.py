"""Caffe's Solver and SGDSolver on the float reference Net.

The loop, the update and the log lines are Caffe's (``solver.cpp``,
``sgd_solver.cpp``), so a training log here reads like Caffe's and
``tools/extra/parse_log.py`` parses it. The update of each learnable blob is,
in float32 and in Caffe's order::

    clip all diffs to global L2 norm <= clip_gradients      (if >= 0)
    diff    /= iter_size                                    (Normalize)
    diff    += weight_decay * decay_mult * data             (L2; L1 uses sign(data))
    history  = momentum * history + rate * lr_mult * diff   (ComputeUpdateValue)
    data    -= history                                      (Blob::Update)
"""

import collections
import logging
import os
import pathlib
import time

import numpy as np

from ..errors import SolverError, WeightsError
from .layer import TEST, TRAIN
from .lr_policy import POLICIES, learning_rate
from .net import Net

__all__ = ["SGDSolver"]

_f32 = np.float32


def _g(value):
    """A number as C++'s ``ostream <<`` prints it (6 significant digits)."""
    return f"{float(value):.6g}"


class SGDSolver:
    """Trains ``net`` with Caffe's SGD, testing ``test_nets`` at ``test_interval``.

    ``solver`` is a solver prototxt path or a ``caffe_pb2.SolverParameter``.
    ``log`` is the :class:`logging.Logger` for the Caffe-style lines (default
    ``fecaffe_hw.solver``; attach :func:`fecaffe_hw.reference.caffe_log.install`
    for glog formatting). ``feed(net)``, if given, is called before every
    forward pass of the train and test nets, to fill their Input blobs.
    ``on_iteration(solver)`` is called after every iteration.

    Results: ``iter``, ``smoothed_loss`` (the displayed loss),
    ``test_scores[i]`` (``{output name: mean value}`` of test net ``i`` at
    its last test), ``lr`` (the last rate used).
    """

    def __init__(self, solver, *, log=None, feed=None, on_iteration=None):
        from ..caffe import caffe_pb2, prototxt
        if isinstance(solver, caffe_pb2.SolverParameter):
            param = caffe_pb2.SolverParameter()
            param.CopyFrom(solver)
            prototxt.upgrade_solver_type(param)
            self.path = None
        elif isinstance(solver, (str, os.PathLike)):
            param = prototxt.read_solver(solver)
            self.path = pathlib.Path(solver)
        else:
            raise TypeError(f"SGDSolver(): expected a solver path or a SolverParameter, "
                            f"not {solver!r}")
        self.param = param
        self._validate()
        self.log = log if log is not None else logging.getLogger("fecaffe_hw.solver")
        self.feed = feed
        self.on_iteration = on_iteration
        if not param.snapshot_prefix and self.path is not None:
            # Caffe's UpgradeSnapshotPrefixProperty: default to the solver's own name.
            param.snapshot_prefix = str(self.path.with_suffix(""))
        elif self.path is not None and pathlib.Path(param.snapshot_prefix).is_dir():
            param.snapshot_prefix = str(pathlib.Path(param.snapshot_prefix) / self.path.stem)

        if param.snapshot > 0 and not param.snapshot_prefix:
            where = f"{self.path}: " if self.path is not None else ""
            raise SolverError(f"{where}snapshot is specified but snapshot_prefix is not")

        # One generator for every net, as Caffe's one global RNG.
        self.rng = np.random.default_rng(param.random_seed if param.random_seed >= 0 else None)
        nets = prototxt.solver_nets(param, self.path)
        self.net = Net(nets.train, phase=TRAIN, stages=(), level=None, seed=self.rng)
        self.test_nets = [Net(p, phase=TEST, stages=(), level=None, seed=self.rng)
                          for p in nets.test]
        self.history = [np.zeros(b.shape, np.float32) for b in self.net.learnable_params]
        self.iter = 0
        self.current_step = 0
        self.lr = None
        self.smoothed_loss = None
        self.test_scores = [collections.OrderedDict() for _ in self.test_nets]
        self.test_losses = [None for _ in self.test_nets]
        self._losses = []

    def _validate(self):
        p = self.param
        where = f"{self.path}: " if self.path is not None else ""
        if p.type != "SGD":
            raise SolverError(f'{where}solver type "{p.type}" is not supported (only "SGD")')
        if p.lr_policy not in POLICIES:
            raise SolverError(f"{where}unknown lr_policy {p.lr_policy!r} "
                              f"(supported: {', '.join(POLICIES)})")
        if p.regularization_type not in ("L1", "L2"):
            raise SolverError(f"{where}unknown regularization_type {p.regularization_type!r} "
                              f"(L1 or L2)")
        if p.average_loss < 1:
            raise SolverError(f"{where}average_loss must be at least 1, not {p.average_loss}")
        if p.iter_size < 1:
            raise SolverError(f"{where}iter_size must be at least 1, not {p.iter_size}")
        if p.snapshot_format != p.BINARYPROTO:
            raise SolverError(f"{where}only snapshot_format: BINARYPROTO is supported (not HDF5)")
        for i, n in enumerate(p.test_iter):
            if n <= 0:
                raise SolverError(f"{where}test_iter #{i} must be positive, not {n}")

    # -- the loop (Solver::Step / Solver::Solve) ------------------------------

    def _feed(self, net):
        if self.feed is not None:
            self.feed(net)

    def step(self, iters):
        """Run ``iters`` iterations: test, forward/backward ``iter_size`` times, update."""
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + int(iters)
        self._losses = []
        self.smoothed_loss = _f32(0)
        timer, iters_last = time.perf_counter(), self.iter
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and \
                    (self.iter > 0 or p.test_initialization):
                self.test_all()
            display = p.display and self.iter % p.display == 0
            loss = _f32(0)
            for _ in range(p.iter_size):
                self._feed(self.net)
                loss += self.net._forward()
                self.net._backward()
            loss = _f32(loss / _f32(p.iter_size))
            self._update_smoothed_loss(loss, start_iter)
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - iters_last) / (lapse if lapse else 1)
                self.log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s",
                              self.iter, _g(per_s), _g(lapse), p.display,
                              _g(self.smoothed_loss))
                timer, iters_last = time.perf_counter(), self.iter
                self._log_outputs(self.net, "Train", None)
            self.apply_update()
            # iter counts the updates done: Caffe increments it only now.
            self.iter += 1
            if p.snapshot and self.iter % p.snapshot == 0:
                self.snapshot()
            if self.on_iteration is not None:
                self.on_iteration(self)

    def solve(self, resume_file=None):
        """Train to ``max_iter`` (restoring ``resume_file`` first), snapshot, final test."""
        p = self.param
        self.log.info("Solving %s", self.net.name)
        self.log.info("Learning Rate Policy: %s", p.lr_policy)
        if resume_file is not None:
            self.log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        # Caffe's last pass: forward only (the weights are final), to display the loss.
        if p.display and self.iter % p.display == 0:
            self._feed(self.net)
            loss = self.net._forward()
            self._update_smoothed_loss(loss, start_iter)
            self.log.info("Iteration %d, loss = %s", self.iter, _g(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        self.log.info("Optimization Done.")

    def _update_smoothed_loss(self, loss, start_iter):
        average = self.param.average_loss
        if len(self._losses) < average:
            self._losses.append(_f32(loss))
            n = len(self._losses)
            self.smoothed_loss = _f32((self.smoothed_loss * _f32(n - 1) + loss) / _f32(n))
        else:
            idx = (self.iter - start_iter) % average
            self.smoothed_loss = _f32(self.smoothed_loss + (loss - self._losses[idx])
                                      / _f32(average))
            self._losses[idx] = _f32(loss)

    def _log_outputs(self, net, which, scores):
        """Caffe's ``Train net output`` / ``Test net output`` lines; ``scores``
        replaces the blob values (the test means)."""
        index = 0
        for name in net.outputs:
            weight = _f32(net.blob_loss_weights.get(name, 0.0))
            values = net.blobs[name].data.ravel() if scores is None else scores[name]
            for value in np.atleast_1d(values):
                extra = f" (* {_g(weight)} = {_g(weight * _f32(value))} loss)" if weight else ""
                self.log.info("    %s net output #%d: %s = %s%s", which, index, name,
                              _g(value), extra)
                index += 1

    # -- testing (Solver::TestAll / Solver::Test) -----------------------------

    def test_all(self):
        for i in range(len(self.test_nets)):
            self.test(i)

    def test(self, index=0):
        """Average every output of test net ``index`` over ``test_iter[index]`` forward passes."""
        p = self.param
        self.log.info("Iteration %d, Testing net (#%d)", self.iter, index)
        net = self.test_nets[index]
        net.share_with(self.net)
        n = p.test_iter[index]
        sums, loss = None, _f32(0)
        for i in range(n):
            self._feed(net)
            iter_loss = net._forward()
            if p.test_compute_loss:
                loss += iter_loss
            values = [net.blobs[name].data.astype(np.float32).ravel() for name in net.outputs]
            sums = [v.copy() for v in values] if i == 0 else [s + v for s, v in zip(sums, values)]
        if p.test_compute_loss:
            loss = _f32(loss / _f32(n))
            self.test_losses[index] = float(loss)
            self.log.info("Test loss: %s", _g(loss))
        means = collections.OrderedDict(
            (name, s / _f32(n)) for name, s in zip(net.outputs, sums or ()))
        self._log_outputs(net, "Test", means)
        self.test_scores[index] = collections.OrderedDict(
            (name, float(m[0]) if m.size == 1 else m) for name, m in means.items())
        return self.test_scores[index]

    # -- the update (SGDSolver::ApplyUpdate) ----------------------------------

    def apply_update(self):
        p = self.param
        previous_step = self.current_step
        rate, self.current_step = learning_rate(p, self.iter, self.current_step)
        if p.lr_policy == "multistep" and self.current_step != previous_step:
            self.log.info("MultiStep Status: Iteration %d, step = %d", self.iter,
                          self.current_step)
        self.lr = rate
        if p.display and self.iter % p.display == 0:
            self.log.info("Iteration %d, lr = %s", self.iter, _g(rate))
        self._clip_gradients()
        rate = _f32(rate)
        momentum = _f32(p.momentum)
        for i, blob in enumerate(self.net.learnable_params):
            diff, data, history = blob.diff, blob.data, self.history[i]
            if p.iter_size > 1:
                diff *= _f32(1) / _f32(p.iter_size)
            local_decay = _f32(p.weight_decay) * _f32(self.net.params_weight_decay[i])
            if local_decay:
                if p.regularization_type == "L2":
                    diff += local_decay * data
                else:
                    diff += local_decay * np.sign(data)
            local_rate = rate * _f32(self.net.params_lr[i])
            # caffe_cpu_axpby: history = momentum * history, then += local_rate * diff.
            history *= momentum
            history += local_rate * diff
            diff[...] = history
            data -= diff

    def _clip_gradients(self):
        clip = self.param.clip_gradients
        if clip < 0:
            return
        sumsq = _f32(0)
        for blob in self.net.learnable_params:
            d = blob.diff.ravel()
            sumsq += _f32(np.dot(d, d))
        norm = _f32(np.sqrt(sumsq))
        if norm > _f32(clip):
            scale = _f32(clip) / norm
            self.log.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) "
                          "by scale factor %s", _g(norm), _g(clip), _g(scale))
            for blob in self.net.learnable_params:
                blob.diff *= scale

    # -- snapshots -----------------------------------------------------------------

    def _snapshot_filename(self, extension):
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self):
        """Write ``{prefix}_iter_{N}.caffemodel`` and ``.solverstate``; return both paths."""
        from ..caffe import caffe_pb2, weights
        model = self._snapshot_filename(".caffemodel")
        # Caffe stops at start-up when the prefix's directory is missing; making
        # it lets a stock solver ("snapshot_prefix: snapshots/lenet") run as is.
        pathlib.Path(model).parent.mkdir(parents=True, exist_ok=True)
        self.log.info("Snapshotting to binary proto file %s", model)
        weights.write_caffemodel(model, self.net.to_proto(write_diff=self.param.snapshot_diff))
        state = caffe_pb2.SolverState(iter=self.iter, learned_net=model,
                                      current_step=self.current_step)
        for h in self.history:
            state.history.add().CopyFrom(weights.array_to_blob(h))
        state_path = self._snapshot_filename(".solverstate")
        self.log.info("Snapshotting solver state to binary proto file %s", state_path)
        weights.write_solverstate(state_path, state)
        return model, state_path

    def restore(self, state_file):
        """Load a ``.solverstate`` (and the ``.caffemodel`` it names): iter, step, history."""
        from ..caffe import weights
        state_file = os.fspath(state_file)
        if state_file.endswith(".h5"):
            raise SolverError(f"{state_file}: HDF5 solver states are not supported")
        state = weights.read_solverstate(state_file)
        if len(state.history) != len(self.history):
            raise WeightsError(f"{state_file}: {len(state.history)} history blobs, the net "
                               f"has {len(self.history)} learnable parameters")
        arrays = []
        for i, (proto, h) in enumerate(zip(state.history, self.history)):
            a = weights.blob_to_array(proto)
            if a.size != h.size:
                raise WeightsError(f"{state_file}: history blob {i} has shape {a.shape}, "
                                   f"the parameter has {h.shape}")
            arrays.append(a.reshape(h.shape))
        if state.learned_net:
            model = pathlib.Path(state.learned_net)
            if not model.exists():
                # Caffe stores the path as written; a moved snapshot pair sits together.
                beside = pathlib.Path(state_file).parent / model.name
                model = beside if beside.exists() else model
            self.net.copy_from(model)
        self.iter = state.iter
        self.current_step = state.current_step
        for h, a in zip(self.history, arrays):
            h[...] = a
        self.log.info("SGDSolver: restoring history")
