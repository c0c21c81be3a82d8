"""Network + board -> Plan: the hardware the SoC builds and where every tensor lives.

Decisions and their rules (every figure lands in the Plan, so a user can see why):

* Array: one multiplier per PE at ``width <= 18`` (DSP48E1 or ECP5
  MULT18X18D; 2 DSP48E1 or 4 MULT18 per PE at 19..24 bits). The DSP budget is
  the part's count less what synthesis of the generated SoC puts outside the
  array: 12 for the sequencer (DMA rounding, decode, bias), 19 for the
  elementwise engine of 16-bit builds, 4 per AVE pooling geometry (the
  divider), 3 for the SGD update when training, and 2 of slack.
  The array takes the largest ``rows x cols`` within the budget with
  ``rows <= cols <= 2 * rows`` (near-square, so A and B feed equally), and
  at most half the LUTs at an estimated ``2 * acc + 2 * width`` LUTs per PE.
* Accumulator width: ``2 * width + ceil(log2(K_max))`` (K_max the deepest
  GEMM, backward-weights included), at most 48 (the DSP48E1 P register).
* On-chip memory (36-kbit blocks): host link and command FIFO (3 blocks),
  activation tables (1 each), bias memory, the line buffer, the pooling
  backward scratch, the gradient accumulator, then the A/B/C operand buffers
  (A and B 40% each, C 20% of what is left), each double-buffered so the DMA
  fills one half while the array reads the other. Without external memory,
  tensor memory itself is on-chip and is taken first.
* Residency: a weight matrix that fits one half of the A buffer is loaded
  once per pass and kept for all its tiles ("resident"); a bigger one is
  tiled from tensor memory (a notice says so).
* Tensor memory layout: every weight, gradient (``grad_bytes``-wide
  accumulators), momentum history, activation data and diff, MAX pooling
  index map, input and label buffer, aligned to ``memory.align`` bytes (256 on
  DRAM: a 64-word burst never straddles a 4 KB AXI boundary; 64 on chip).
  Split and Flatten tops share their bottom's data; in-place tops are the
  same blob.
* Units: the array and DMA always; line buffer if any convolution; pooling
  only with Pooling layers (kinds recorded); eltwise (ReLU, Sigmoid/TanH
  tables only if used); gradient accumulator only when training; softmax,
  loss and accuracy run on the host.

Sizes in messages are KB = 1024 bytes.
"""

import collections
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..errors import NetError, PlanError
from ..fixedpoint import Format
from .boards import BRAM36_BYTES, board as lookup_board
from .formats import calibrate, formats_from_json, formats_to_json, param_key

__all__ = ["Plan", "Region", "plan_network", "buffer_depths", "SUPPORTED_TYPES", "HOST_TYPES", "layer_gemms",
           "elem_bytes"]

#: Layer types the hardware runs (host types run on the host).
SUPPORTED_TYPES = ("Input", "Data", "Convolution", "InnerProduct", "Pooling", "ReLU",
                   "Sigmoid", "TanH", "Flatten", "Split", "Dropout", "Softmax",
                   "SoftmaxWithLoss", "Accuracy")
HOST_TYPES = ("Softmax", "SoftmaxWithLoss", "Accuracy")
_ALIAS_TYPES = ("Split", "Flatten", "Dropout")

# "tile_dma": block RAM synthesis of the LeNet SoC on the Arty used beyond
# the plan's buffers once the feature-map DMA and the registered DMA paths
# joined (measured 11 BRAM36, not yet attributed to one unit).
_FIXED_BLOCKS = {"link": 2, "command_fifo": 1, "tile_dma": 12}
_DSP_SEQUENCER = 20     # measured: 12 before the feature-map DMA and the registered DMA paths
_DSP_ELTWISE_ENGINE = 19
_DSP_AVE_DIVIDER = 4
_DSP_SLACK = 2


def elem_bytes(bits):
    """Bytes of one stored element of ``bits``: 1, 2, 4 or 8."""
    for size in (1, 2, 4, 8):
        if bits <= 8 * size:
            return size
    raise ValueError(f"{bits} bits do not fit 8 bytes")


def _blocks(nbytes):
    return math.ceil(nbytes / BRAM36_BYTES)


# (depth, width) aspect ratios of one 36 Kbit block RAM (RAMB36E1 in simple
# dual-port mode; ECP5's DP16KD pairs give the same ratios), and of its 18 Kbit
# half, which counts as 0.5.
_BRAM36_SHAPES = ((32768, 1), (16384, 2), (8192, 4), (4096, 9), (2048, 18), (1024, 36),
                  (512, 72))
_BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


def memory_blocks(words, width):
    """36 Kbit blocks for a memory of ``words`` x ``width`` bits.

    Counts whole blocks per aspect ratio, so a wide, shallow memory (a
    scratchpad row of ``lanes`` elements) costs what synthesis gives it, not
    its bit count.
    """
    best = min(math.ceil(width / w) * math.ceil(words / d) for d, w in _BRAM36_SHAPES)
    half = min(math.ceil(width / w) * math.ceil(words / d) for d, w in _BRAM18_SHAPES) / 2
    return min(best, half)


def _kb(nbytes):
    return f"{nbytes / 1024:,.0f} KB"


@dataclass(frozen=True)
class Region:
    """One tensor in tensor memory: ``size`` bytes at byte ``offset``."""
    name: str
    kind: str        # weight gradient history data diff index input label
    offset: int
    size: int
    shape: tuple
    elem_bytes: int
    row: int = 0     # elements per stored row (0: dense)
    pitch: int = 0   # elements between the starts of stored rows

    @property
    def end(self):
        return self.offset + self.size

    @property
    def count(self):
        return math.prod(self.shape)

    @property
    def dtype(self):
        return {1: "<u1", 2: "<i2", 4: "<i4", 8: "<i8"}[self.elem_bytes]

    def pack(self, values):
        """The stored bytes of ``count`` integer ``values``: rows of ``row``
        elements ``pitch`` apart (the DMA needs word-aligned rows), padded with
        zeros."""
        flat = np.asarray(values).astype(self.dtype).ravel()
        if flat.size != self.count:
            raise ValueError(f"{self.name} holds {self.count} elements, not {flat.size}")
        if not self.row:
            return flat.tobytes()
        rows = -(-flat.size // self.row)
        out = np.zeros((rows, self.pitch), dtype=self.dtype)
        padded = np.zeros(rows * self.row, dtype=self.dtype)
        padded[:flat.size] = flat
        out[:, :self.row] = padded.reshape(rows, self.row)
        return out.tobytes()

    def unpack(self, raw):
        """The ``count`` values (int64, shaped) of the region's stored bytes."""
        flat = np.frombuffer(bytes(raw), dtype=self.dtype)
        if self.row:
            flat = flat.reshape(-1, self.pitch)[:, :self.row].ravel()
        return flat[:self.count].astype(np.int64).reshape(self.shape)


@dataclass
class Plan:
    """Everything the SoC generator and the scheduler need, JSON-serialisable.

    See the module docstring for how each figure is chosen. ``layers`` holds one
    dict per layer (type, shapes, geometry, backward flags); ``layout`` the
    tensor-memory :class:`Region` list; ``formats`` per blob/param
    ``{"data": Format, "diff": Format | None}``.
    """
    net: str
    board: dict
    training: bool
    batch: int
    data_width: int
    acc_width: int
    grad_bits: int
    rows: int
    cols: int
    units: dict
    dsp: dict
    logic: dict
    bram: dict
    buffers: dict
    memory: dict
    layout: list
    formats: dict
    layers: list
    residency: dict
    notices: list = field(default_factory=list)

    def region(self, name):
        for r in self.layout:
            if r.name == name:
                return r
        raise KeyError(f"No region {name!r} in the plan's tensor memory layout")

    def layer(self, name):
        for rec in self.layers:
            if rec["name"] == name:
                return rec
        raise KeyError(f"No layer {name!r} in the plan")

    def to_dict(self):
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["layout"] = [dict(asdict(r), shape=list(r.shape)) for r in self.layout]
        out["formats"] = formats_to_json(self.formats)
        return json.loads(json.dumps(out))   # tuples -> lists, a deep copy

    def to_json(self, indent=1):
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        obj = json.loads(text) if isinstance(text, (str, bytes)) else dict(text)
        names = {f.name for f in fields(cls)}
        if set(obj) != names:
            raise PlanError(f"plan JSON has fields {sorted(set(obj) ^ names)} "
                            f"missing or unexpected")
        obj["layout"] = [Region(**dict(r, shape=tuple(r["shape"]))) for r in obj["layout"]]
        obj["formats"] = formats_from_json(obj["formats"])
        return cls(**obj)

    @property
    def hash(self):
        """SHA-256 (hex) of the canonical JSON: equal plans, equal hashes."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def hash32(self):
        """Low 32 bits of :attr:`hash` (the PLAN_HASH register)."""
        return int(self.hash, 16) & 0xFFFF_FFFF

    @property
    def memory_used(self):
        return max((r.end for r in self.layout), default=0)


# -- the network -------------------------------------------------------------------

def buffer_depths(plan):
    """``(a_depth, b_depth, c_depth)``: the scratchpads' words (both halves)
    the SoC builds for ``plan``; a word holds one element per array row (A)
    or column (B, C)."""
    def words(name, lanes):
        spec = plan.buffers[name]
        return min(max(2, -(-spec["depth"] * spec.get("halves", 1) // lanes)), 1 << 16)
    return words("A", plan.rows), words("B", plan.cols), words("C", plan.cols)


def _load_param(net_param_or_path, phase, batch, input_shapes):
    from ..caffe import caffe_pb2, prototxt
    try:
        param = prototxt.net_for_phase(net_param_or_path, phase)
    except FileNotFoundError as error:
        raise PlanError(f"{net_param_or_path}: {error.strerror or error}") from None
    supported = ", ".join(SUPPORTED_TYPES)
    for lp in param.layer:
        if lp.type not in SUPPORTED_TYPES:
            raise PlanError(f"type {lp.type} is not supported by the hardware "
                            f"(supported: {supported})", layer=lp.name)
        if lp.type == "Convolution":
            p = lp.convolution_param
            if any(d != 1 for d in p.dilation):
                raise PlanError(f"dilation {list(p.dilation)} is not supported by the line "
                                f"buffer (only 1)", layer=lp.name)
        if lp.type == "Dropout" and phase == 0:
            raise PlanError("Dropout cannot be trained on the hardware (no mask generator); "
                            "plan with training=False or remove it", layer=lp.name)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    out.ClearField("layer")
    shapes = dict(input_shapes or {})
    for lp in param.layer:
        new = out.layer.add()
        new.CopyFrom(lp)
        if lp.type == "Data":
            new.ClearField("data_param")
            new.ClearField("transform_param")
            new.type = "Input"
            dims = [_data_shape(lp, shapes)]
            if len(lp.top) > 1:
                dims.append(shapes.get(lp.top[1], (lp.data_param.batch_size,)))
            for d in dims:
                new.input_param.shape.add().dim.extend(d)
        if new.type == "Input" and batch is not None:
            for s in new.input_param.shape:
                if len(s.dim):
                    s.dim[0] = batch
        elif new.type == "Input":
            for top, s in zip(new.top, new.input_param.shape):
                if top in shapes:
                    s.ClearField("dim")
                    s.dim.extend(shapes[top])
    return out


def _data_shape(lp, shapes):
    """A Data layer's data top shape: given, from its LMDB, or MNIST's for an MNIST database."""
    from pathlib import Path
    top = lp.top[0]
    if top in shapes:
        return tuple(shapes[top])
    n = lp.data_param.batch_size
    source = Path(lp.data_param.source)
    crop = lp.transform_param.crop_size
    if source.exists():
        from ..data.datum_lmdb import DatumReader
        with DatumReader(source) as reader:
            c, h, w = reader.shape
    elif source.name in ("mnist_train_lmdb", "mnist_test_lmdb"):
        c, h, w = 1, 28, 28
    else:
        raise PlanError(f"data source {source} does not exist, so the input shape is unknown; "
                        f"pass input_shapes={{'{top}': (N, C, H, W)}}", layer=lp.name)
    if crop:
        h = w = crop
    return (n, c, h, w)


def _layer_record(net, index, info):
    layer = net.layers[index]
    rec = {
        "name": info.name, "type": info.type, "index": index,
        "bottoms": list(info.bottoms), "tops": list(info.tops),
        "bottom_shapes": [list(net.blobs[b].shape) for b in info.bottoms],
        "top_shapes": [list(s) for s in info.top_shapes], "macs": info.macs,
        "need_backward": bool(net.layer_need_backward[index]),
        "bottom_need_backward": [bool(f) for f in net.bottom_need_backward[index]],
        "params": [],
    }
    lp = net.param.layer[index]
    propagate = getattr(layer, "param_propagate_down", [True] * len(layer.blobs))
    for j, blob in enumerate(layer.blobs):
        spec = lp.param[j] if j < len(lp.param) else None
        rec["params"].append({
            "key": param_key(info.name, j), "shape": list(blob.shape), "count": blob.count,
            "lr_mult": float(spec.lr_mult) if spec else 1.0,
            "decay_mult": float(spec.decay_mult) if spec else 1.0,
            "learn": bool(propagate[j]) and rec["need_backward"]})
    t = info.type
    if t == "Convolution":
        rec.update(kernel=list(layer.kernel), stride=list(layer.stride), pad=list(layer.pad),
                   group=layer.group, num_output=layer.num_output, bias=bool(layer.bias_term),
                   channels=layer.channels, out_hw=list(layer.out_hw),
                   in_hw=list(layer.in_shape[2:]), images=layer.in_shape[0])
    elif t == "InnerProduct":
        rec.update(num_output=layer.num_output, k=layer.k, m=layer.m, axis=layer.axis,
                   transpose=bool(layer.transpose), bias=bool(layer.bias_term))
    elif t == "Pooling":
        rec.update(pool="MAX" if layer.method == 0 else "AVE", kernel=list(layer.geometry),
                   stride=list(layer.stride), pad=list(layer.pad), out_hw=list(layer.out_hw),
                   in_hw=list(layer.in_hw), channels=net.blobs[info.bottoms[0]].shape[1],
                   images=net.blobs[info.bottoms[0]].shape[0])
    elif t == "ReLU":
        rec.update(negative_slope=float(layer.negative_slope))
    return rec


def layer_gemms(rec):
    """``{pass: (groups, M, K, N)}`` of a Convolution or InnerProduct record:
    ``C[M x N] = A[M x K] @ B[K x N]`` per group, for ``forward`` (A weights,
    B im2col(x)), ``backward_data`` (A weights^T, B dy; result col2im'd) and
    ``backward_weights`` (A dy, B im2col(x)^T). Each pass has the layer's
    forward MACs."""
    if rec["type"] == "Convolution":
        g = rec["group"]
        m = rec["num_output"] // g
        k = rec["channels"] // g * rec["kernel"][0] * rec["kernel"][1]
        n = rec["images"] * rec["out_hw"][0] * rec["out_hw"][1]
    elif rec["type"] == "InnerProduct":
        g, m, k, n = 1, rec["num_output"], rec["k"], rec["m"]
    else:
        return {}
    return {"forward": (g, m, k, n), "backward_data": (g, k, m, n),
            "backward_weights": (g, m, n, k)}


# -- the plan ------------------------------------------------------------------------

def plan_network(net_param_or_path, board, *, rows=None, cols=None, width=16, training=True,
                 batch=None, overrides=None, input_shapes=None, calibration=None,
                 margin_bits=1, seed=0, weights=None):
    """Plan ``net_param_or_path`` (prototxt path or NetParameter) for ``board``.

    ``rows``/``cols`` fix the array (default: sized to the DSP budget);
    ``width`` is the data width (2..24); ``training`` plans the TRAIN phase
    with backward and update, else the TEST phase only; ``batch`` replaces
    the inputs' batch size; ``overrides`` are per-blob formats (see
    :func:`~fecaffe_hw.compiler.formats.calibrate`); ``input_shapes``
    (``{top: shape}``) gives Data layers' shapes; ``calibration`` is an
    iterable of input batches for the format calibration (default: one
    synthetic batch, seeded by ``seed``); ``weights`` a .caffemodel path the
    calibration runs with (default: the fillers, seeded by ``seed``).

    Raises :class:`PlanError` for a layer the hardware cannot run, an array
    or buffer that does not fit the board, or a net whose tensors do not fit
    its memory.
    """
    from ..reference.net import Net
    brd = lookup_board(board)
    if isinstance(width, bool) or not isinstance(width, int) or not 2 <= width <= 24:
        raise PlanError(f"data width {width!r} is not supported (2..24 bits)")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int)
                              or batch < 1):
        raise PlanError(f"batch {batch!r} must be a positive integer")
    phase = 0 if training else 1
    param = _load_param(net_param_or_path, phase, batch, input_shapes)
    try:
        net = Net(param, phase=phase, seed=seed)
        if weights is not None:
            net.copy_from(weights)
    except NetError as error:
        raise PlanError(error.message, layer=error.layer) from error
    if len(net.layers) >= 1 << 16:
        raise PlanError(f"{len(net.layers)} layers exceed the 65,535 a command can name")
    infos = net.layer_infos()
    layers = [_layer_record(net, i, info) for i, info in enumerate(infos)]
    inputs = [b for b in net.inputs]
    batch_size = net.blobs[inputs[0]].shape[0] if inputs else 1
    try:
        formats = calibrate(net, calibration, width=width, margin_bits=margin_bits,
                            training=training, overrides=overrides)
    except ValueError as error:
        raise PlanError(str(error)) from None

    table_frac = _align_table_formats(layers, formats, overrides)
    units = _units(layers, training)
    if table_frac is not None:
        units["eltwise"].update(in_frac=table_frac, aux_frac=table_frac)
    gemms = [(rec, p, dims) for rec in layers for p, dims in layer_gemms(rec).items()
             if p == "forward" or training]
    k_max = max((dims[2] for _, _, dims in gemms), default=1)
    acc_width = min(48, 2 * width + max(1, math.ceil(math.log2(max(k_max, 2)))))
    dsp, logic, rows, cols = _size_array(brd, units, width, acc_width, rows, cols)
    grad_bits = min(48, width + math.ceil(math.log2(max(batch_size, 2))) + 2)
    _align_bias_formats(layers, formats, acc_width - width)
    _align_alias_formats(layers, formats)

    data_bytes = elem_bytes(width)
    on_chip = brd.memory is None
    align = 64 if on_chip else 256
    layout = _layout(net, layers, training, data_bytes, elem_bytes(grad_bits), align)
    used = max((r.end for r in layout), default=0)

    bram, buffers, residency, notices = _size_memory(
        brd, layers, gemms, units, training, width, acc_width, data_bytes, grad_bits,
        used if on_chip else 0, rows, cols)
    if on_chip:
        memory = {"kind": "on-chip", "size": bram["tensor_memory"] * BRAM36_BYTES,
                  "align": align, "bytes_per_cycle": 4.0, "latency": 2, "used": used}
    else:
        if used > brd.memory.bytes:
            raise PlanError(f"tensor memory needs {_kb(used)} but the {brd.title}'s "
                            f"{brd.memory.kind} has {_kb(brd.memory.bytes)}")
        memory = {"kind": brd.memory.kind, "size": brd.memory.bytes, "align": align,
                  # The AXI4 master moves 32-bit words: at most 4 bytes per cycle.
                  "bytes_per_cycle": min(4.0, brd.memory.bytes_per_cycle),
                  "latency": brd.memory.latency, "used": used}
    return Plan(net=net.name, board=brd.to_dict(), training=training, batch=batch_size,
                data_width=width, acc_width=acc_width, grad_bits=grad_bits, rows=rows,
                cols=cols, units=units, dsp=dsp, logic=logic, bram=bram, buffers=buffers,
                memory=memory, layout=layout, formats=formats, layers=layers,
                residency=residency, notices=notices)


def _align_alias_formats(layers, formats):
    """Split, Flatten and inference Dropout tops share their bottom's memory,
    so they read it in the bottom's data format; a Split's tops and bottom
    share one diff format too, for the sum of its backward."""
    for rec in layers:
        if rec["type"] in _ALIAS_TYPES:
            for top in rec["tops"]:
                if top not in rec["bottoms"]:
                    formats[top] = {**formats[top],
                                    "data": formats[rec["bottoms"][0]]["data"]}
        if rec["type"] == "Split" and formats[rec["bottoms"][0]]["diff"] is not None:
            # The backward sums the tops' diffs into the bottom's with one
            # ELTWISE ADD: one format for all, the coarsest (it holds the sum).
            blobs = rec["bottoms"][:1] + rec["tops"]
            coarsest = min((formats[b]["diff"] for b in blobs), key=lambda f: f.frac)
            for b in blobs:
                formats[b] = {**formats[b], "diff": coarsest}


def _align_bias_formats(layers, formats, max_shift):
    """Give every bias a frac the array can align with a left shift.

    A GEMM adds the bias to accumulators of frac ``frac(weight) + frac(input)``
    after shifting it left by ``bias_shift`` (0..``max_shift``, the DMA's
    range); a bias calibrated finer than that loses the bits the sum would
    drop anyway, one coarser than the shift reaches is made finer.
    """
    for rec in layers:
        if rec["type"] not in ("Convolution", "InnerProduct") or not rec.get("bias"):
            continue
        key = param_key(rec["name"], 1)
        acc_frac = (formats[param_key(rec["name"], 0)]["data"].frac
                    + formats[rec["bottoms"][0]]["data"].frac)
        fmt = formats[key]["data"]
        frac = min(max(fmt.frac, acc_frac - max_shift), acc_frac)
        if frac != fmt.frac:
            formats[key] = {**formats[key], "data": Format(fmt.bits, frac)}


def _align_table_formats(layers, formats, overrides):
    """One frac for every Sigmoid/TanH input and output (or None without any).

    The elementwise unit's tables are built for one input frac and one
    backward ``y`` frac (the ISA carries only a shift), and an in-place layer
    makes its input and output one blob: so all of them share the coarsest
    calibrated frac, which keeps every range (or the coarsest overridden one:
    an explicit format wins).
    """
    blobs = {b for rec in layers if rec["type"] in ("Sigmoid", "TanH")
             for b in rec["bottoms"][:1] + rec["tops"][:1]}
    if not blobs:
        return None
    chosen = [b for b in blobs if b in (overrides or {})] or blobs
    frac = max(4, min(formats[b]["data"].frac for b in chosen))
    for b in blobs:
        formats[b] = {**formats[b], "data": Format(formats[b]["data"].bits, frac)}
    return frac


def _units(layers, training):
    types = collections.Counter(rec["type"] for rec in layers)
    units = {"array": {}, "dma": {}, "host": {"layers": [r["name"] for r in layers
                                                         if r["type"] in HOST_TYPES]}}
    if types["Convolution"]:
        units["line_buffer"] = {}
    if types["Pooling"]:
        kinds = sorted({rec["pool"] for rec in layers if rec["type"] == "Pooling"})
        # The pool engine builds one AVE divider per distinct AVE geometry.
        ave = {(tuple(rec["in_hw"]), tuple(rec["kernel"]), tuple(rec["stride"]),
                tuple(rec["pad"])) for rec in layers
               if rec["type"] == "Pooling" and rec["pool"] == "AVE"}
        units["pool"] = {"kinds": kinds, "backward": training, "ave_geometries": len(ave)}
    activations = sorted({t.lower() for t in ("ReLU", "Sigmoid", "TanH") if types[t]})
    units["eltwise"] = {"activations": activations,
                        "tables": [a for a in activations if a != "relu"]}
    if training:
        units["accumulator"] = {}
    return units


def _size_array(brd, units, width, acc_width, rows, cols):
    if width <= 18:
        per_pe = 1
    else:
        per_pe = 2 if brd.family == "xilinx7" else 4
    # Multipliers outside the array, as synthesis of the generated SoC
    # counted them before the engines were trimmed (an elementwise engine
    # with both Sigmoid/TanH tables needs 10, without them 2; the LeNet
    # training SoC on the Arty now uses 38 outside its 6x7 array against a
    # reserve of 44). The reserve stays conservative on purpose: on the
    # A7-35T LUTs, not DSPs, bound a training build, and the plan has no LUT
    # model of the engines yet.
    reserve = {"sequencer": _DSP_SEQUENCER, "slack": _DSP_SLACK}
    if width == 16:
        reserve["eltwise_engine"] = _DSP_ELTWISE_ENGINE
    if "AVE" in units.get("pool", {}).get("kinds", ()):
        reserve["pool_ave"] = _DSP_AVE_DIVIDER * units["pool"]["ave_geometries"]
    if "accumulator" in units:
        reserve["accumulator"] = 3
    budget_dsp = brd.dsp - sum(reserve.values())
    lut_per_pe = 2 * acc_width + 2 * width
    ff_per_pe = 2 * acc_width + 2 * width
    max_pes = min(budget_dsp // per_pe, (brd.lut // 2) // lut_per_pe)
    limit = (f"{brd.title}: {brd.dsp} {'DSP48E1' if brd.family == 'xilinx7' else 'MULT18'} "
             f"less a reserve of {sum(reserve.values())}, {per_pe} per PE at {width} bits, "
             f"leaves room for {max_pes} PEs")
    if max_pes < 1:
        raise PlanError(f"no room for a MAC array ({limit})")
    for name, v in (("rows", rows), ("cols", cols)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise PlanError(f"array {name} {v!r} must be a positive integer")
    # A GEMM reads the biases of a block of ``rows`` output channels as one
    # DMA row, which must start on a 32-bit word: 16-bit builds have an even
    # number of rows (or one).
    def legal_rows(r):
        return width != 16 or r == 1 or r % 2 == 0
    if rows is not None and not legal_rows(rows):
        raise PlanError(f"array rows {rows} must be even at 16 bits (each block of rows "
                        f"reads its biases as one word-aligned DMA row)")
    if rows is not None and cols is None:
        cols = max_pes // rows
    elif rows is None and cols is not None:
        rows = max_pes // cols
        rows -= 0 if legal_rows(rows) else 1
    elif rows is None:
        shapes = [(r, min(max_pes // r, 2 * r)) for r in range(1, max_pes + 1)
                  if min(max_pes // r, 2 * r) >= r and legal_rows(r)]
        rows, cols = max(shapes, key=lambda rc: (rc[0] * rc[1], rc[0] - rc[1]))
    if rows < 1 or cols < 1 or rows * cols > max_pes:
        raise PlanError(f"a {rows}x{cols} array does not fit ({limit})")
    pes = rows * cols
    dsp = {"per_pe": per_pe, "array": pes * per_pe, "reserve": reserve,
           "budget": budget_dsp, "total": brd.dsp}
    logic = {"lut_per_pe": lut_per_pe, "array_lut": pes * lut_per_pe,
             "array_ff": pes * ff_per_pe, "lut": brd.lut, "ff": brd.ff}
    return dsp, logic, rows, cols


def _layout(net, layers, training, data_bytes, grad_bytes, align):
    regions = []
    cursor = 0

    def add(name, kind, shape, nbytes_each, row=0):
        nonlocal cursor
        count = max(1, math.prod(shape))
        # Weights, gradients and history share one element pitch (the int16
        # rows' word alignment), so an update walks them index for index.
        pitch = row + row % 2 if row else 0
        size = (-(-count // row) * pitch if row else count) * nbytes_each
        regions.append(Region(name, kind, cursor, size, tuple(shape), nbytes_each, row, pitch))
        cursor = -(-(cursor + size) // align) * align

    def param_row(rec, j, shape):
        # GEMM weight rows start on 32-bit words, as the DMA reads them (bias
        # blocks of an even number of array rows do anyway).
        if rec["type"] not in ("Convolution", "InnerProduct") or j != 0:
            return 0
        return math.prod(shape[1:])

    # Data aliases: Split/Flatten/inference Dropout tops are their bottom.
    root = {}
    diff_root = {}
    for rec in layers:
        for top in rec["tops"]:
            if top in rec["bottoms"]:
                continue   # in place: same blob, same region
            if rec["type"] in _ALIAS_TYPES:
                root[top] = root.get(rec["bottoms"][0], rec["bottoms"][0])
                if rec["type"] != "Split":
                    diff_root[top] = diff_root.get(rec["bottoms"][0], rec["bottoms"][0])
    needs_diff = set()
    if training:
        for rec in layers:
            for b, flag in zip(rec["bottoms"], rec["bottom_need_backward"]):
                if flag:
                    needs_diff.add(diff_root.get(b, b))
    labels = {rec["bottoms"][1] for rec in layers
              if rec["type"] in ("SoftmaxWithLoss", "Accuracy") and len(rec["bottoms"]) > 1}
    inputs = set(net.inputs)
    for rec in layers:
        for j, p in enumerate(rec["params"]):
            row = param_row(rec, j, p["shape"])
            add(f"{p['key']}.weight", "weight", p["shape"], data_bytes, row)
            if training and p["learn"]:
                add(f"{p['key']}.gradient", "gradient", p["shape"], grad_bytes, row)
                add(f"{p['key']}.history", "history", p["shape"], data_bytes, row)
    for name, blob in net.blobs.items():
        if name in root:
            continue
        source_labels = name in labels or any(name == root.get(lb) for lb in labels)
        if name in inputs:
            if source_labels:
                add(f"{name}.data", "label", blob.shape, 4)
            else:
                add(f"{name}.data", "input", blob.shape, data_bytes)
        else:
            add(f"{name}.data", "data", blob.shape, data_bytes)
    for name in net.blobs:
        if name in needs_diff:
            add(f"{name}.diff", "diff", net.blobs[name].shape, data_bytes)
    if training:
        for rec in layers:
            if rec["type"] == "Pooling" and rec["pool"] == "MAX" and rec["need_backward"]:
                add(f"{rec['name']}.index", "index", rec["top_shapes"][0], 1)
    for name, target in root.items():
        # Record the alias so the schedule finds it by the top's name.
        r = next(r for r in regions if r.name == f"{target}.data")
        regions.append(Region(f"{name}.data", "alias", r.offset, r.size, r.shape, r.elem_bytes))
    for name, target in diff_root.items():
        if target in needs_diff:
            r = next(r for r in regions if r.name == f"{target}.diff")
            regions.append(Region(f"{name}.diff", "alias", r.offset, r.size, r.shape,
                                  r.elem_bytes))
    return regions


def _size_memory(brd, layers, gemms, units, training, width, acc_width, data_bytes,
                 grad_bits, tensor_bytes, rows, cols):
    total = int(brd.bram36)
    blocks = dict(_FIXED_BLOCKS)
    for table in units["eltwise"]["tables"]:
        blocks[f"{table}_table"] = 1
    bias_words = max((rec.get("num_output", 0) for rec in layers if rec.get("bias")), default=0)
    if bias_words:
        blocks["bias"] = _blocks(bias_words * data_bytes)
    if tensor_bytes:
        blocks["tensor_memory"] = _blocks(tensor_bytes)
    budget_left = total - sum(blocks.values())
    if budget_left <= 0:
        what = (f"tensor memory needs {_kb(tensor_bytes)} but the {brd.title} has no "
                f"external memory and {_kb(brd.bram_bytes)} of on-chip RAM"
                if tensor_bytes else f"the {brd.title} has too little block RAM")
        raise PlanError(what + " (weights, activations" + (", gradients" if training else "")
                        + " and buffers must all fit on chip)")
    # Line buffer and pooling scratch may take an eighth each; larger maps
    # are split over channels (the command's c0/channels fields).
    share = budget_left * BRAM36_BYTES // 8
    line = [(rec["kernel"][0] + rec["stride"][0]) * (rec["in_hw"][1] + 2 * rec["pad"][1])
            * rec["channels"] for rec in layers if rec["type"] in ("Convolution", "Pooling")]
    if line:
        blocks["line_buffer"] = max(1, _blocks(min(max(line) * data_bytes, share)))
    if "pool" in units and training:
        scratch = [rec["in_hw"][0] * rec["in_hw"][1] * rec["channels"]
                   for rec in layers if rec["type"] == "Pooling"]
        blocks["pool_scratch"] = max(1, _blocks(min(max(scratch) * elem_bytes(width + 2),
                                                     share)))
    if training:
        largest = max((p["count"] for rec in layers for p in rec["params"]), default=1)
        blocks["accumulator"] = max(1, _blocks(min(largest * elem_bytes(grad_bits), share)))
    left = total - sum(blocks.values())
    c_bytes = elem_bytes(acc_width)
    # Scratchpad words are rows of lanes: A holds columns of the array's
    # rows, B and C rows of its columns; both halves share one memory.
    lanes = {"A": rows, "B": cols, "C": cols}
    word_bits = {"A": lanes["A"] * width, "B": lanes["B"] * width,
                 "C": lanes["C"] * acc_width}

    def buffer_blocks(name, depth):
        return memory_blocks(math.ceil(2 * depth / lanes[name]), word_bits[name])

    minimum = {"A": rows, "B": cols, "C": rows * cols}
    min_blocks = {name: buffer_blocks(name, minimum[name]) for name in minimum}
    if left < sum(min_blocks.values()):
        need = sum(blocks.values()) + sum(min_blocks.values())
        detail = (f"tensor memory {_kb(tensor_bytes)} + " if tensor_bytes else "")
        raise PlanError(f"on-chip memory does not fit: {detail}buffers need {need:g} blocks "
                        f"({_kb(need * BRAM36_BYTES)}) but the {brd.title} has {total} "
                        f"({_kb(brd.bram_bytes)})"
                        + ("; it has no external memory" if brd.memory is None else ""))
    want = {"A": max((g * m * k for _, _, (g, m, k, n) in gemms), default=rows),
            "B": max((g * k * n for _, _, (g, m, k, n) in gemms), default=cols),
            "C": max((g * m * n for _, _, (g, m, k, n) in gemms), default=rows * cols)}
    nbytes = {"A": data_bytes, "B": data_bytes, "C": c_bytes}
    shares = {"A": 0.4, "B": 0.4, "C": 0.2}
    buffers = {}
    for name in ("A", "B", "C"):
        cap = max(min_blocks[name], left * shares[name])
        # The deepest half (in elements, a whole number of words) that fits.
        lo, hi = minimum[name], max(minimum[name], want[name])
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if buffer_blocks(name, mid) <= cap:
                lo = mid
            else:
                hi = mid - 1
        depth = lo
        blocks[f"buffer_{name.lower()}"] = buffer_blocks(name, depth)
        buffers[name] = {"depth": depth, "elem_bytes": nbytes[name], "halves": 2,
                         "lanes": lanes[name]}
    residency, notices = {}, []
    a_half = buffers["A"]["depth"]
    where = brd.memory.kind if brd.memory else "on-chip tensor memory"
    for rec in layers:
        if rec["type"] not in ("Convolution", "InnerProduct"):
            continue
        weights = rec["params"][0]["count"]
        if weights <= a_half:
            residency[rec["name"]] = "resident"
            continue
        residency[rec["name"]] = "tiled"
        total_count = sum(p["count"] for p in rec["params"])
        size = total_count * data_bytes
        if size > brd.bram_bytes:
            limit = f"on-chip buffers ({_kb(brd.bram_bytes)} on {brd.title})"
        else:
            limit = f"the weight buffer ({_kb(a_half * data_bytes)} per half)"
        notices.append(f"{rec['name']}: {total_count:,} weights ({_kb(size)}) exceed "
                       f"{limit}; tiled from {where}")
    bram = dict(blocks)
    bram["total"] = sum(blocks.values())
    bram["available"] = total
    if bram["total"] > total:
        raise PlanError(f"on-chip memory does not fit: {bram['total']} blocks planned, "
                        f"the {brd.title} has {total}")
    return bram, buffers, residency, notices
