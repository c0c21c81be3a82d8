"""AXI4 slave on on-chip memory, with a latency and bandwidth model."""

from fractions import Fraction

from amaranth.hdl import Module, Signal, Mux, Const
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from .axi import AxiSignature, Burst, Resp

__all__ = ["AxiRam"]


class AxiRam(wiring.Component):
    """AXI4 slave holding ``size`` bytes in a ``lib.memory.Memory``.

    Port: ``axi`` (``In(AxiSignature(addr_width, data_width, id_width))``).
    FIXED, INCR and WRAP bursts of any size up to the data width (narrow
    beats address their byte lanes as AXI says); ``wstrb`` masks bytes.
    Beats addressed outside ``size`` answer DECERR (writes to them are
    dropped, reads return 0).

    Reads and writes proceed independently. A read burst's first beat is
    valid ``latency`` cycles (1..4096) after its AR handshake; a write's B
    response ``latency`` cycles after its last beat. Latency is pipelined:
    up to ``queue_depth`` accepted read bursts (and as many write
    responses) wait out their latency together, as in a DDR controller's
    queues; consecutive read bursts cost one idle cycle between them. Beats
    flow at ``beats_per_cycle`` (a fraction in (0, 1]: 1/2 is one beat
    every other cycle), and with ``stall_rate`` > 0 every ready and valid the
    RAM drives is also withheld at random (a 16-bit LFSR seeded with
    ``seed``), to exercise masters under back-pressure.

    As tensor memory model the defaults stand for the Arty A7's DDR3L behind
    MIG seen from a 100 MHz, 32-bit AXI port: MIG's 128-bit UI at 81 MHz
    peaks at ~1.3 GB/s, more than the 400 MB/s a 32-bit port at 100 MHz
    moves, so ``beats_per_cycle=1``; ``latency=24`` cycles from AR to the
    first beat (MIG read latency plus the clock-domain crossing). On-chip
    tensor memory uses ``latency=1``. For a 128-bit MIG port at its own
    clock, ``data_width=128`` gives the 16 bytes/cycle peak.
    """

    def __init__(self, *, size, data_width=32, addr_width=32, id_width=1, latency=24,
                 beats_per_cycle=1, queue_depth=4, stall_rate=0.0, seed=0xACE1, init=()):
        self._signature = AxiSignature(addr_width=addr_width, data_width=data_width,
                                       id_width=id_width)
        bytes_per_beat = data_width // 8
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0 \
                or size % bytes_per_beat or size > 2**addr_width:
            raise ValueError(f"Memory size must be a positive multiple of {bytes_per_beat} "
                             f"bytes within the address space, not {size!r}")
        if isinstance(latency, bool) or not isinstance(latency, int) or not 1 <= latency <= 4096:
            raise ValueError(f"Latency must be an integer in [1, 4096] cycles, not {latency!r}")
        if isinstance(queue_depth, bool) or not isinstance(queue_depth, int) \
                or not 1 <= queue_depth <= 64:
            raise ValueError(f"Queue depth must be an integer in [1, 64], not {queue_depth!r}")
        try:
            rate = Fraction(beats_per_cycle).limit_denominator(256)
        except (TypeError, ValueError):
            rate = None
        if rate is None or not 0 < rate <= 1:
            raise ValueError(f"Beats per cycle must be a fraction in (0, 1], "
                             f"not {beats_per_cycle!r}")
        if not isinstance(stall_rate, (int, float)) or not 0 <= stall_rate < 1:
            raise ValueError(f"Stall rate must be in [0, 1), not {stall_rate!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 < seed < 2**16:
            raise ValueError(f"LFSR seed must be a nonzero 16-bit integer, not {seed!r}")
        init = list(init)
        if len(init) > size // bytes_per_beat:
            raise ValueError(f"Initial contents of {len(init)} words exceed {size} bytes")
        self._size, self._latency, self._rate = size, latency, rate
        self._queue_depth = queue_depth
        self._stall_rate, self._seed, self._init = stall_rate, seed, init
        super().__init__({"axi": In(self._signature)})

    size = property(lambda self: self._size)
    latency = property(lambda self: self._latency)
    beats_per_cycle = property(lambda self: self._rate)
    queue_depth = property(lambda self: self._queue_depth)
    stall_rate = property(lambda self: self._stall_rate)

    @property
    def data_width(self):
        return self._signature.data_width

    def elaborate(self, platform):
        m = Module()
        sig = self._signature
        data_width, addr_width = sig.data_width, sig.addr_width
        lane_bits = (data_width // 8).bit_length() - 1
        depth = self._size >> lane_bits

        m.submodules.mem = mem = Memory(shape=data_width, depth=depth, init=self._init)
        rd = mem.read_port()
        wr = mem.write_port(granularity=8)

        # Random withholding: a free-running LFSR, compared against a
        # threshold per channel with different bit rotations.
        lfsr = Signal(16, init=self._seed)
        m.d.sync += lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ 0xB400, lfsr >> 1))
        threshold = int(self._stall_rate * 2**8)

        def go(channel):
            if threshold == 0:
                return Const(1)
            bits = lfsr.rotate_left(3 * channel)[:8]
            return bits >= threshold

        def next_addr(addr, size, length, burst):
            step = Const(1, addr_width) << size
            incr = (addr + step)[:addr_width]
            # WRAP bursts (length 2, 4, 8 or 16) wrap inside (len + 1) << size bytes.
            mask = (((length + 1) << size) - 1)[:addr_width]
            wrapped = (addr & ~mask) | (incr & mask)
            return Mux(burst == Burst.FIXED, addr,
                       Mux(burst == Burst.WRAP, wrapped, incr))

        def credit_logic(name):
            # Bandwidth limit: a beat costs `den` credits, `num` arrive per cycle.
            num, den = self._rate.numerator, self._rate.denominator
            if num == den:
                return Const(1), lambda take: []
            credit = Signal(range(2 * den + 1), name=f"{name}_credit")
            have = credit >= den
            def spend(take):
                return [credit.eq(Mux(credit + num - Mux(take, den, 0) > den,
                                      den, credit + num - Mux(take, den, 0)))]
            return have, spend

        def in_range(addr):
            return addr < self._size

        # Latency is pipelined: each accepted burst waits in a queue until
        # `now` reaches its due time, so up to `queue_depth` bursts per
        # direction overlap their latency, as a DDR controller's queues do.
        now = Signal(16)
        m.d.sync += now.eq(now + 1)

        def is_due(due):
            return ~(now - due)[15]

        # ---- reads --------------------------------------------------------
        ar, r = self.axi.ar, self.axi.r
        ar_entry = data.StructLayout({
            "id": sig.id_width, "addr": addr_width, "len": 8, "size": 3, "burst": 2,
            "due": 16})
        m.submodules.ar_queue = ar_queue = SyncFIFO(width=ar_entry.size,
                                                    depth=self._queue_depth)
        pushed = Signal(ar_entry)
        m.d.comb += [
            pushed.id.eq(ar.payload.id), pushed.addr.eq(ar.payload.addr),
            pushed.len.eq(ar.payload.len), pushed.size.eq(ar.payload.size),
            pushed.burst.eq(ar.payload.burst),
            # The fetch pipeline adds two cycles after the burst is due.
            pushed.due.eq(now + self._latency - 1),
            ar_queue.w_data.eq(pushed),
            ar.ready.eq(ar_queue.w_rdy & go(0)),
            ar_queue.w_en.eq(ar.valid & ar.ready),
        ]

        r_addr = Signal(addr_width)
        r_len = Signal(8)
        r_size = Signal(3)
        r_burst = Signal(Burst)
        r_id = Signal(sig.id_width)
        r_left = Signal(9)                 # beats of the loaded burst not yet fetched
        r_have, r_spend = credit_logic("r")
        r_oor = Signal()                   # the beat on R was out of range

        head = data.View(ar_entry, ar_queue.r_data)
        load = (r_left == 0) & ar_queue.r_rdy & is_due(head.due)
        with m.If(load):
            m.d.comb += ar_queue.r_en.eq(1)
            m.d.sync += [
                r_addr.eq(head.addr), r_len.eq(head.len), r_size.eq(head.size),
                r_burst.eq(head.burst), r_id.eq(head.id), r_left.eq(head.len + 1),
            ]
        if self._latency == 1:
            # The queue costs a cycle; with nothing queued or loaded a burst
            # skips it.
            with m.If((r_left == 0) & ~ar_queue.r_rdy):
                m.d.comb += ar_queue.w_en.eq(0)
                with m.If(ar.valid & ar.ready):
                    m.d.sync += [
                        r_addr.eq(pushed.addr), r_len.eq(pushed.len), r_size.eq(pushed.size),
                        r_burst.eq(pushed.burst), r_id.eq(pushed.id),
                        r_left.eq(pushed.len + 1),
                    ]

        fetch = Signal()
        m.d.comb += fetch.eq((r_left != 0) & r_have & go(1) & (~r.valid | r.ready))
        m.d.comb += [rd.addr.eq(r_addr >> lane_bits), rd.en.eq(fetch)]
        m.d.sync += r_spend(fetch)
        bad_burst_r = r_burst.as_value() == 3
        with m.If(fetch):
            m.d.sync += [
                r_addr.eq(next_addr(r_addr, r_size, r_len, r_burst)),
                r_left.eq(r_left - 1),
                r.valid.eq(1),
                r.payload.id.eq(r_id),
                r.payload.last.eq(r_left == 1),
                r_oor.eq(~in_range(r_addr)),
                r.payload.resp.eq(Mux(bad_burst_r, Resp.SLVERR,
                                      Mux(in_range(r_addr), Resp.OKAY, Resp.DECERR))),
            ]
        with m.Elif(r.ready):
            m.d.sync += r.valid.eq(0)
        m.d.comb += r.payload.data.eq(Mux(r_oor, 0, rd.data))

        # ---- writes -------------------------------------------------------
        aw, w, b = self.axi.aw, self.axi.w, self.axi.b
        b_entry = data.StructLayout({"id": sig.id_width, "resp": 2, "due": 16})
        m.submodules.b_queue = b_queue = SyncFIFO(width=b_entry.size, depth=self._queue_depth)
        w_addr = Signal(addr_width)
        w_len = Signal(8)
        w_size = Signal(3)
        w_burst = Signal(Burst)
        w_id = Signal(sig.id_width)
        w_resp = Signal(Resp)
        w_loaded = Signal()
        w_have, w_spend = credit_logic("w")

        m.d.comb += aw.ready.eq(~w_loaded & go(2))
        with m.If(aw.valid & aw.ready):
            m.d.sync += [
                w_loaded.eq(1), w_addr.eq(aw.payload.addr), w_len.eq(aw.payload.len),
                w_size.eq(aw.payload.size), w_burst.eq(aw.payload.burst),
                w_id.eq(aw.payload.id),
                w_resp.eq(Mux(aw.payload.burst.as_value() == 3, Resp.SLVERR, Resp.OKAY)),
            ]
        m.d.comb += w.ready.eq(w_loaded & w_have & go(3) & (~w.payload.last | b_queue.w_rdy))
        take = w.valid & w.ready
        m.d.sync += w_spend(take)
        ok = in_range(w_addr) & (w_burst.as_value() != 3)
        m.d.comb += [
            wr.addr.eq(w_addr >> lane_bits),
            wr.data.eq(w.payload.data),
            wr.en.eq(Mux(take & ok, w.payload.strb, 0)),
        ]
        resp = Mux(~in_range(w_addr) & (w_resp == Resp.OKAY), Resp.DECERR, w_resp)
        queued = Signal(b_entry)
        m.d.comb += [
            queued.id.eq(w_id), queued.resp.eq(resp),
            queued.due.eq(now + self._latency),
            b_queue.w_data.eq(queued),
        ]
        with m.If(take):
            m.d.sync += [w_addr.eq(next_addr(w_addr, w_size, w_len, w_burst)), w_resp.eq(resp)]
            with m.If(w.payload.last):
                m.d.comb += b_queue.w_en.eq(1)
                m.d.sync += w_loaded.eq(0)

        b_head = data.View(b_entry, b_queue.r_data)
        # Once offered, B stays valid until taken (AXI's rule).
        b_offered = Signal()
        m.d.comb += [
            b.valid.eq(b_queue.r_rdy & is_due(b_head.due) & (b_offered | go(4))),
            b.payload.id.eq(b_head.id),
            b.payload.resp.eq(b_head.resp),
            b_queue.r_en.eq(b.valid & b.ready),
        ]
        m.d.sync += b_offered.eq(b.valid & ~b.ready)
        return m
