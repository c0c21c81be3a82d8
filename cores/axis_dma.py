"""Bulk data between a PCIe bridge's AXI-Stream channels and tensor memory.

The PCIe link (``Soc(link="pcie")``, ``docs/pcie.md``) carries registers over
an XDMA bridge's M_AXI_LITE and bulk data over its H2C / C2H AXI-Streams. The
host programs a transfer through registers (DMA_ADDR, DMA_LEN, then
DMA_CONTROL.start_h2c or start_c2h) and then writes or reads the stream; this
core moves the words between that stream and a memory port.

Both directions are store and forward through one buffer (only one transfer
runs at a time): a write burst is issued only when all its words are in the
buffer, a read burst only when the buffer has room for all of it. So a slow
or stalled host never holds the shared memory port (the arbiter) in the
middle of a burst, the sequencer's traffic flows around it, and an abort
always finishes cleanly.
"""

from amaranth.hdl import Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .axi import AxiStreamSignature
from .memory_port import MAX_BURST_WORDS, MemoryPort

__all__ = ["AxisDma"]


class AxisDma(wiring.Component):
    """Moves ``length`` bytes between an AXI-Stream and tensor memory at ``addr``.

    Ports: ``h2c`` (``In(AxiStreamSignature(32))``: host to card), ``c2h``
    (``Out(AxiStreamSignature(32))``: card to host), ``mem``
    (``Out(MemoryPort())``); control: ``addr`` In(32) (bytes), ``length``
    In(32) (bytes), sampled by the one-cycle pulses ``start_h2c`` (stream to
    memory) or ``start_c2h`` (memory to stream); ``abort`` In(1) pulse;
    status: ``busy``, ``c2h_mode`` (direction of the running or last
    transfer), ``progress`` Out(32) (bytes that crossed the stream in it),
    and one-cycle pulses ``done`` (a transfer ended, also after an abort),
    ``bad_request``, ``mem_fault``, ``stream_fault``.

    A start is refused (``bad_request``; nothing moves and a running
    transfer carries on) when ``length`` is 0 or not a multiple of 4, ``addr``
    is not a multiple of 4, ``addr + length`` exceeds ``mem_size``, both starts
    come together, or a transfer is running.

    H2C: words are taken while ``length`` is not reached (``h2c.ready`` is
    low otherwise, so words for a later transfer wait); TKEEP is ignored
    (whole words). A TLAST before the last word ends the transfer at that
    word (``stream_fault``); TLAST on the last word is expected but not
    required. C2H: TLAST marks the last word, TKEEP is all ones. A memory
    fault (``mem_fault``) does not stop the transfer, so the stream side
    always completes: faulting read bursts deliver undefined words.
    ``abort`` stops taking and sending stream words at once (a C2H word on
    offer is withdrawn: the host has stopped reading), lets the bursts
    already issued finish, drops what is buffered and ends the transfer.

    Bursts are ``burst_words`` long (1..256, default 256) but never longer
    than what is left; the buffer holds ``buffer_words`` (default twice the
    burst, so one burst fills while the other drains). Throughput: one word
    per cycle each way in steady state; latency: a write burst starts once
    its words are buffered, a read delivers its first word the memory's
    latency after the start plus three cycles.
    """

    def __init__(self, *, mem_size, burst_words=MAX_BURST_WORDS, buffer_words=None):
        if isinstance(mem_size, bool) or not isinstance(mem_size, int) \
                or not 4 <= mem_size <= 2**32 or mem_size % 4:
            raise ValueError(f"Memory size must be a multiple of 4 bytes in [4, 2**32], "
                             f"not {mem_size!r}")
        if isinstance(burst_words, bool) or not isinstance(burst_words, int) \
                or not 1 <= burst_words <= MAX_BURST_WORDS:
            raise ValueError(f"Burst length must be an integer in [1, {MAX_BURST_WORDS}] "
                             f"words, not {burst_words!r}")
        if buffer_words is None:
            buffer_words = 2 * burst_words
        if isinstance(buffer_words, bool) or not isinstance(buffer_words, int) \
                or not burst_words <= buffer_words <= 4096:
            raise ValueError(f"Buffer must hold between one burst ({burst_words} words) and "
                             f"4096 words, not {buffer_words!r}")
        self._mem_size, self._burst, self._buffer = mem_size, burst_words, buffer_words
        super().__init__({
            "h2c": In(AxiStreamSignature(32)),
            "c2h": Out(AxiStreamSignature(32)),
            "mem": Out(MemoryPort()),
            "addr": In(32),
            "length": In(32),
            "start_h2c": In(1),
            "start_c2h": In(1),
            "abort": In(1),
            "busy": Out(1),
            "c2h_mode": Out(1),
            "progress": Out(32),
            "done": Out(1),
            "bad_request": Out(1),
            "mem_fault": Out(1),
            "stream_fault": Out(1),
        })

    mem_size = property(lambda self: self._mem_size)
    burst_words = property(lambda self: self._burst)
    buffer_words = property(lambda self: self._buffer)

    def elaborate(self, platform):
        m = Module()
        burst, depth = self._burst, self._buffer
        words_shape = range(2**30 + 1)
        flush = Signal()
        m.submodules.buffer = buffer = ResetInserter(flush)(
            SyncFIFOBuffered(width=32, depth=depth))

        c2h_mode = self.c2h_mode
        limit = Signal(words_shape)     # words this transfer moves (cut short by TLAST)
        taken = Signal(words_shape)     # H2C words taken from the stream
        issued = Signal(words_shape)    # words of the bursts issued (or being offered)
        sent = Signal(words_shape)      # H2C: words given to mem.w; C2H: words sent on c2h
        next_addr = Signal(32)
        outstanding = Signal(range(depth + 2))  # bursts awaiting their response
        stopping = Signal()
        cmd = self.mem.cmd

        # ---- start ----------------------------------------------------------
        start = self.start_h2c | self.start_c2h
        refused = Signal()
        m.d.comb += refused.eq(
            (self.start_h2c & self.start_c2h) | self.busy | (self.length == 0)
            | (self.length[:2] != 0) | (self.addr[:2] != 0)
            | (self.addr + self.length > self._mem_size))
        m.d.comb += self.bad_request.eq(start & refused)
        with m.If(start & ~refused):
            m.d.sync += [
                self.busy.eq(1), c2h_mode.eq(self.start_c2h), stopping.eq(0),
                limit.eq(self.length[2:]), taken.eq(0), issued.eq(0), sent.eq(0),
                next_addr.eq(self.addr),
            ]
        m.d.comb += flush.eq(~self.busy)
        m.d.comb += self.progress.eq(Mux(c2h_mode, sent, taken) << 2)
        with m.If(self.busy & self.abort):
            m.d.sync += stopping.eq(1)

        # ---- bursts -------------------------------------------------------
        left = limit - issued
        n = Signal(range(burst + 1))
        m.d.comb += n.eq(Mux(left < burst, left, burst))
        # Write bursts wait until every word is buffered; read bursts until
        # every word has room, counting the words of reads still in flight.
        ready_h2c = taken - issued >= n
        ready_c2h = (issued - sent) + n <= depth
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += cmd.valid.eq(0)
        with m.If(self.busy & ~stopping & ~self.abort & (n != 0) & ~cmd.valid
                  & Mux(c2h_mode, ready_c2h, ready_h2c)):
            m.d.sync += [
                cmd.valid.eq(1),
                cmd.payload.addr.eq(next_addr),
                cmd.payload.words.eq(n),
                cmd.payload.write.eq(~c2h_mode),
                issued.eq(issued + n),
                next_addr.eq(next_addr + (n << 2)),
            ]
        accepted = cmd.valid & cmd.ready
        answered = self.mem.resp.valid & self.mem.resp.ready
        m.d.comb += [
            self.mem.resp.ready.eq(1),
            self.mem_fault.eq(answered & self.mem.resp.payload.fault),
        ]
        m.d.sync += outstanding.eq(outstanding + accepted - answered)

        # ---- data -----------------------------------------------------------
        with m.If(~c2h_mode):
            # Stream -> buffer -> mem.w.
            take = self.busy & ~stopping & ~self.abort & (taken < limit) & buffer.w_rdy
            m.d.comb += [
                self.h2c.ready.eq(take),
                buffer.w_data.eq(self.h2c.payload.data),
                buffer.w_en.eq(self.h2c.valid & take),
                self.mem.w.payload.eq(buffer.r_data),
                self.mem.w.valid.eq(buffer.r_rdy & (sent != issued)),
                buffer.r_en.eq(self.mem.w.ready & (sent != issued)),
            ]
            with m.If(self.h2c.valid & self.h2c.ready):
                m.d.sync += taken.eq(taken + 1)
                with m.If(self.h2c.payload.last & (taken + 1 != limit)):
                    m.d.sync += limit.eq(taken + 1)
                    m.d.comb += self.stream_fault.eq(1)
            with m.If(self.mem.w.valid & self.mem.w.ready):
                m.d.sync += sent.eq(sent + 1)
        with m.Else():
            # mem.r -> buffer -> stream. The buffer always has room for the
            # words in flight, so reads never back up into the memory port.
            send = self.busy & ~stopping & ~self.abort
            m.d.comb += [
                self.mem.r.ready.eq(buffer.w_rdy),
                buffer.w_data.eq(self.mem.r.payload),
                buffer.w_en.eq(self.mem.r.valid),
                self.c2h.payload.data.eq(buffer.r_data),
                self.c2h.payload.keep.eq(0b1111),
                self.c2h.payload.last.eq(sent + 1 == limit),
                self.c2h.valid.eq(buffer.r_rdy & send),
                buffer.r_en.eq(self.c2h.ready & send),
            ]
            with m.If(self.c2h.valid & self.c2h.ready):
                m.d.sync += sent.eq(sent + 1)

        # ---- end --------------------------------------------------------------
        quiet = ~cmd.valid & (outstanding == 0) & ~accepted
        finished = Mux(stopping, Mux(c2h_mode, 1, sent == issued),
                       (sent == limit) & (c2h_mode | (issued == limit)))
        with m.If(self.busy & quiet & finished):
            m.d.sync += self.busy.eq(0)
            m.d.comb += self.done.eq(1)
        return m
