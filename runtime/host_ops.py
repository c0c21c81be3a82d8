"""The host's half of a schedule: what runs when the sequencer stops at a ``HOST`` command.

``INPUT`` writes the batch's inputs and labels (quantised to the plan's
formats) into tensor memory; ``SOFTMAX``, ``SOFTMAX_LOSS`` and
``ACCURACY`` read their bottom blob back, compute in float as Caffe does,
and ``SOFTMAX_LOSS`` writes the loss gradient of its bottom (quantised to
the bottom's diff format) where the command says. A few logits per image:
well under 0.01% of LeNet's work, and the part Caffe computes in float.

One :class:`HostOps` serves the NumPy model, the simulator and the board:
it sees tensor memory only through ``read(addr, nbytes)`` and
``write(addr, data)``.
"""

import numpy as np

from ..fixedpoint import dequantize, quantize
from .isa import HostOp

__all__ = ["HostOps"]


def _softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class HostOps:
    """Callable ``(fields, read, write)`` for ``HOST`` commands of ``plan``.

    ``inputs`` maps input blob names to float arrays (labels as class
    indices). ``results`` collects, per layer name, ``loss``, ``accuracy``
    or ``prob`` (float), and ``outputs`` the dequantised bottom blobs the
    host read.
    """

    def __init__(self, plan, inputs):
        self.plan = plan
        self.inputs = {name: np.asarray(value) for name, value in inputs.items()}
        self.results = {}
        self.outputs = {}

    def _fmt(self, blob, part="data"):
        return self.plan.formats[blob][part]

    def _read_blob(self, blob, read):
        region = self.plan.region(f"{blob}.data")
        return dequantize(region.unpack(read(region.offset, region.size)), self._fmt(blob))

    def __call__(self, fields, read, write):
        rec = self.plan.layers[fields["layer"]]
        op = HostOp(fields["func"])
        if op == HostOp.INPUT:
            for top in rec["tops"]:
                region = self.plan.region(f"{top}.data")
                if top not in self.inputs:
                    raise KeyError(f"No input given for blob {top!r}")
                values = self.inputs[top].reshape(region.shape)
                write(region.offset, region.pack(quantize(values, self._fmt(top))))
            return
        bottom = rec["bottoms"][0]
        x = self._read_blob(bottom, read).astype(np.float64)
        self.outputs[bottom] = x
        x = x.reshape(x.shape[0], x.shape[1], -1)
        if op == HostOp.SOFTMAX:
            self.results[rec["name"]] = {"prob": _softmax(x).reshape(self.outputs[bottom].shape)}
            return
        labels = self._read_blob(rec["bottoms"][1], read).reshape(x.shape[0], -1)
        labels = labels.astype(np.int64)
        if op == HostOp.ACCURACY:
            hits = x.argmax(axis=1) == labels
            self.results[rec["name"]] = {"accuracy": float(hits.mean())}
            return
        # SOFTMAX_LOSS: Caffe's normalization VALID (every label counts).
        prob = _softmax(x)
        n, c, inner = prob.shape
        picked = np.take_along_axis(prob, labels[:, None, :], axis=1)[:, 0]
        count = n * inner
        loss = float(-np.log(np.maximum(picked, np.finfo(np.float32).tiny)).sum() / count)
        self.results[rec["name"]] = {"loss": loss}
        if fields.get("diff_addr"):
            weight = float(rec.get("loss_weight", 1.0) or 1.0)
            diff = prob.copy()
            np.put_along_axis(diff, labels[:, None, :], picked[:, None, :] - 1.0, axis=1)
            diff *= weight / count
            region = self.plan.region(f"{bottom}.diff")
            if region.offset != fields["diff_addr"]:
                raise ValueError(f"{rec['name']}: the loss gradient goes to {region.name}, not "
                                 f"{fields['diff_addr']:#x}")
            write(region.offset, region.pack(quantize(diff, self._fmt(bottom, "diff"))))
