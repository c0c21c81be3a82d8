"""What ``fecaffe-hw sim`` runs: a plan, its schedule, the float reference net
with the same weights, a batch, and the tensor-memory image the host writes.

A net with Data layers reads the bundled MNIST sample (its test split, the
first ``batch`` digits, scaled as the layer's ``transform_param`` says); an
Input-only net gets seeded uniform [0, 1) inputs and random labels. Weights
come from a ``.caffemodel`` or the net's fillers seeded by ``seed``.
"""

from dataclasses import dataclass

import numpy as np

from ..compiler.formats import synthetic_batch
from ..compiler.plan import HOST_TYPES, _load_param, plan_network
from ..compiler.schedule import build_schedule, has_loss
from ..errors import PlanError
from ..fixedpoint import dequantize, quantize

__all__ = ["Workload", "build_workload"]


@dataclass
class Workload:
    plan: object
    schedule: object
    phase: str           # "test" (an inference pass) or "train" (one iteration)
    net: object          # reference Net with the workload's weights
    inputs: dict         # input blob name -> float array

    @property
    def commands(self):
        return self.schedule.commands("train" if self.phase == "train" else "inference")

    def parameter_writes(self):
        """``(address, bytes)`` of every parameter blob, quantised and packed."""
        for layer, blobs in self.net.params.items():
            for i, blob in enumerate(blobs):
                key = f"{layer}/{i}"
                region = self.plan.region(f"{key}.weight")
                q = quantize(blob.data, self.plan.formats[key]["data"])
                yield region.offset, region.pack(q)

    def reference(self):
        """Run the float reference on the inputs; returns the net."""
        self.net.forward(**{k: v.astype(np.float32) for k, v in self.inputs.items()})
        return self.net

    def blobs(self):
        """Names of the blobs the board computes (tops of the layers it runs)."""
        names = []
        for rec in self.plan.layers:
            if rec["type"] in ("Input", "Data", "Split", "Flatten", "Dropout") \
                    or rec["type"] in HOST_TYPES:
                continue
            for top in rec["tops"]:
                if top not in names and any(r.name == f"{top}.data" for r in self.plan.layout):
                    names.append(top)
        return names

    def read_blob(self, name, read):
        region = self.plan.region(f"{name}.data")
        return region.unpack(read(region.offset, region.size))

    def float_blob(self, name, ints):
        return dequantize(ints, self.plan.formats[name]["data"])


def _inputs(net, param, batch, seed):
    data_layers = [lp for lp in param.layer if lp.type == "Data"]
    if not data_layers:
        return synthetic_batch(net, seed=seed)
    from ..data.sample import mnist_sample_split
    (_, _), (images, labels) = mnist_sample_split()
    lp = data_layers[0]
    scale = lp.transform_param.scale if lp.transform_param.HasField("scale") else 1.0
    inputs = {lp.top[0]: images[:batch].astype(np.float32) * np.float32(scale)}
    if len(lp.top) > 1:
        inputs[lp.top[1]] = labels[:batch].astype(np.float32)
    return inputs


def build_workload(net_path, *, board, phase="test", batch=1, seed=0, weights=None,
                   rows=None, cols=None):
    """The :class:`Workload` of ``net_path`` on ``board``."""
    if phase not in ("test", "train"):
        raise PlanError(f"phase {phase!r} is unknown (test or train)")
    from ..reference.net import Net
    training = phase == "train"
    caffe_phase = 0 if training else 1
    param = _load_param(net_path, caffe_phase, batch, None)
    net = Net(param, phase=caffe_phase, seed=seed)
    if weights:
        net.copy_from(weights)
    inputs = _inputs(net, _raw_param(net_path, caffe_phase), batch, seed)
    # Calibrate the formats on this very batch, as a user calibrates on data.
    plan = plan_network(net_path, board, batch=batch, training=training, seed=seed,
                        rows=rows, cols=cols, calibration=[inputs], weights=weights,
                        input_shapes={k: v.shape for k, v in inputs.items()})
    if training and not has_loss(plan):
        raise PlanError(f"{net_path}: --phase train needs a net with a loss layer; this is a "
                        f"deploy net (use the train/test net, e.g. nets/lenet_train_test.prototxt)")
    return Workload(plan, build_schedule(plan), phase, net, inputs)


def _raw_param(net_path, caffe_phase):
    from ..caffe import prototxt
    return prototxt.net_for_phase(net_path, caffe_phase)
