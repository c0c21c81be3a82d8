"""The accelerator as a NumPy model: executes ``runtime.isa`` commands on a
tensor-memory image, bit for bit as the SoC does.

:class:`Machine` holds what the SoC holds (tensor memory, the A/B/C and bias
scratchpads, the selected geometries) and applies each command with the
``fecaffe_hw.fixedpoint`` function its core is verified against: the DMA's
copies and requantising stores, ``gemm`` for the array (wrapping at
``acc_width``), ``tiles`` for IM2COL/FMAP/COL2IM, ``activation`` for
ELTWISE, ``pooling`` for POOL_FWD. HOST commands call back into the host
side (:class:`~fecaffe_hw.runtime.host_ops.HostOps`), exactly as the
sequencer stops and waits for the host.

The model is the "expected" of ``fecaffe-hw sim``: the hardware's memory
after a schedule must equal the machine's word for word. It checks the
legality rules the sequencer checks and raises :class:`MachineError` for a
command the hardware would flag as bad, so a compiler bug shows up here
first, with the command's index and layer.
"""

import dataclasses

import numpy as np

from ..compiler.plan import buffer_depths
from ..errors import FecaffeError
from ..fixedpoint import Format, gemm, quantize, requantize, wrap
from ..fixedpoint import Lfsr, activation, pooling, tiles, update
from ..fixedpoint.sgd import SgdFormats, norm_multiplier
from ..runtime import isa
from ..runtime.isa import Buffer, EltwiseOp, Flag, Opcode, PoolKind, Unit

__all__ = ["Machine", "MachineError", "sgd_registers", "ELTWISE_IN_FRAC", "ELTWISE_AUX_FRAC"]

#: Sigmoid/TanH formats of a plan without tables (``Sequencer`` defaults):
#: forward input frac and backward ``y`` frac, which the ISA does not carry.
ELTWISE_IN_FRAC = 12
ELTWISE_AUX_FRAC = 15
_DATA = Format(16, 0)
#: The ISA's ReLU ``slope`` is ``negative_slope * 2**16`` (``EltwiseEngine``'s format).
SLOPE_FORMAT = Format(25, 16)


def sgd_registers(*, lr, momentum, weight_decay, iter_size=1):
    """``{rate, momentum, decay, norm_mul}``: the SGD_RATE, SGD_MOMENTUM,
    SGD_DECAY and SGD_NORM values for a solver's settings (the constant
    formats are ``SgdFormats``' defaults, which the update engine builds)."""
    formats = {f.name: f.default for f in dataclasses.fields(SgdFormats)
               if f.name in ("rate", "momentum", "decay")}
    values = {name: int(quantize(value, formats[name]))
              for name, value in (("rate", lr), ("momentum", momentum),
                                  ("decay", weight_decay))}
    values["norm_mul"] = norm_multiplier(iter_size)
    return values


class MachineError(FecaffeError):
    """A command the hardware would refuse (bad command) or cannot run yet."""


class Machine:
    """A NumPy SoC for ``plan``: ``memory`` (uint8, tensor memory), scratchpads
    shaped as the SoC's (``rows`` x ``cols`` array, depths as ``fecaffe_hw.soc``
    sizes them)."""

    def __init__(self, plan, *, memory_bytes=None):
        if plan.data_width != 16:
            raise MachineError(f"The model runs 16-bit plans, not {plan.data_width}-bit ones")
        self.plan = plan
        self.rows, self.cols, self.acc_width = plan.rows, plan.cols, plan.acc_width
        size = memory_bytes or plan.memory["used"]
        self.memory = np.zeros(-(-size // 4) * 4, dtype=np.uint8)
        self.depths = buffer_depths(plan)
        a_depth, b_depth, c_depth = self.depths
        self.a = np.zeros((a_depth, self.rows), dtype=np.int64)
        self.b = np.zeros((b_depth, self.cols), dtype=np.int64)
        self.c = np.zeros((c_depth, self.cols), dtype=np.int64)
        self.bias = np.zeros(max(2, self.rows), dtype=np.int64)
        self.conv_geometry = None
        self.pool_geometry = None
        eltwise = plan.units.get("eltwise", {})
        self.grad_bits = plan.grad_bits
        self.set_solver()
        self.in_frac = eltwise.get("in_frac", ELTWISE_IN_FRAC)
        self.aux_frac = eltwise.get("aux_frac", ELTWISE_AUX_FRAC)
        self.tables = tuple(eltwise.get("tables", ()))
        self.executed = 0

    def set_solver(self, *, lr=0.01, momentum=0.9, weight_decay=0.0005, iter_size=1,
                   seed=1):
        """The SGD CSRs (:func:`sgd_registers`) and the rounding LFSR's seed, as
        the host writes them (defaults: Caffe's LeNet solver)."""
        self.sgd = sgd_registers(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                 iter_size=iter_size)
        self.lfsr = Lfsr(seed)

    # -- tensor memory -------------------------------------------------------

    def int16(self, addr, count):
        """A writable int16 view of ``count`` elements at byte ``addr``."""
        if addr % 2 or addr < 0 or addr + 2 * count > len(self.memory):
            raise MachineError(f"{count} int16 at byte {addr:#x} leave tensor memory "
                               f"({len(self.memory)} bytes) or are misaligned")
        return self.memory[addr:addr + 2 * count].view(np.int16)

    def read(self, addr, nbytes):
        return self.memory[addr:addr + nbytes].tobytes()

    def write(self, addr, data):
        data = np.frombuffer(bytes(data), dtype=np.uint8)
        if addr < 0 or addr + len(data) > len(self.memory):
            raise MachineError(f"{len(data)} bytes at {addr:#x} leave tensor memory")
        self.memory[addr:addr + len(data)] = data

    def words(self):
        """Tensor memory as little-endian 32-bit words."""
        return self.memory.view(np.uint32)

    # -- commands ------------------------------------------------------------

    def run(self, commands, host=None):
        """Execute ``commands`` (``schedule.Command`` s or ``(opcode, fields)``)."""
        for index, command in enumerate(commands):
            if hasattr(command, "words"):
                opcode, fields = isa.decode(command.words())
                where = f"command {index} ({opcode.name}, layer {command.layer or '-'})"
            else:
                opcode, fields = command
                fields = dict(fields)
                where = f"command {index} ({Opcode(opcode).name})"
            try:
                self.execute(opcode, fields, host)
            except MachineError as error:
                raise MachineError(f"{where}: {error}") from None

    def execute(self, opcode, fields, host=None):
        f = dict(fields)
        flags = Flag(f.get("flags", 0))
        handler = {
            Opcode.NOP: None, Opcode.SYNC: None, Opcode.END: None,
            Opcode.SET_GEOMETRY: self._set_geometry,
            Opcode.DMA_LOAD: self._dma, Opcode.DMA_STORE: self._dma,
            Opcode.GEMM: self._gemm, Opcode.ELTWISE: self._eltwise,
            Opcode.POOL_FWD: self._pool_forward, Opcode.POOL_BWD: self._pool_backward,
            Opcode.ACC_ADD: self._acc_add, Opcode.ACC_BIAS: self._acc_bias,
            Opcode.SGD_UPDATE: self._sgd_update,
        }.get(Opcode(opcode), False)
        if Opcode(opcode) == Opcode.HOST:
            if host is None:
                raise MachineError("a HOST command needs the host side")
            host(f, self.read, self.write)
        elif handler is False:
            raise MachineError(f"{Opcode(opcode).name} is not implemented by the hardware yet")
        elif handler is not None:
            handler(Opcode(opcode), f, flags)
        self.executed += 1

    def _set_geometry(self, opcode, f, flags):
        if f["unit"] == Unit.LINE_BUFFER:
            self.conv_geometry = tiles.ConvGeometry.from_fields(f)
        else:
            self.pool_geometry = dict(f)

    # DMA_LOAD / DMA_STORE ----------------------------------------------------

    def _lanes(self, buf):
        return self.rows if buf == Buffer.A else self.cols

    def _place(self, buf, word, tile):
        """Write an operand-view tile (rows x cols) into buffer ``buf`` at ``word``:
        A holds columns (element (r, c) is word ``word + c``, lane ``r``), B and
        C rows."""
        tile = np.asarray(tile, dtype=np.int64)
        r, c = tile.shape
        if buf == Buffer.A:
            self._check_extent("A", word + c, len(self.a), r, self.rows)
            self.a[word:word + c, :r] = tile.T
        elif buf == Buffer.B:
            self._check_extent("B", word + r, len(self.b), c, self.cols)
            self.b[word:word + r, :c] = tile
        else:
            self._check_extent("C", word + r, len(self.c), c, self.cols)
            self.c[word:word + r, :c] = tile

    @staticmethod
    def _check_extent(name, end_word, depth, lanes, width):
        if end_word > depth or lanes > width:
            raise MachineError(f"tile of {lanes} lanes to word {end_word} leaves buffer "
                               f"{name} ({width} lanes x {depth} words)")

    def _dma(self, opcode, f, flags):
        if flags & Flag.RESIDENT:
            return
        buf = Buffer(f["func"])
        lanes = self._lanes(buf)
        if f["offset"] % lanes:
            raise MachineError(f"offset {f['offset']} is not a multiple of buffer "
                               f"{buf.name}'s {lanes} lanes")
        word = f["offset"] // lanes
        rows, cols, shift = f["rows"], f["cols"], f["shift"]
        store = opcode == Opcode.DMA_STORE
        if flags & (Flag.IM2COL | Flag.FMAP | Flag.COL2IM):
            return self._fmap_dma(store, buf, word, f, flags)
        flip = bool(flags & (Flag.TRANSPOSE_A | Flag.TRANSPOSE_B))
        mem_rows, mem_cols = (cols, rows) if flip else (rows, cols)
        if f["addr"] % 4 or f["stride"] % 4:
            raise MachineError("DMA rows must start on 32-bit words")
        index = (f["addr"] // 2 + np.arange(mem_rows)[:, None] * (f["stride"] // 2)
                 + np.arange(mem_cols)[None, :])
        elements = self.memory.view(np.int16)
        if index.size and index.max() >= len(elements):
            raise MachineError(f"DMA region at {f['addr']:#x} leaves tensor memory")
        if not store:
            tile = elements[index].astype(np.int64)
            tile = tile.T if flip else tile
            if buf == Buffer.C:
                tile = tile << shift
            elif shift:
                raise MachineError("a load into A or B cannot shift")
            self._place(buf, word, tile)
            return
        if buf != Buffer.C:
            raise MachineError("stores read the C buffer only")
        if (mem_cols * 16) % 32:
            raise MachineError(f"a stored row of {mem_cols} elements does not fill whole words")
        self._check_extent("C", word + rows, len(self.c), cols, self.cols)
        values = requantize(self.c[word:word + rows, :cols], shift, _DATA)
        elements[index] = (values.T if flip else values).astype(np.int16)

    def _fmap_dma(self, store, buf, word, f, flags):
        g = self.conv_geometry
        if g is None:
            raise MachineError("IM2COL/FMAP/COL2IM before any SET_GEOMETRY on the line buffer")
        x_count = g.images * g.channels * g.height * g.width
        y_count = g.images * g.out_channels * g.out_h * g.out_w
        rows, cols, k0, col0 = f["rows"], f["cols"], f["k0"], f["col0"]
        transpose_b = bool(flags & Flag.TRANSPOSE_B)
        if not store:
            if flags & Flag.IM2COL:
                x = self.int16(f["addr"], x_count).reshape(
                    g.images, g.channels, g.height, g.width)
                # TRANSPOSE_B: the operand (rows x cols) is the im2col tile's transpose.
                if transpose_b:
                    tile = tiles.im2col_tile(x, g, k0, col0, cols, rows).T
                else:
                    tile = tiles.im2col_tile(x, g, k0, col0, rows, cols)
            elif flags & Flag.FMAP:
                y = self.int16(f["addr"], y_count).reshape(
                    g.images, g.out_channels, g.out_h, g.out_w)
                tile = tiles.fmap_tile(y, g, k0, col0, rows, cols)
            else:
                raise MachineError("COL2IM is a store")
            if buf == Buffer.C:
                raise MachineError("IM2COL/FMAP load into A or B")
            self._place(buf, word, tile)
            return
        if buf != Buffer.C or flags & Flag.IM2COL:
            raise MachineError("FMAP/COL2IM stores read the C buffer")
        self._check_extent("C", word + rows, len(self.c), cols, self.cols)
        acc = self.c[word:word + rows, :cols]
        if flags & Flag.FMAP:
            y = self.int16(f["addr"], y_count).reshape(
                g.images, g.out_channels, g.out_h, g.out_w)
            tiles.fmap_store(y, g, acc, f["shift"], k0, col0)
        else:
            x = self.int16(f["addr"], x_count).reshape(g.images, g.channels, g.height, g.width)
            tiles.col2im_add(x, g, acc, f["shift"], k0, col0)

    # GEMM --------------------------------------------------------------------

    def _gemm(self, opcode, f, flags):
        m, n, k = f["m"], f["n"], f["k"]
        if not (1 <= m <= self.rows and 1 <= n <= self.cols and k >= 1):
            raise MachineError(f"GEMM {m} x {n} x {k} does not fit the "
                               f"{self.rows} x {self.cols} array")
        offsets = []
        for name, lanes in (("a_offset", self.rows), ("b_offset", self.cols),
                            ("c_offset", self.cols)):
            if f[name] % lanes:
                raise MachineError(f"{name} {f[name]} is not a multiple of {lanes}")
            offsets.append(f[name] // lanes)
        a0, b0, c0 = offsets
        if a0 + k > len(self.a) or b0 + k > len(self.b) or c0 + m > len(self.c):
            raise MachineError("GEMM operands leave their buffers")
        a = self.a[a0:a0 + k, :m].T
        b = self.b[b0:b0 + k, :n]
        result = gemm(a, b, self.acc_width).astype(np.int64)
        if flags & Flag.ACCUMULATE:
            result = result + self.c[c0:c0 + m, :n]
        if flags & Flag.BIAS:
            bias = self.int16(f["bias_addr"], m).astype(np.int64) << f["bias_shift"]
            result = result + bias[:, None]
        self.c[c0:c0 + m, :n] = wrap(result, self.acc_width)

    # ELTWISE -----------------------------------------------------------------

    def _eltwise(self, opcode, f, flags):
        count, shift = f["count"], f["shift"]
        if count == 0 or count % 2 or f["src"] % 4 or f["dst"] % 4 or f["aux"] % 4:
            raise MachineError("ELTWISE needs an even count and word-aligned addresses")
        op = EltwiseOp(f["func"])
        table = isa.ELTWISE_TABLE.get(op)
        if table is not None and table not in self.tables:
            raise MachineError(f"ELTWISE {op.name}: the build has no {table} table")
        fmt = lambda frac: Format(16, frac)     # noqa: E731
        x = (self.int16(f["src"], count).astype(np.int64)
             if op != EltwiseOp.ZERO else np.zeros(count, np.int64))
        aux = self.int16(f["aux"], count).astype(np.int64) \
            if op in (EltwiseOp.RELU_BWD, EltwiseOp.SIGMOID_BWD, EltwiseOp.TANH_BWD,
                      EltwiseOp.ADD) else None
        base = 16    # only the difference of fracs matters where the ISA gives a shift
        slope_fmt = SLOPE_FORMAT
        if op == EltwiseOp.RELU_FWD:
            out = activation.relu_forward(x, base, f["slope"], slope_fmt, fmt(base - shift))
        elif op == EltwiseOp.RELU_BWD:
            out = activation.relu_backward(x, aux, base, f["slope"], slope_fmt,
                                           fmt(base - shift))
        elif op == EltwiseOp.SIGMOID_FWD:
            out = activation.sigmoid_forward(x, fmt(self.in_frac), fmt(self.in_frac - shift))
        elif op == EltwiseOp.TANH_FWD:
            out = activation.tanh_forward(x, fmt(self.in_frac), fmt(self.in_frac - shift))
        elif op == EltwiseOp.SIGMOID_BWD:
            out = activation.sigmoid_backward(x, aux, base, fmt(self.aux_frac),
                                              fmt(base - shift))
        elif op == EltwiseOp.TANH_BWD:
            out = activation.tanh_backward(x, aux, base, fmt(self.aux_frac), fmt(base - shift))
        elif op == EltwiseOp.ADD:
            out = requantize(x + aux, shift, _DATA)
        else:       # REQUANT, COPY, ZERO
            out = requantize(x, shift, _DATA)
        self.int16(f["dst"], count)[:] = np.asarray(out).astype(np.int16)

    # POOL_FWD ----------------------------------------------------------------

    def _pool_tile(self, opcode, f):
        """The selected pooling geometry and the command's tile, checked."""
        g = self.pool_geometry
        if g is None:
            raise MachineError(f"{opcode.name} before any SET_GEOMETRY on the pooling unit")
        c0, cc, n0, nn = f["c0"], f["channels"], f["n0"], f["images"]
        total, batch = g["channels"], g["images"]
        if c0 + cc > total or n0 + nn > batch or cc == 0 or nn == 0:
            raise MachineError(f"{opcode.name} tile leaves the map")
        return ((g["kernel_h"], g["kernel_w"]), (g["stride_h"], g["stride_w"]),
                (g["pad_h"], g["pad_w"]), g["height"], g["width"], g["out_h"], g["out_w"],
                total, batch, c0, cc, n0, nn)

    def _pool_forward(self, opcode, f, flags):
        (kernel, stride, pad, h, w, oh, ow, total, batch,
         c0, cc, n0, nn) = self._pool_tile(opcode, f)
        shift = f["shift"]
        x = self.int16(f["src"], batch * total * h * w).reshape(batch, total, h, w)
        y = self.int16(f["dst"], batch * total * oh * ow).reshape(batch, total, oh, ow)
        kind = PoolKind(f["func"])
        index_out = (kind == PoolKind.MAX and flags & Flag.TRAINING and f["index_addr"])
        out_fmt = Format(16, max(-shift, 0))
        for n in range(n0, n0 + nn):
            image = x[n, c0:c0 + cc].astype(np.int64)
            if kind == PoolKind.MAX:
                values, index = pooling.max_pool(image, kernel, stride, pad)
            else:
                values, index = pooling.ave_pool(image, kernel, stride, pad, bits=16), None
            y[n, c0:c0 + cc] = requantize(values, max(shift, 0), out_fmt)
            if index_out:
                at = f["index_addr"] + (n * total + c0) * oh * ow
                self.memory[at:at + cc * oh * ow] = np.asarray(index, np.uint8).ravel()

    def _pool_backward(self, opcode, f, flags):
        (kernel, stride, pad, h, w, oh, ow, total, batch,
         c0, cc, n0, nn) = self._pool_tile(opcode, f)
        kind = PoolKind(f["func"])
        if kind == PoolKind.MAX and not f["index_addr"]:
            raise MachineError("MAX POOL_BWD needs the indices POOL_FWD wrote")
        dy = self.int16(f["src"], batch * total * oh * ow).reshape(batch, total, oh, ow)
        dx = self.int16(f["dst"], batch * total * h * w).reshape(batch, total, h, w)
        index = (self.memory[f["index_addr"]:f["index_addr"] + batch * total * oh * ow]
                 .reshape(batch, total, oh, ow) if kind == PoolKind.MAX else None)
        for n in range(n0, n0 + nn):
            dx[n, c0:c0 + cc] = pooling.pool_backward(
                kind.name.lower(), dy[n, c0:c0 + cc],
                None if index is None else index[n, c0:c0 + cc], h, w, kernel, stride, pad,
                f["shift"])

    # ACC_ADD / ACC_BIAS / SGD_UPDATE -----------------------------------------

    def int32(self, addr, count):
        if addr % 4 or addr < 0 or addr + 4 * count > len(self.memory):
            raise MachineError(f"{count} gradient words at byte {addr:#x} leave tensor memory "
                               f"or are misaligned")
        return self.memory[addr:addr + 4 * count].view(np.int32)

    def _acc_add(self, opcode, f, flags):
        rows, cols, stride = f["rows"], f["cols"], f["stride"]
        if f["offset"] % self.cols or rows < 1 or not 1 <= cols <= self.cols or stride < cols:
            raise MachineError("ACC_ADD tile does not fit the C buffer or overlaps its rows")
        word = f["offset"] // self.cols
        self._check_extent("C", word + rows, len(self.c), cols, self.cols)
        grad = self.int32(f["grad_addr"], (rows - 1) * stride + cols)
        index = np.arange(rows)[:, None] * stride + np.arange(cols)[None, :]
        grad[index] = update.acc_add(grad[index], self.c[word:word + rows, :cols], f["shift"],
                                     self.grad_bits)

    def _acc_bias(self, opcode, f, flags):
        channels, positions, images = f["channels"], f["positions"], f["images"]
        if not (channels and positions and images):
            raise MachineError("ACC_BIAS of an empty map")
        dy = self.int16(f["src"], images * channels * positions).reshape(
            images, channels, positions)
        grad = self.int32(f["grad_addr"], channels)
        grad[:] = update.acc_bias(grad, dy, f["shift"], self.grad_bits)

    def _sgd_update(self, opcode, f, flags):
        count = f["count"]
        if count == 0 or count % 2:
            raise MachineError("SGD_UPDATE needs an even, non-zero count")
        w = self.int16(f["weight_addr"], count)
        h = self.int16(f["history_addr"], count)
        g = self.int32(f["grad_addr"], count)
        try:
            w_new, h_new, g_new = update.sgd_update_command(
                w, h, g, grad_bits=self.grad_bits, lfsr=self.lfsr,
                lr_mult=f["lr_mult"], decay_mult=f["decay_mult"], **self.sgd,
                **{k: f[k] for k in ("weight_frac", "history_frac", "grad_frac", "diff_frac")})
        except (ValueError, FecaffeError) as error:
            raise MachineError(str(error)) from None
        w[:], h[:], g[:] = w_new, h_new, g_new
