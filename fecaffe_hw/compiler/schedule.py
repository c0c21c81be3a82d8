"""Plan -> Schedule: the ordered sequencer commands of a training iteration and an inference pass.

Lowering (Caffe's, to GEMM; see :func:`~fecaffe_hw.compiler.plan.layer_gemms`):

* Convolution and InnerProduct become tiled GEMMs on the array. A tile is
  ``tm x tk`` of A, ``tk x tn`` of B and ``tm x tn`` of C, the largest that
  fits half of each on-chip buffer (the other half is being filled by the
  DMA: double buffering). Loop order m, n, k: an A tile that covers all of K
  is loaded once per m and reused for every n (a resident weight matrix is
  loaded once per pass). Bias is added as the C tile completes.
* Backward-data GEMMs store through col2im (scatter-add into a zeroed diff).
  Backward-weights GEMMs split K (batch positions) at image boundaries where
  the buffers allow, and every K chunk's C tile is added into the gradient
  by the accumulator: that is the gradient accumulation over the batch, in
  ``grad_bits``-wide accumulators. Bias gradients are ACC_BIAS reductions.
* Pooling, ReLU/Sigmoid/TanH and Split's gradient sum run on the pooling and
  eltwise units; Split, Flatten and inference Dropout are aliases (no command).
* Softmax, SoftmaxWithLoss and Accuracy run on the host (HOST commands),
  which also writes the loss gradient; inputs are written by the host.
* Training ends with one SGD_UPDATE per learnable parameter blob, which also
  zeroes its gradient for the next iteration.

MAC rule: an inference pass's array MACs equal the net's forward MACs
(``LayerInfo.macs``); a training iteration's are, per Convolution or
InnerProduct layer, ``F * (1 + [a parameter learns] + [its bottom needs a
gradient])`` with ``F`` its forward MACs: forward + 2 x backward except where
Caffe skips a backward (the first layer has no backward-data).

Cycle estimates: DMA ``latency + bytes / bytes_per_cycle``; GEMM
``ceil(tm/rows) * ceil(tn/cols) * max(tk, rows) + rows + cols + 4`` (the
array's own figure); pooling and eltwise one element per cycle plus their
latency (AVE backward ``kh*kw + 1`` per gradient); host commands the link's
transfer time. :meth:`Schedule.cycles` overlaps DMA with compute per layer
and stage (double buffering): ``max(dma, array, other units)``.
"""

import collections
import json
import math
from dataclasses import dataclass, field

from ..errors import PlanError
from ..fixedpoint.update import sgd_fracs_legal
from ..runtime import isa
from ..runtime.isa import Buffer, EltwiseOp, Flag, HostOp, Opcode, PoolKind, Stage, Unit
from .plan import HOST_TYPES, buffer_depths, layer_gemms

__all__ = ["Command", "Schedule", "build_schedule", "LINK_BYTES_PER_SECOND"]

#: Host link payload rates used for HOST commands' estimates: 12 Mbaud 8N1,
#: and a PCIe gen2 x1 XDMA stream (conservative).
LINK_BYTES_PER_SECOND = {"uart": 1_200_000, "pcie": 300_000_000}


@dataclass
class Command:
    """One sequencer command: ISA opcode and fields plus what the compiler knows about it."""
    opcode: Opcode
    layer: str
    layer_index: int
    stage: Stage
    fields: dict = field(default_factory=dict)
    macs: int = 0
    cycles: int = 0
    operands: dict = field(default_factory=dict)

    @property
    def unit(self):
        return Unit(self.fields.get("unit", isa.OPCODE_UNIT[self.opcode]))

    def words(self):
        return isa.encode(self.opcode, layer=self.layer_index, stage=int(self.stage),
                          **self.fields)

    def to_dict(self):
        return {"opcode": self.opcode.name, "unit": self.unit.name.lower(),
                "layer": self.layer, "stage": self.stage.name.lower(),
                "fields": {k: int(v) for k, v in self.fields.items()},
                "macs": self.macs, "cycles": self.cycles, "operands": self.operands}


class Schedule:
    """Commands per phase: ``"train"`` (one iteration; training plans of nets with
    a loss only) and
    ``"inference"`` (one forward pass). ``plan_hash`` ties it to its Plan."""

    def __init__(self, plan_hash, phases):
        self.plan_hash = plan_hash
        self.phases = phases

    def commands(self, phase):
        try:
            return self.phases[phase]
        except KeyError:
            raise KeyError(f"No phase {phase!r} in the schedule "
                           f"(phases: {', '.join(self.phases)})") from None

    def macs(self, phase):
        return sum(c.macs for c in self.commands(phase))

    def count(self, phase, opcode=None, unit=None):
        return sum(1 for c in self.commands(phase)
                   if (opcode is None or c.opcode == opcode) and (unit is None or c.unit == unit))

    def cycles(self, phase):
        """Estimated cycles with DMA overlapping compute within each layer and stage."""
        groups = collections.defaultdict(lambda: collections.Counter())
        for c in self.commands(phase):
            unit = c.unit
            kind = "dma" if unit == Unit.DMA else "array" if unit == Unit.ARRAY else "other"
            groups[c.layer, c.stage][kind] += c.cycles
        return sum(max(g.values()) for g in groups.values())

    def to_words(self, phase):
        words = []
        for c in self.commands(phase):
            words += c.words()
        return words

    def to_json(self, indent=None):
        return json.dumps({
            "plan_hash": self.plan_hash,
            "phases": {name: {"macs": self.macs(name), "cycles": self.cycles(name),
                              "commands": [c.to_dict() for c in cmds]}
                       for name, cmds in self.phases.items()}}, indent=indent)


def has_loss(plan):
    """Whether the planned net has a loss to train on (a deploy net has none)."""
    return any(rec["type"].endswith("Loss") for rec in plan.layers)


def build_schedule(plan):
    """The :class:`Schedule` of ``plan``."""
    phases = {}
    if plan.training and has_loss(plan):
        phases["train"] = _Builder(plan, training=True).build()
    phases["inference"] = _Builder(plan, training=False).build()
    return Schedule(plan.hash, phases)


class _Builder:
    def __init__(self, plan, *, training):
        self.plan = plan
        self.training = training
        self.out = []
        self.eb = plan.buffers["A"]["elem_bytes"]
        self.half = {name: plan.buffers[name]["depth"] for name in ("A", "B", "C")}
        self.loads = collections.Counter()
        self.bpc = plan.memory["bytes_per_cycle"]
        self.latency = plan.memory["latency"]
        link = plan.board["links"][0]
        self.host_rate = LINK_BYTES_PER_SECOND[link] / (plan.board["clock_mhz"] * 1e6)
        self.acc_bytes = plan.bram.get("accumulator", 0) * 4608
        self.formats = plan.formats

    # -- helpers --------------------------------------------------------------

    def region(self, name):
        return self.plan.region(name)

    def has(self, name):
        return any(r.name == name for r in self.plan.layout)

    def frac(self, key, part="data"):
        fmt = self.formats[key][part]
        return fmt.frac if fmt is not None else 0

    def emit(self, opcode, rec, stage, *, macs=0, cycles=0, operands=None, **fields):
        self.out.append(Command(opcode, rec["name"] if rec else "", rec["index"] if rec else 0,
                                stage, fields, macs, int(cycles), operands or {}))

    def dma_cycles(self, nbytes):
        return self.latency + math.ceil(nbytes / self.bpc)

    def load(self, rec, stage, buf, rows, cols, operand, **fields):
        lanes = self.plan.rows if buf == Buffer.A else self.plan.cols
        words = buffer_depths(self.plan)[int(buf)]
        offset = (self.loads[buf] % 2) * (words // 2) * lanes
        self.loads[buf] += 1
        self.load_at(rec, stage, buf, offset, rows, cols, operand, **fields)
        return offset

    # -- GEMM tiling ----------------------------------------------------------

    def tiles(self, m, k, n, k_step=1):
        rows, cols = self.plan.rows, self.plan.cols
        a, b, c = self.half["A"], self.half["B"], self.half["C"]
        tk = min(k, max(1, a // min(m, rows)), max(1, b // min(n, cols)))
        if k_step > 1 and tk >= k_step:
            tk = tk // k_step * k_step
        tm = min(m, max(min(m, rows), (a // tk) // rows * rows))
        tn = min(n, max(min(n, cols), (b // tk) // cols * cols))
        while tm * tn > c and tn > min(n, cols):
            tn = max(min(n, cols), (tn - cols) // cols * cols)
        while tm * tn > c and tm > min(m, rows):
            tm = max(min(m, rows), (tm - rows) // rows * rows)
        return tm, tk, tn

    def gemm(self, rec, stage, dims, a, b, c, *, shift, bias_addr=None, bias_shift=0,
             per_k_output=False, k_step=1, flags=0):
        """Tiled ``C = A @ B``. ``a``/``b`` give DMA fields of a tile, ``c`` emits the output."""
        groups, m, k, n = dims
        tm, tk, tn = self.tiles(m, k, n, k_step)
        rows, cols = self.plan.rows, self.plan.cols
        for g in range(groups):
            loaded = None
            for m0 in range(0, m, tm):
                mm = min(tm, m - m0)
                for n0 in range(0, n, tn):
                    nn = min(tn, n - n0)
                    for k0 in range(0, k, tk):
                        kk = min(tk, k - k0)
                        if loaded != (g, m0, k0) or tk < k:
                            a_off = self.load(rec, stage, Buffer.A, mm, kk, "A",
                                              **a(g, m0, mm, k0, kk))
                            loaded = (g, m0, k0)
                        b_off = self.load(rec, stage, Buffer.B, kk, nn, "B",
                                          **b(g, k0, kk, n0, nn))
                        first = k0 == 0 or per_k_output
                        last = k0 + kk == k or per_k_output
                        gflags = flags | (0 if first else Flag.ACCUMULATE)
                        extra = {}
                        if bias_addr is not None and last:
                            gflags |= Flag.BIAS
                            extra["bias_addr"] = bias_addr + (g * m + m0) * self.eb
                            extra["bias_shift"] = bias_shift
                        self.emit(Opcode.GEMM, rec, stage, a_offset=a_off, b_offset=b_off,
                                  c_offset=0, m=mm, n=nn, k=kk, flags=int(gflags),
                                  macs=mm * kk * nn,
                                  cycles=math.ceil(mm / rows) * math.ceil(nn / cols)
                                  * max(kk, rows) + rows + cols + 4,
                                  operands={"tile": [mm, kk, nn], "at": [g, m0, k0, n0]},
                                  **extra)
                        if per_k_output:
                            c(g, m0, mm, n0, nn, shift)
                    if not per_k_output:
                        c(g, m0, mm, n0, nn, shift)

    def store(self, rec, stage, rows, cols, shift, offset=0, **fields):
        self.emit(Opcode.DMA_STORE, rec, stage, func=int(Buffer.C), offset=offset, rows=rows,
                  cols=cols, shift=shift, cycles=self.dma_cycles(rows * cols * self.eb),
                  operands={"tile": [rows, cols]}, **fields)

    def acc_add(self, rec, key, rows, cols, row_stride, first, shift):
        grad = self.region(f"{key}.gradient")
        resident = grad.size <= self.acc_bytes
        cycles = rows * cols
        if not resident:
            cycles = max(cycles, self.dma_cycles(2 * rows * cols * grad.elem_bytes))
        self.emit(Opcode.ACC_ADD, rec, Stage.ACCUMULATE, offset=0,
                  grad_addr=grad.offset + first * grad.elem_bytes, rows=rows, cols=cols,
                  stride=row_stride, shift=shift, flags=int(Flag.RESIDENT) if resident else 0,
                  cycles=cycles, operands={"gradient": key, "tile": [rows, cols]})

    # -- layers ---------------------------------------------------------------

    def build(self):
        layers = self.plan.layers
        for rec in layers:
            self.forward(rec)
            self.emit(Opcode.SYNC, rec, Stage.FORWARD)
        if self.training:
            for rec in reversed(layers):
                if rec["need_backward"]:
                    before = len(self.out)
                    self.backward(rec)
                    if len(self.out) > before:
                        self.emit(Opcode.SYNC, rec, Stage.BACKWARD_DATA)
            for rec in layers:
                self.update(rec)
        self.emit(Opcode.END, None, Stage.SETUP, flags=int(Flag.LAST))
        return self.out

    def forward(self, rec):
        t = rec["type"]
        if t in ("Input", "Data"):
            labels = [r for r in (f"{top}.data" for top in rec["tops"])
                      if self.has(r) and self.region(r).kind == "label"]
            data = self.region(f"{rec['tops'][0]}.data")
            nbytes = data.size + sum(self.region(r).size for r in labels)
            self.emit(Opcode.HOST, rec, Stage.HOST, func=int(HostOp.INPUT), addr=data.offset,
                      count=nbytes, label_addr=self.region(labels[0]).offset if labels else 0,
                      cycles=nbytes / self.host_rate, operands={"blobs": rec["tops"]})
        elif t in ("Convolution", "InnerProduct"):
            self.gemm_forward(rec)
        elif t == "Pooling":
            self.pool(rec, backward=False)
        elif t in ("ReLU", "Sigmoid", "TanH"):
            op = {"ReLU": EltwiseOp.RELU_FWD, "Sigmoid": EltwiseOp.SIGMOID_FWD,
                  "TanH": EltwiseOp.TANH_FWD}[t]
            src = self.region(f"{rec['bottoms'][0]}.data")
            dst = self.region(f"{rec['tops'][0]}.data")
            count = math.prod(src.shape)
            slope = round(rec.get("negative_slope", 0.0) * (1 << 16))
            self.emit(Opcode.ELTWISE, rec, Stage.FORWARD, func=int(op), src=src.offset,
                      dst=dst.offset, count=count, slope=slope,
                      shift=self.frac(rec["bottoms"][0]) - self.frac(rec["tops"][0]),
                      cycles=count + 5 + self.dma_cycles(2 * src.size))
        elif t in HOST_TYPES:
            self.host_layer(rec)
        # Split, Flatten, Dropout (inference): aliases, no command.

    def host_layer(self, rec):
        op = {"Softmax": HostOp.SOFTMAX, "SoftmaxWithLoss": HostOp.SOFTMAX_LOSS,
              "Accuracy": HostOp.ACCURACY}[rec["type"]]
        src = self.region(f"{rec['bottoms'][0]}.data")
        label = (self.region(f"{rec['bottoms'][1]}.data").offset
                 if len(rec["bottoms"]) > 1 else 0)
        diff = 0
        nbytes = src.size
        if self.training and rec["bottom_need_backward"] and rec["bottom_need_backward"][0]:
            d = self.region(f"{rec['bottoms'][0]}.diff")
            diff, nbytes = d.offset, nbytes + d.size
        self.emit(Opcode.HOST, rec, Stage.HOST, func=int(op), addr=src.offset,
                  diff_addr=diff, count=src.size, label_addr=label,
                  cycles=nbytes / self.host_rate)

    def geometry(self, rec, unit, stage=Stage.FORWARD):
        c = rec["channels"]
        self.emit(Opcode.SET_GEOMETRY, rec, stage, unit=int(unit), channels=c,
                  height=rec["in_hw"][0], width=rec["in_hw"][1], kernel_h=rec["kernel"][0],
                  kernel_w=rec["kernel"][1], stride_h=rec["stride"][0],
                  stride_w=rec["stride"][1], pad_h=rec["pad"][0], pad_w=rec["pad"][1],
                  out_h=rec["out_hw"][0], out_w=rec["out_hw"][1], images=rec["images"],
                  group=rec.get("group", 1), out_channels=rec.get("num_output", c))

    def bias_shift(self, rec):
        """Left shift of the bias onto the accumulator's frac (the plan keeps it >= 0)."""
        if not rec["bias"]:
            return 0
        return (self.frac(f"{rec['name']}/0") + self.frac(rec["bottoms"][0])
                - self.frac(f"{rec['name']}/1"))

    def weight_fields(self, rec, transpose=False):
        w = self.region(f"{rec['name']}/0.weight")
        k = math.prod(w.shape[1:])

        def fields(g, r0, rr, c0, cc):
            # A tile rows r0.. cols c0.. of W (or W^T) of group g.
            base = g * (w.shape[0] // rec.get("group", 1))
            if transpose:
                return {"addr": w.offset + ((base + c0) * k + r0) * self.eb,
                        "stride": k * self.eb, "flags": int(Flag.TRANSPOSE_B)}
            return {"addr": w.offset + ((base + r0) * k + c0) * self.eb, "stride": k * self.eb}
        return fields

    def gemm_geometry(self, rec, stage=Stage.FORWARD):
        """SET_GEOMETRY for a Convolution, or an InnerProduct seen as a 1x1
        convolution of ``K`` channels on a 1x1 map per image, so both move
        their tiles with IM2COL/FMAP (element-granular, any shape)."""
        if rec["type"] == "Convolution":
            self.geometry(rec, Unit.LINE_BUFFER, stage)
            return
        self.emit(Opcode.SET_GEOMETRY, rec, stage, unit=int(Unit.LINE_BUFFER),
                  channels=rec["k"], height=1, width=1, kernel_h=1, kernel_w=1, stride_h=1,
                  stride_w=1, pad_h=0, pad_w=0, out_h=1, out_w=1, images=rec["m"], group=1,
                  out_channels=rec["num_output"])

    def tiled_gemm(self, rec, stage, dims, *, load_a, load_b, output, bias=None):
        """``C = A @ B`` per group on array-sized tiles; the caller's hooks emit
        the moves: ``load_a(g, m0, mm, k0, kk, offset)`` (one block of ``rows``
        A rows), ``load_b(g, k0, kk, n0, nn)`` (returns the B offset),
        ``output(g, m0, mm, n0, nn, c_offset)`` and ``bias(g, m0)`` (GEMM
        fields for the tile's last k chunk, or None).

        Per group, C holds up to ``c_depth`` rows of one block of ``cols``
        columns. A's blocks stay resident across all column blocks when every
        block of the pass fits half the A buffer; otherwise K is split into
        chunks reloaded per column block. Each B tile (``tk x cols``) is
        loaded once and used by every row block; loads alternate buffer
        halves so the DMA fills one while the array reads the other.
        """
        rows, cols = self.plan.rows, self.plan.cols
        a_words, b_words, c_words = buffer_depths(self.plan)
        groups, m_g, k_g, n = dims
        m_pass = min(m_g, max(rows, c_words // rows * rows))
        for g in range(groups):
            for ms in range(0, m_g, m_pass):
                mm_pass = min(m_pass, m_g - ms)
                blocks = [(ms + i, min(rows, mm_pass - i)) for i in range(0, mm_pass, rows)]
                tk = min(k_g, b_words // 2, max(1, a_words // 2 // len(blocks)))
                if 1 < tk < k_g:
                    tk -= tk % 2        # chunks start on words of row-major operands
                resident = tk == k_g
                for n0 in range(0, n, cols):
                    nn = min(cols, n - n0)
                    for k0 in range(0, k_g, tk):
                        kk = min(tk, k_g - k0)
                        a_half = (k0 // tk) % 2 * (a_words // 2)
                        if not resident or n0 == 0:
                            for i, (m0, mm) in enumerate(blocks):
                                load_a(g, m0, mm, k0, kk, (a_half + i * kk) * rows)
                        b_off = load_b(g, k0, kk, n0, nn)
                        last = k0 + kk == k_g
                        for i, (m0, mm) in enumerate(blocks):
                            gflags = 0 if k0 == 0 else Flag.ACCUMULATE
                            extra = bias(g, m0) if bias is not None and last else None
                            if extra:
                                gflags |= Flag.BIAS
                            self.emit(Opcode.GEMM, rec, stage,
                                      a_offset=(a_half + i * kk) * rows, b_offset=b_off,
                                      c_offset=(m0 - ms) * cols, m=mm, n=nn, k=kk,
                                      flags=int(gflags), macs=mm * nn * kk,
                                      cycles=max(kk, rows) + rows + cols + 4,
                                      operands={"tile": [mm, kk, nn], "at": [g, m0, k0, n0]},
                                      **(extra or {}))
                    for m0, mm in blocks:
                        output(g, m0, mm, n0, nn, (m0 - ms) * cols)

    def gemm_forward(self, rec):
        """``Y = W * im2col(X) + b``: A is W (plain loads of word-aligned
        rows), B an IM2COL tile, C stored as a feature-map tile."""
        self.gemm_geometry(rec)
        dims = layer_gemms(rec)["forward"]
        _, m_g, k_g, _ = dims
        x = self.region(f"{rec['bottoms'][0]}.data")
        y = self.region(f"{rec['tops'][0]}.data")
        w = self.region(f"{rec['name']}/0.weight")
        bias = self.region(f"{rec['name']}/1.weight") if rec["bias"] else None
        shift = (self.frac(f"{rec['name']}/0") + self.frac(rec["bottoms"][0])
                 - self.frac(rec["tops"][0]))
        transposed = rec["type"] == "InnerProduct" and rec["transpose"]
        stage = Stage.FORWARD

        def load_a(g, m0, mm, k0, kk, offset):
            row0 = g * m_g + m0
            if transposed:      # W is K x O: memory rows are W's columns
                fields = {"addr": w.offset + (k0 * w.pitch + row0) * self.eb,
                          "stride": w.pitch * self.eb, "flags": int(Flag.TRANSPOSE_A)}
            else:
                fields = {"addr": w.offset + (row0 * w.pitch + k0) * self.eb,
                          "stride": w.pitch * self.eb}
            self.load_at(rec, stage, Buffer.A, offset, mm, kk, "A", **fields)

        def load_b(g, k0, kk, n0, nn):
            return self.load(rec, stage, Buffer.B, kk, nn, "B", addr=x.offset,
                             k0=g * k_g + k0, col0=n0, flags=int(Flag.IM2COL))

        def output(g, m0, mm, n0, nn, c_off):
            self.store(rec, stage, mm, nn, shift, addr=y.offset, k0=g * m_g + m0, col0=n0,
                       flags=int(Flag.FMAP), offset=c_off)

        def bias_fields(g, m0):
            return {"bias_addr": bias.offset + (g * m_g + m0) * self.eb,
                    "bias_shift": self.bias_shift(rec)}
        self.tiled_gemm(rec, stage, dims, load_a=load_a, load_b=load_b, output=output,
                        bias=bias_fields if bias is not None else None)

    def load_at(self, rec, stage, buf, offset, rows, cols, operand, **fields):
        self.emit(Opcode.DMA_LOAD, rec, stage, func=int(buf), offset=offset, rows=rows,
                  cols=cols, cycles=self.dma_cycles(rows * cols * self.eb),
                  operands={"operand": operand, "buffer": buf.name, "tile": [rows, cols]},
                  **fields)

    def pool(self, rec, *, backward):
        stage = Stage.BACKWARD_DATA if backward else Stage.FORWARD
        # Backward too: the unit holds the last geometry set, another layer's.
        self.geometry(rec, Unit.POOL, stage)
        kind = PoolKind.MAX if rec["pool"] == "MAX" else PoolKind.AVE
        bottom, top = rec["bottoms"][0], rec["tops"][0]
        c, n = rec["channels"], rec["images"]
        h, w = rec["in_hw"]
        oh, ow = rec["out_hw"]
        kh, kw = rec["kernel"]
        part = "diff" if backward else "data"
        src = self.region(f"{top if backward else bottom}.{part}")
        dst = self.region(f"{bottom if backward else top}.{part}")
        # The plan keeps argmax indices only where a gradient flows back.
        index = (self.region(f"{rec['name']}.index").offset
                 if self.training and kind == PoolKind.MAX and rec["need_backward"] else 0)
        # Channel tiles: the line buffer (forward) or the scratch map (backward).
        blocks = self.plan.bram.get("pool_scratch" if backward else "line_buffer", 1)
        per_channel = (h * w) if backward else (kh + rec["stride"][0]) * (w + 2 * rec["pad"][1])
        ct = max(1, min(c, blocks * 4608 // (per_channel * self.eb)))
        flags = int(Flag.TRAINING) if self.training and not backward else 0
        op = Opcode.POOL_BWD if backward else Opcode.POOL_FWD
        shift = (self.frac(top, "diff") - self.frac(bottom, "diff") if backward
                 else self.frac(bottom) - self.frac(top))
        for c0 in range(0, c, ct):
            cc = min(ct, c - c0)
            ins, outs = n * cc * h * w, n * cc * oh * ow
            if backward and kind == PoolKind.AVE:
                cycles = outs * (kh * kw + 1) + ins
            elif backward:
                cycles = outs + ins
            else:
                cycles = max(ins, outs) + 2
            cycles = max(cycles, self.dma_cycles((ins + outs) * self.eb))
            self.emit(op, rec, stage, func=int(kind), src=src.offset, dst=dst.offset,
                      index_addr=index, c0=c0, channels=cc, n0=0, images=n, shift=shift,
                      flags=flags, cycles=cycles, operands={"channels": [c0, cc]})

    # -- backward ---------------------------------------------------------------

    def backward(self, rec):
        t = rec["type"]
        down = rec["bottom_need_backward"]
        if t in ("Convolution", "InnerProduct"):
            self.gemm_backward(rec)
        elif t == "Pooling" and down[0]:
            self.pool(rec, backward=True)
        elif t in ("ReLU", "Sigmoid", "TanH") and down[0]:
            op = {"ReLU": EltwiseOp.RELU_BWD, "Sigmoid": EltwiseOp.SIGMOID_BWD,
                  "TanH": EltwiseOp.TANH_BWD}[t]
            top, bottom = rec["tops"][0], rec["bottoms"][0]
            dy, dx = self.region(f"{top}.diff"), self.region(f"{bottom}.diff")
            # As Caffe: ReLU's gradient gates on the forward input, Sigmoid's
            # and TanH's use the forward output.
            aux = self.region(f"{bottom if t == 'ReLU' else top}.data")
            count = math.prod(dy.shape)
            self.emit(Opcode.ELTWISE, rec, Stage.BACKWARD_DATA, func=int(op), src=dy.offset,
                      aux=aux.offset, dst=dx.offset, count=count,
                      slope=round(rec.get("negative_slope", 0.0) * (1 << 16)),
                      shift=self.frac(top, "diff") - self.frac(bottom, "diff"),
                      cycles=count + 5 + self.dma_cycles(3 * dy.size))
        elif t == "Split" and down[0]:
            bottom = self.region(f"{rec['bottoms'][0]}.diff")
            tops = [self.region(f"{top}.diff") for top in rec["tops"]
                    if self.has(f"{top}.diff")]
            count = math.prod(bottom.shape)
            if not tops:
                self.emit(Opcode.ELTWISE, rec, Stage.BACKWARD_DATA, func=int(EltwiseOp.ZERO),
                          dst=bottom.offset, count=count, cycles=count)
            src = tops[0].offset if tops else bottom.offset
            for i, top in enumerate(tops[1:] or tops[:1]):
                op = EltwiseOp.ADD if len(tops) > 1 else EltwiseOp.COPY
                self.emit(Opcode.ELTWISE, rec, Stage.BACKWARD_DATA, func=int(op),
                          src=src if i == 0 else bottom.offset, aux=top.offset,
                          dst=bottom.offset, count=count,
                          cycles=count + 5 + self.dma_cycles(3 * bottom.size))

    def weight_geometry(self, rec, w):
        """SET_GEOMETRY that makes FMAP tiles of the weight matrix: channel
        ``kd`` (a column of W), position ``m`` (a row), so an FMAP load into A
        reads W^T blocks at any alignment."""
        self.emit(Opcode.SET_GEOMETRY, rec, Stage.BACKWARD_DATA, unit=int(Unit.LINE_BUFFER),
                  channels=1, height=1, width=1, kernel_h=1, kernel_w=1, stride_h=1,
                  stride_w=1, pad_h=0, pad_w=0, out_h=1, out_w=1, images=w.shape[0],
                  group=1, out_channels=w.pitch)

    def gemm_backward(self, rec):
        """Backward of a Convolution or InnerProduct (a 1x1 convolution here).

        Weights: ``dW = dY * im2col(X)^T`` with A an FMAP tile of dY and B an
        IM2COL tile transposed, K the batch's positions; each C tile is added
        into the gradient (ACC_ADD). Bias: ACC_BIAS sums dY per channel. Data:
        ``dX = col2im(W^T * dY)`` into a zeroed dX, A an FMAP tile of W under
        the weight geometry, B an FMAP tile of dY, C stored with COL2IM.
        """
        gemms = layer_gemms(rec)
        top, bottom = rec["tops"][0], rec["bottoms"][0]
        dy = self.region(f"{top}.diff")
        x = self.region(f"{bottom}.data")
        wkey = f"{rec['name']}/0"
        w = self.region(f"{wkey}.weight")
        params = rec["params"]
        groups, m_g, k_g, n = gemms["forward"]
        if params[0]["learn"]:
            self.gemm_geometry(rec, Stage.BACKWARD_WEIGHTS)
            stage = Stage.BACKWARD_WEIGHTS
            grad = self.region(f"{wkey}.gradient")
            shift = self.frac(top, "diff") + self.frac(bottom) - self.frac(wkey, "diff")

            def load_a(g, m0, mm, k0, kk, offset):     # dY: channels m0.., positions k0..
                self.load_at(rec, stage, Buffer.A, offset, mm, kk, "A", addr=dy.offset,
                             k0=g * m_g + m0, col0=k0, flags=int(Flag.FMAP))

            def load_b(g, k0, kk, n0, nn):     # im2col(X)^T: positions k0.., rows n0..
                return self.load(rec, stage, Buffer.B, kk, nn, "B", addr=x.offset,
                                 k0=g * k_g + n0, col0=k0,
                                 flags=int(Flag.IM2COL | Flag.TRANSPOSE_B))

            def output(g, m0, mm, n0, nn, c_off):
                row0 = g * m_g + m0
                self.emit(Opcode.ACC_ADD, rec, Stage.ACCUMULATE, offset=c_off,
                          grad_addr=grad.offset + (row0 * grad.pitch + n0) * grad.elem_bytes,
                          rows=mm, cols=nn, stride=grad.pitch, shift=shift,
                          cycles=mm * nn * 3, operands={"gradient": wkey, "tile": [mm, nn]})
            self.tiled_gemm(rec, stage, (groups, m_g, n, k_g),
                            load_a=load_a, load_b=load_b, output=output)
        if len(params) > 1 and params[1]["learn"]:
            bkey = f"{rec['name']}/1"
            grad = self.region(f"{bkey}.gradient")
            channels = rec["num_output"]
            if rec["type"] == "InnerProduct":   # (outer rows) x channels, any axis
                images, positions = rec["m"], 1
            else:
                images = dy.shape[0]
                positions = math.prod(dy.shape) // channels // images
            self.emit(Opcode.ACC_BIAS, rec, Stage.ACCUMULATE, src=dy.offset,
                      grad_addr=grad.offset, channels=channels, positions=positions,
                      images=images, shift=self.frac(top, "diff") - self.frac(bkey, "diff"),
                      cycles=max(channels * positions * images, self.dma_cycles(dy.size)))
        if rec["bottom_need_backward"][0]:
            stage = Stage.BACKWARD_DATA
            dx = self.region(f"{bottom}.diff")
            shift = self.frac(wkey) + self.frac(top, "diff") - self.frac(bottom, "diff")
            count = math.prod(dx.shape)
            self.emit(Opcode.ELTWISE, rec, stage, func=int(EltwiseOp.ZERO), dst=dx.offset,
                      count=count + count % 2, cycles=self.dma_cycles(dx.size))
            if rec["type"] == "InnerProduct" and rec["transpose"]:
                raise PlanError("InnerProduct with transpose: true cannot be trained on the "
                                "hardware yet", layer=rec["name"])

            geometry = [None]

            def use(kind):
                # SET_GEOMETRY retires at once and a running move keeps its
                # own, so switching between W^T and dY tiles is cheap.
                if geometry[0] != kind:
                    geometry[0] = kind
                    if kind == "weights":
                        self.weight_geometry(rec, w)
                    else:
                        self.gemm_geometry(rec, stage)

            def load_a(g, m0, mm, k0, kk, offset):     # W^T: kdim rows m0.., channels k0..
                use("weights")
                self.load_at(rec, stage, Buffer.A, offset, mm, kk, "A", addr=w.offset,
                             k0=m0, col0=g * m_g + k0, flags=int(Flag.FMAP))

            def load_b(g, k0, kk, n0, nn):     # dY: channels k0.., positions n0..
                use("layer")
                return self.load(rec, stage, Buffer.B, kk, nn, "B", addr=dy.offset,
                                 k0=g * m_g + k0, col0=n0, flags=int(Flag.FMAP))

            def output(g, m0, mm, n0, nn, c_off):
                use("layer")
                self.store(rec, stage, mm, nn, shift, addr=dx.offset, k0=g * k_g + m0,
                           col0=n0, flags=int(Flag.COL2IM), offset=c_off)
            self.tiled_gemm(rec, stage, (groups, k_g, m_g, n),
                            load_a=load_a, load_b=load_b, output=output)

    def sgd_fracs(self, key):
        """``(weight, history, grad, diff)`` fracs of a parameter blob's update:
        the calibrated weight and gradient formats; history (about lr / (1 -
        momentum) times the gradient) three bits finer than the gradient,
        within what the update engine accepts."""
        wf, gf = self.frac(key), self.frac(key, "diff")
        hf = min(max(gf + 3, wf), wf + 32)
        df = min(max(gf, hf - 3 - (44 - 18)), hf - 3 + 15)
        fracs = dict(weight_frac=wf, history_frac=hf, grad_frac=gf, diff_frac=df)
        if not sgd_fracs_legal(**fracs, grad_bits=self.plan.grad_bits):
            raise PlanError(f"{key}: weight Q.{wf} and gradient Q.{gf} formats are too far "
                            f"apart for the update engine")
        return fracs

    def update(self, rec):
        for p in rec["params"]:
            if not p["learn"]:
                continue
            w = self.region(f"{p['key']}.weight")
            h = self.region(f"{p['key']}.history")
            g = self.region(f"{p['key']}.gradient")
            count = w.size // w.elem_bytes     # stored elements, row padding included
            count += count % 2
            self.emit(Opcode.SGD_UPDATE, rec, Stage.UPDATE, weight_addr=w.offset,
                      history_addr=h.offset, grad_addr=g.offset, count=count,
                      lr_mult=isa.to_q88(p["lr_mult"], f"{p['key']} lr_mult"),
                      decay_mult=isa.to_q88(p["decay_mult"], f"{p['key']} decay_mult"),
                      **self.sgd_fracs(p["key"]),
                      cycles=max(count + 6, self.dma_cycles(2 * (w.size + h.size) + 2 * g.size)),
                      operands={"param": p["key"]})
