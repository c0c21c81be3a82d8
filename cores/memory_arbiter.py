"""Shares one memory port between several initiators."""

from amaranth.hdl import Module, Signal, Mux, Cat
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .memory_port import MemoryPort, MAX_BURST_WORDS
from .skid_buffer import SkidBuffer

__all__ = ["MemoryArbiter"]


class MemoryArbiter(wiring.Component):
    """Round-robin arbiter of ``ports`` memory ports onto one.

    Ports: ``initiators`` (``In(MemoryPort()).array(ports)``), ``target``
    (``Out(MemoryPort())``). Commands are granted one at a time, round-robin
    from the port after the last one granted; a granted command's ``w`` words
    go to the target together, in command order, so bursts never interleave.
    ``r`` words and responses return to the port that issued the command
    (the target answers in command order, as the memory port requires). Up to
    ``depth`` commands (default 4) may be in flight through the arbiter.
    Latency: a command reaches the target three cycles after it is offered
    (one in the port's skid buffer, one to grant, one to take it into the
    output register), and the next is granted the cycle the target takes
    it, so one command per two cycles; read and write words and responses
    take a cycle each (skid buffers; read words two), each at one per cycle,
    and a read's response waits until the initiator has taken its last word.
    """

    def __init__(self, *, ports, depth=4):
        if isinstance(ports, bool) or not isinstance(ports, int) or not 1 <= ports <= 16:
            raise ValueError(f"Port count must be an integer in [1, 16], not {ports!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 64:
            raise ValueError(f"Depth must be an integer in [1, 64], not {depth!r}")
        self._ports, self._depth = ports, depth
        super().__init__({
            "initiators": In(MemoryPort()).array(ports),
            "target": Out(MemoryPort()),
        })

    ports = property(lambda self: self._ports)
    depth = property(lambda self: self._depth)

    def elaborate(self, platform):
        m = Module()
        n = self._ports
        ports, target = self.initiators, self.target
        route = data.StructLayout({"port": range(n), "words": range(MAX_BURST_WORDS + 1)})
        answer = data.StructLayout({"port": range(n), "read": 1})
        m.submodules.resp_route = resp_route = SyncFIFO(width=answer.size, depth=self._depth)
        m.submodules.r_route = r_route = SyncFIFO(width=route.size, depth=self._depth)
        m.submodules.w_route = w_route = SyncFIFO(width=route.size, depth=self._depth)

        # Each initiator's commands enter through a skid buffer: an engine's
        # ``cmd.valid`` (a compare, a mux across the sequencer's units) and
        # the grant, the route FIFOs' writes and the output register do not
        # fit one cycle across the chip.
        cmds = []
        for i in range(n):
            m.submodules[f"cmd_in{i}"] = skid = SkidBuffer(ports[i].cmd.payload.shape(),
                                                              gate_payload=False)
            m.d.comb += [skid.i.valid.eq(ports[i].cmd.valid),
                         skid.i.payload.eq(ports[i].cmd.payload),
                         ports[i].cmd.ready.eq(skid.i.ready)]
            cmds.append(skid.o)

        # ---- grant --------------------------------------------------------
        active = Signal()
        current = Signal(range(n))
        last = Signal(range(n), init=n - 1)
        with m.If(~active):
            # The first valid port after `last`, cyclically.
            choice, found = Signal(range(n)), Signal()
            for offset in reversed(range(1, n + 1)):
                candidate = Signal(range(n), name=f"candidate_{offset}")
                m.d.comb += candidate.eq(Mux(last + offset >= n, last + offset - n,
                                             last + offset))
                valid = Signal(name=f"candidate_{offset}_valid")
                with m.Switch(candidate):
                    for i in range(n):
                        with m.Case(i):
                            m.d.comb += valid.eq(cmds[i].valid)
                with m.If(valid):
                    m.d.comb += [choice.eq(candidate), found.eq(1)]
            with m.If(found):
                m.d.sync += [active.eq(1), current.eq(choice)]

        # The granted command is taken into a register slice that drives
        # ``target.cmd``: neither the initiators' command arithmetic nor the
        # target's ``ready`` reaches across the arbiter in one cycle.
        held = Signal()
        held_cmd = Signal.like(target.cmd.payload)
        m.d.comb += [target.cmd.valid.eq(held), target.cmd.payload.eq(held_cmd)]
        with m.If(target.cmd.ready):
            m.d.sync += held.eq(0)

        granted = Signal.like(target.cmd.payload)
        granted_valid = Signal()
        room = resp_route.w_rdy & r_route.w_rdy & w_route.w_rdy & ~held
        with m.Switch(current):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += [
                        granted.eq(cmds[i].payload),
                        granted_valid.eq(cmds[i].valid),
                        cmds[i].ready.eq(active & room),
                    ]
        words = granted.words
        moves_data = (words != 0) & (words <= MAX_BURST_WORDS)
        entry = Signal(route)
        m.d.comb += [entry.port.eq(current), entry.words.eq(words)]
        taken = active & granted_valid & room
        write = granted.write
        m.d.comb += [
            resp_route.w_data.eq(Cat(current, moves_data & ~write)), resp_route.w_en.eq(taken),
            r_route.w_data.eq(entry), r_route.w_en.eq(taken & moves_data & ~write),
            w_route.w_data.eq(entry), w_route.w_en.eq(taken & moves_data & write),
        ]
        with m.If(taken):
            m.d.sync += [active.eq(0), last.eq(current), held.eq(1), held_cmd.eq(granted)]

        # ---- write data, from the port of the oldest write -----------------
        # Write words pass a skid buffer on their way to the target: an
        # initiator's ``w.valid`` (its state machine) and the target's
        # ``w.ready`` (its FIFO's room) met in the port mux, and the frame
        # engine's next buffer address followed in the same cycle.
        m.submodules.w_out = w_out = SkidBuffer(target.w.payload.shape(), gate_payload=False)
        wiring.connect(m, w_out.o, wiring.flipped(target.w))
        w_head = data.View(route, w_route.r_data)
        w_count = Signal(range(MAX_BURST_WORDS + 1))
        with m.If(w_route.r_rdy):
            with m.Switch(w_head.port):
                for i in range(n):
                    with m.Case(i):
                        m.d.comb += [
                            w_out.i.payload.eq(ports[i].w.payload),
                            w_out.i.valid.eq(ports[i].w.valid),
                            ports[i].w.ready.eq(w_out.i.ready),
                        ]
        with m.If(w_out.i.valid & w_out.i.ready):
            w_done = w_count + 1 == w_head.words
            m.d.sync += w_count.eq(Mux(w_done, 0, w_count + 1))
            m.d.comb += w_route.r_en.eq(w_done)

        # ---- read data, to the port of the oldest read ---------------------
        # Read words pass two skid buffers: one from the target, so an
        # initiator's ``r.ready`` does not run on into the memory's read
        # logic, and one per port, so it does not run into this port mux,
        # the word count and the route FIFO either (16 ns placed at 10x11 on
        # ECP5 with the first alone). A word carries whether it ends its read.
        m.submodules.r_in = r_in = SkidBuffer(target.r.payload.shape())
        m.d.comb += [r_in.i.valid.eq(target.r.valid), r_in.i.payload.eq(target.r.payload),
                     target.r.ready.eq(r_in.i.ready)]
        r_head = data.View(route, r_route.r_data)
        r_count = Signal(range(MAX_BURST_WORDS + 1))
        r_done = r_count + 1 == r_head.words
        read_word = data.StructLayout({"word": target.r.payload.shape(), "last": 1})
        r_out = []
        for i in range(n):
            m.submodules[f"r_out{i}"] = skid = SkidBuffer(read_word)
            m.d.comb += [skid.i.payload.word.eq(r_in.o.payload), skid.i.payload.last.eq(r_done),
                         ports[i].r.valid.eq(skid.o.valid),
                         ports[i].r.payload.eq(skid.o.payload.word),
                         skid.o.ready.eq(ports[i].r.ready)]
            r_out.append(skid)
        with m.If(r_route.r_rdy):
            with m.Switch(r_head.port):
                for i in range(n):
                    with m.Case(i):
                        m.d.comb += [
                            r_out[i].i.valid.eq(r_in.o.valid),
                            r_in.o.ready.eq(r_out[i].i.ready),
                        ]
        with m.If(r_in.o.valid & r_in.o.ready):
            m.d.sync += r_count.eq(Mux(r_done, 0, r_count + 1))
            m.d.comb += r_route.r_en.eq(r_done)

        # ---- responses ----------------------------------------------------
        # The target answers a read after its last word, but that word now
        # spends cycles in the skid buffers: a read's response waits until
        # one of its port's reads has had its last word taken by the port
        # (counted per port: ports take their words independently).
        resp_head = data.View(answer, resp_route.r_data)
        resp_passes = target.resp.valid & target.resp.ready
        reads_delivered = []
        for i in range(n):
            delivered = Signal(range(self._depth + 1), name=f"reads_delivered{i}")
            ended = ports[i].r.valid & ports[i].r.ready & r_out[i].o.payload.last
            answered = resp_passes & resp_head.read & (resp_head.port == i)
            m.d.sync += delivered.eq(delivered + ended - answered)
            reads_delivered.append(delivered)
        # Each port's responses leave through a skid buffer: an initiator's
        # reaction to its response (the frame engine's answer and CRC reset)
        # starts at a flip-flop, not at this route FIFO's head and gating.
        resp_out = []
        for i in range(n):
            m.submodules[f"resp_out{i}"] = skid = SkidBuffer(target.resp.payload.shape())
            wiring.connect(m, skid.o, wiring.flipped(ports[i].resp))
            m.d.comb += skid.i.payload.eq(target.resp.payload)
            resp_out.append(skid.i)
        with m.If(resp_route.r_rdy):
            with m.Switch(resp_head.port):
                for i in range(n):
                    with m.Case(i):
                        with m.If(~resp_head.read | (reads_delivered[i] != 0)):
                            m.d.comb += [
                                resp_out[i].valid.eq(target.resp.valid),
                                target.resp.ready.eq(resp_out[i].ready),
                            ]
        m.d.comb += resp_route.r_en.eq(resp_passes)
        return m
