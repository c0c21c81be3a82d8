"""The host link's frame engine: request frames in, CSR / memory / command
FIFO accesses, response frames out (protocol: ``fecaffe_hw.runtime.protocol``).

Choices the shared spec leaves open:

* PING reads ID, VERSION, CAPABILITIES and PLAN_HASH over the CSR bus, so the
  identity lives in one place (the CSR bank); READ_COUNTERS reads each
  counter's LO then HI register (reading LO latches HI, so every u64 is
  consistent).
* READ_MEM reads the words into the frame buffer before it answers: the
  response's status byte precedes the data, and the memory port reports a
  fault only after the last word. The response CRC is computed on the fly as
  bytes leave.
* A UART framing error inside a frame taints it: the frame is consumed to its
  end and answered as a bad CRC (ERROR / BAD_CRC), or as TIMEOUT if the bytes
  stop (a line break). A framing error between frames is a garbage byte.
* A WRITE_CSR to a register with nothing writable, like an unmapped or
  unaligned address, is answered BAD_ADDRESS (the CSR bus reports both).
* With ``mem_size`` set, WRITE_MEM and READ_MEM outside ``[0, mem_size)`` are
  refused with BAD_ADDRESS before any access, so a partly out-of-range write
  changes nothing; a memory port fault also gives BAD_ADDRESS.
* Bytes that arrive while a frame executes or its response is sent are held
  off (``rx.ready`` low); the host is stop-and-wait, so none are expected.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fecaffe_hw.runtime import regmap
from fecaffe_hw.runtime.protocol import (
    HEADER_SIZE, MAX_MEM_DATA, MAX_PAYLOAD, PING_RESPONSE, RESPONSE_FLAG, SYNC,
    Opcode, Status, READ_OPCODES,
)

from .crc32 import Crc32
from .csr_bus import CsrBus
from .memory_port import MAX_BURST_WORDS, MemoryPort
from .uart import rx_layout

__all__ = ["FrameEngine", "PING_REGISTERS"]

#: The registers PING reads, in response order.
PING_REGISTERS = ("ID", "VERSION", "CAPABILITIES", "PLAN_HASH")

_BUFFER_WORDS = MAX_PAYLOAD // 4
_PARAM_BYTES = 8        # request parameters (addresses, counts) sit in the first 8 bytes


def _check_positive_int(what, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")


class FrameEngine(wiring.Component):
    """Executes host protocol frames; one frame at a time, stop-and-wait.

    Ports
    -----
    rx : In(stream.Signature(rx_layout))
        Received bytes with their UART framing error flag.
    tx : Out(stream.Signature(8))
        Response bytes.
    csr : Out(CsrBus())
        Initiator on the CSR bus.
    mem : Out(MemoryPort())
        Initiator on tensor memory; one command per frame (at most 255 words,
        within the port's 256-word bursts).
    cmd : Out(stream.Signature(32))
        RUN's words, to the sequencer's command FIFO.
    cmd_space : In(16)
        Free words in that FIFO; RUN pushes only if all its words fit (else
        BUSY), so nothing but the sequencer may push while RUN runs. The
        check uses the space of two cycles before (registered for timing):
        only this engine pushes, so the space can only have grown since.

    Parameters: ``clk_freq`` (Hz); ``timeout``, the inter-byte timeout in
    cycles after which a partial frame is answered ERROR / TIMEOUT (default
    10 ms); ``mem_size``, tensor memory bytes, for the range check (None:
    rely on the memory port's faults).

    Latency and throughput: one received byte per cycle; the whole payload
    is buffered and CRC-checked before anything executes (a bad ``length``
    is answered right after the header, the opcode's length rule after the
    CRC). From the last request byte to the first response byte (measured,
    CSR bank with 1-cycle reads, AxiMaster + AxiRam with 24-cycle latency):
    READ_CSR / WRITE_CSR 6 cycles, PING 12, READ_COUNTERS 36, RUN of n words
    n + 4, WRITE_MEM / READ_MEM of 1020 bytes 289 / 290, one cycle of it the
    response's output register. Responses leave at one byte per cycle, with
    one idle cycle before the CRC (it waits for the last covered byte to
    leave); any ``tx.ready`` pattern is fine. At 12 Mbaud and 100 MHz a UART
    byte takes ~83 cycles, so the engine is never the bottleneck. Frame
    buffer: one 256 x 32-bit memory. Size (yosys synth_xilinx, xc7): 1034 LUT + 285 FF + 1 RAMB18,
    about a quarter of it the two CRC-32 cores.
    """

    def __init__(self, *, clk_freq, timeout=None, mem_size=None):
        if isinstance(clk_freq, bool) or not isinstance(clk_freq, (int, float)) \
                or not clk_freq > 0:
            raise ValueError(f"Clock frequency must be a positive number, not {clk_freq!r}")
        if timeout is None:
            timeout = max(1, round(clk_freq / 100))
        _check_positive_int("Inter-byte timeout in cycles", timeout)
        if mem_size is not None:
            _check_positive_int("Memory size in bytes", mem_size)
            if mem_size % 4 or mem_size > 2**32:
                raise ValueError(f"Memory size must be a multiple of 4 bytes up to 2**32, "
                                 f"not {mem_size!r}")
        self._clk_freq, self._timeout, self._mem_size = clk_freq, timeout, mem_size
        super().__init__({
            "rx": In(stream.Signature(rx_layout)),
            "tx": Out(stream.Signature(8)),
            "csr": Out(CsrBus()),
            "mem": Out(MemoryPort()),
            "cmd": Out(stream.Signature(32)),
            "cmd_space": In(16),
        })

    clk_freq = property(lambda self: self._clk_freq)
    timeout = property(lambda self: self._timeout)
    mem_size = property(lambda self: self._mem_size)

    def elaborate(self, platform):
        m = Module()
        rx, tx, csr, mem, cmd = self.rx, self.tx, self.csr, self.mem, self.cmd

        m.submodules.buffer = buffer = Memory(shape=32, depth=_BUFFER_WORDS, init=[])
        rd = buffer.read_port()
        wr = buffer.write_port()
        m.submodules.rx_crc = rx_crc = Crc32()
        m.submodules.tx_crc = tx_crc = Crc32()

        # ---- request state ------------------------------------------------
        opcode = Signal(8)
        seq = Signal(8)
        length = Signal(16)
        # length - 1, registered as the length field arrives: the payload's
        # end test and WRITE_MEM's word count then need no carry chain.
        last_index = Signal(16)
        params = Signal(8 * _PARAM_BYTES)
        count = Signal(range(MAX_PAYLOAD + 1))      # header / payload / CRC byte index
        partial = Signal(24)                        # earlier bytes of the word being received
        tainted = Signal()
        timer = Signal(range(self._timeout + 1))

        # The last executed frame, for the duplicate rule.
        last_valid = Signal()
        last_seq = Signal(8)
        last_opcode = Signal(8)
        last_status = Signal(8)

        # ---- execution and response state -----------------------------------
        index = Signal(range(MAX_BURST_WORDS + 1))  # words done in the current step
        words = Signal(range(MAX_BURST_WORDS + 1))  # words in the current step
        # words - 1 and resp_words - 1, set with them: the end-of-step tests
        # compare the index with a register, not through a subtractor's
        # carry chain (the 2x2 ULX3S build's critical path ran through it).
        words_last = Signal(signed(len(words) + 1))
        fault = Signal()
        mem_range_bad = Signal()    # the memory request leaves [0, mem_size); set in CHECK
        resp_opcode = Signal(8)
        resp_status = Signal(8)
        resp_words = Signal(range(_BUFFER_WORDS + 1))
        resp_last = Signal(signed(len(resp_words) + 1))
        lane = Signal(range(8))

        # The buffer's read port always shows buffer[ptr]: it reads the
        # address ``ptr`` will hold next cycle, hiding the read latency.
        ptr = Signal(range(_BUFFER_WORDS))
        ptr_next = Signal(range(_BUFFER_WORDS))
        m.d.comb += [ptr_next.eq(ptr), rd.addr.eq(ptr_next), rd.en.eq(1)]
        m.d.sync += ptr.eq(ptr_next)

        take = Signal()             # a received byte is accepted this cycle
        byte = rx.payload.data
        m.d.comb += take.eq(rx.valid & rx.ready)

        # The response leaves through an output register (a pipeline stage
        # with its own valid): the byte read from the frame buffer or muxed
        # from the header reaches neither ``tx`` nor the CRC in the cycle it
        # is chosen. The CRC takes each byte as ``tx`` accepts it.
        tx_full = Signal()
        tx_byte = Signal(8)
        tx_in_crc = Signal()        # the held byte counts into the response CRC
        load = Signal()             # the output register takes a new byte this cycle
        m.d.comb += [
            tx.valid.eq(tx_full), tx.payload.eq(tx_byte), load.eq(~tx_full | tx.ready),
            rx_crc.data.eq(byte),
            tx_crc.data.eq(tx_byte), tx_crc.valid.eq(tx_full & tx.ready & tx_in_crc),
        ]
        with m.If(tx.ready):
            m.d.sync += tx_full.eq(0)

        def emit(value, *, in_crc):
            """Load the output register (only where ``load`` is high)."""
            m.d.sync += [tx_byte.eq(value), tx_in_crc.eq(in_crc), tx_full.eq(1)]

        with m.If(take):
            m.d.sync += timer.eq(0)
        with m.Elif(timer != self._timeout):
            m.d.sync += timer.eq(timer + 1)

        def set_words(value):
            value = Value.cast(value)[:len(words)]
            m.d.sync += [words.eq(value), words_last.eq(value - 1)]

        def respond(status, *, words=0, opcode_value=None):
            """Start sending the response; ``opcode_value`` None answers the request."""
            m.d.sync += [
                resp_opcode.eq(opcode | RESPONSE_FLAG if opcode_value is None else opcode_value),
                resp_status.eq(status),
                resp_words.eq(words),
                resp_last.eq(words - 1),
                count.eq(0),
            ]
            m.d.comb += [tx_crc.clear.eq(1), ptr_next.eq(0)]
            m.next = "SEND_HEADER"

        def finish(status, *, words=0):
            """Record the frame as executed and answer it."""
            m.d.sync += [last_valid.eq(1), last_seq.eq(seq), last_opcode.eq(opcode),
                         last_status.eq(status)]
            respond(status, words=words)

        def error(status):
            respond(status, opcode_value=Opcode.ERROR)

        def in_frame_checks():
            # Bytes that stop mid-frame: ERROR / TIMEOUT with the seq as received.
            with m.If(~rx.valid & (timer == self._timeout)):
                error(Status.TIMEOUT)
            with m.If(take & rx.payload.framing_error):
                m.d.sync += tainted.eq(1)

        # Parameter fields, little-endian as on the wire.
        addr16 = params[0:16]
        csr_value = params[16:48]
        addr32 = params[0:32]
        mem_count = params[32:48]

        csr_addr = Signal(14)
        csr_stb = Signal()          # high exactly in CSR_READ, from a flip-flop
        m.d.sync += csr_stb.eq(0)
        # Both straight from flip-flops into the bank's decode and read mux
        # (csr_addr holds addr16 for READ_CSR and WRITE_CSR).
        m.d.comb += [csr.addr.eq(csr_addr), csr.r_stb.eq(csr_stb)]
        # Registered twice over (space, then the compare): the FIFO level's
        # subtract and this compare fed the response CRC's reset in one cycle.
        cmd_space = Signal.like(self.cmd_space)
        run_too_long = Signal()
        m.d.sync += [cmd_space.eq(self.cmd_space), run_too_long.eq(length[2:] > cmd_space)]
        ping_addrs = Array(Const(regmap.register(name).word_address, 14)
                           for name in PING_REGISTERS)
        counter_addrs = Array(Const(r.word_address, 14) for c in regmap.COUNTERS
                              for r in (c.lo, c.hi))
        assert len(PING_REGISTERS) * 4 == PING_RESPONSE.size

        # DECODE's tests, registered in CHECK (below).
        known, is_read, duplicate = Signal(), Signal(), Signal()
        misaligned, bad_length = Signal(), Signal()
        bad_lengths = {
            Opcode.PING: length != 0,
            Opcode.READ_COUNTERS: length != 0,
            Opcode.READ_CSR: length != 2,
            Opcode.WRITE_CSR: length != 6,
            Opcode.WRITE_MEM: (length < 8) | (length[:2] != 0),
            Opcode.READ_MEM: ((length != 6) | (mem_count == 0) | (mem_count[:2] != 0)
                              | (mem_count > MAX_MEM_DATA)),
            Opcode.RUN: (length == 0) | (length[:2] != 0),
        }

        def out_of_range(address, nbytes):
            if self._mem_size is None:
                return Const(0)
            return (address + nbytes) > self._mem_size

        with m.FSM() as fsm:
            # ---- receive ----------------------------------------------------
            with m.State("HUNT"):
                m.d.comb += rx.ready.eq(1)
                with m.If(take & ~rx.payload.framing_error & (byte == SYNC[0])):
                    m.next = "SYNC1"

            with m.State("SYNC1"):
                m.d.comb += [rx.ready.eq(1), rx_crc.clear.eq(1)]
                with m.If(take):
                    with m.If(rx.payload.framing_error):
                        m.next = "HUNT"
                    with m.Elif(byte == SYNC[1]):
                        m.d.sync += [count.eq(0), tainted.eq(0), opcode.eq(0), seq.eq(0),
                                     params.eq(0)]
                        m.next = "HEADER"
                    with m.Elif(byte != SYNC[0]):
                        m.next = "HUNT"

            with m.State("HEADER"):
                m.d.comb += [rx.ready.eq(1), rx_crc.valid.eq(take)]
                with m.If(take):
                    m.d.sync += count.eq(count + 1)
                    with m.Switch(count):
                        with m.Case(0):
                            m.d.sync += opcode.eq(byte)
                        with m.Case(1):
                            m.d.sync += seq.eq(byte)
                        with m.Case(2):
                            m.d.sync += length[:8].eq(byte)
                        with m.Case(HEADER_SIZE - 1):
                            new_length = Cat(length[:8], byte)
                            m.d.sync += [length[8:].eq(byte), last_index.eq(new_length - 1),
                                         count.eq(0)]
                            with m.If(new_length > MAX_PAYLOAD):
                                error(Status.BAD_LENGTH)
                            with m.Elif(new_length == 0):
                                m.next = "CRC"
                            with m.Else():
                                m.next = "PAYLOAD"
                in_frame_checks()

            with m.State("PAYLOAD"):
                m.d.comb += [rx.ready.eq(1), rx_crc.valid.eq(take)]
                with m.If(take):
                    m.d.sync += [count.eq(count + 1), partial.eq(Cat(partial[8:], byte))]
                    with m.Switch(count):
                        for i in range(_PARAM_BYTES):
                            with m.Case(i):
                                m.d.sync += params.word_select(i, 8).eq(byte)
                    m.d.comb += [wr.addr.eq(count[2:]), wr.data.eq(Cat(partial, byte)),
                                 wr.en.eq(count[:2] == 3)]
                    with m.If(count == last_index):
                        m.d.sync += count.eq(0)
                        m.next = "CRC"
                in_frame_checks()

            with m.State("CRC"):
                m.d.comb += [rx.ready.eq(1), rx_crc.valid.eq(take)]
                with m.If(take):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == 3):
                        m.next = "CHECK"
                in_frame_checks()

            with m.State("CHECK"):
                # The CRC over header, payload and the CRC field itself leaves
                # a constant residue: no need to store the received CRC.
                # The range check's 32-bit add is registered here, off DECODE's
                # paths; length and parameters are complete by now.
                with m.If(opcode == Opcode.WRITE_MEM):
                    m.d.sync += mem_range_bad.eq(out_of_range(addr32, length - 4))
                with m.Else():
                    m.d.sync += mem_range_bad.eq(out_of_range(addr32, mem_count))
                # So are DECODE's other tests: each is a flip-flop there, and
                # the compares of length and parameters no longer run through
                # DECODE's choice into the buffer's read address and the
                # response registers (the deepest logic of the 10x11 netlist).
                m.d.sync += [
                    known.eq(Cat(opcode == op for op in Opcode if op is not Opcode.ERROR).any()),
                    is_read.eq(Cat(opcode == op for op in sorted(READ_OPCODES)).any()),
                    duplicate.eq(last_valid & (last_seq == seq) & (last_opcode == opcode)),
                    misaligned.eq(params[:2] != 0),
                    bad_length.eq(0),
                ]
                with m.Switch(opcode):
                    for op, test in bad_lengths.items():
                        with m.Case(op):
                            m.d.sync += bad_length.eq(test)
                with m.If(tainted | ~rx_crc.residue_ok):
                    error(Status.BAD_CRC)
                with m.Else():
                    m.next = "DECODE"

            # ---- execute ----------------------------------------------------
            with m.State("DECODE"):
                m.d.sync += [index.eq(0), fault.eq(0)]

                with m.If(~known):
                    respond(Status.BAD_OPCODE)
                with m.Elif(duplicate & ~is_read):
                    respond(last_status)
                with m.Else():
                    with m.Switch(opcode):
                        with m.Case(Opcode.PING):
                            with m.If(bad_length):
                                finish(Status.BAD_LENGTH)
                            with m.Else():
                                set_words(len(PING_REGISTERS))
                                m.next = "CSR_READ"
                                m.d.sync += csr_stb.eq(1)
                        with m.Case(Opcode.READ_COUNTERS):
                            with m.If(bad_length):
                                finish(Status.BAD_LENGTH)
                            with m.Else():
                                set_words(len(counter_addrs))
                                m.next = "CSR_READ"
                                m.d.sync += csr_stb.eq(1)
                        with m.Case(Opcode.READ_CSR):
                            with m.If(bad_length):
                                finish(Status.BAD_LENGTH)
                            with m.Elif(misaligned):
                                finish(Status.BAD_ADDRESS)
                            with m.Else():
                                set_words(1)
                                m.next = "CSR_READ"
                                m.d.sync += csr_stb.eq(1)
                        with m.Case(Opcode.WRITE_CSR):
                            with m.If(bad_length):
                                finish(Status.BAD_LENGTH)
                            with m.Elif(misaligned):
                                finish(Status.BAD_ADDRESS)
                            with m.Else():
                                m.next = "CSR_WRITE"
                        with m.Case(Opcode.WRITE_MEM):
                            with m.If(bad_length):
                                finish(Status.BAD_LENGTH)
                            with m.Elif(misaligned | mem_range_bad):
                                finish(Status.BAD_ADDRESS)
                            with m.Else():
                                # length is a multiple of 4: (length - 1) // 4 words.
                                set_words(last_index[2:])
                                m.d.comb += ptr_next.eq(1)      # data follows the address
                                m.next = "MEM_CMD"
                        with m.Case(Opcode.READ_MEM):
                            with m.If(bad_length):
                                finish(Status.BAD_LENGTH)
                            with m.Elif(misaligned | mem_range_bad):
                                finish(Status.BAD_ADDRESS)
                            with m.Else():
                                set_words(mem_count[2:])
                                m.next = "MEM_CMD"
                        with m.Case(Opcode.RUN):
                            with m.If(bad_length):
                                finish(Status.BAD_LENGTH)
                            with m.Elif(run_too_long):
                                finish(Status.BUSY)
                            with m.Else():
                                set_words(length[2:])
                                m.d.comb += ptr_next.eq(0)
                                m.next = "RUN"

            with m.State("CSR_READ"):
                m.next = "CSR_READ_DATA"

            with m.State("CSR_READ_DATA"):
                m.d.comb += [wr.addr.eq(index), wr.data.eq(csr.r_data), wr.en.eq(1)]
                m.d.sync += index.eq(index + 1)
                with m.If(index == words_last):
                    with m.If(fault | csr.error):
                        finish(Status.BAD_ADDRESS)
                    with m.Else():
                        finish(Status.OK, words=words)
                with m.Else():
                    m.d.sync += fault.eq(fault | csr.error)
                    m.next = "CSR_READ"
                    m.d.sync += csr_stb.eq(1)

            with m.State("CSR_WRITE"):
                m.d.comb += [csr.w_data.eq(csr_value), csr.w_stb.eq(1)]
                m.next = "CSR_WRITE_DONE"

            with m.State("CSR_WRITE_DONE"):
                with m.If(csr.error):
                    finish(Status.BAD_ADDRESS)
                with m.Else():
                    finish(Status.OK)

            with m.State("MEM_CMD"):
                m.d.comb += [
                    mem.cmd.valid.eq(1),
                    mem.cmd.payload.addr.eq(addr32),
                    mem.cmd.payload.words.eq(words),
                    mem.cmd.payload.write.eq(opcode == Opcode.WRITE_MEM),
                ]
                with m.If(mem.cmd.ready):
                    with m.If(opcode == Opcode.WRITE_MEM):
                        m.next = "MEM_WRITE"
                    with m.Else():
                        m.next = "MEM_READ"

            with m.State("MEM_WRITE"):
                m.d.comb += [mem.w.valid.eq(1), mem.w.payload.eq(rd.data)]
                with m.If(mem.w.ready):
                    m.d.comb += ptr_next.eq(ptr + 1)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == words_last):
                        m.next = "MEM_RESPONSE"

            with m.State("MEM_READ"):
                m.d.comb += [mem.r.ready.eq(1), wr.addr.eq(index), wr.data.eq(mem.r.payload),
                             wr.en.eq(mem.r.valid)]
                with m.If(mem.r.valid):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == words_last):
                        m.next = "MEM_RESPONSE"

            with m.State("MEM_RESPONSE"):
                m.d.comb += mem.resp.ready.eq(1)
                with m.If(mem.resp.valid):
                    with m.If(mem.resp.payload.fault):
                        finish(Status.BAD_ADDRESS)
                    with m.Elif(opcode == Opcode.READ_MEM):
                        finish(Status.OK, words=words)
                    with m.Else():
                        finish(Status.OK)

            with m.State("RUN"):
                m.d.comb += [cmd.valid.eq(1), cmd.payload.eq(rd.data)]
                with m.If(cmd.ready):
                    m.d.comb += ptr_next.eq(ptr + 1)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == words_last):
                        finish(Status.OK)

            # ---- respond ----------------------------------------------------
            # SYNC, opcode, seq, length, status, data words, CRC; the CRC
            # covers everything after SYNC up to the last data byte.
            with m.State("SEND_HEADER"):
                resp_length = Signal(16)
                m.d.comb += resp_length.eq(1 + 4 * resp_words)
                header = Array([Const(SYNC[0], 8), Const(SYNC[1], 8), resp_opcode, seq,
                                resp_length[:8], resp_length[8:], resp_status])
                with m.If(load):
                    emit(header[count[:3]], in_crc=count >= len(SYNC))
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == len(header) - 1):
                        m.d.sync += [lane.eq(0), index.eq(0)]
                        with m.If(resp_words == 0):
                            m.next = "SEND_CRC"
                        with m.Else():
                            m.next = "SEND_DATA"

            with m.State("SEND_DATA"):
                with m.If(load):
                    emit(rd.data.word_select(lane[:2], 8), in_crc=1)
                    m.d.sync += lane.eq(lane + 1)
                    with m.If(lane == 3):
                        m.d.sync += [lane.eq(0), index.eq(index + 1)]
                        m.d.comb += ptr_next.eq(ptr + 1)
                        with m.If(index == resp_last):
                            m.next = "SEND_CRC"

            with m.State("SEND_CRC"):
                # The CRC is final once the last covered byte has left the
                # output register: at full rate, one idle cycle before it.
                with m.If(lane == 4):
                    # Hold the receiver off until the last byte is taken.
                    with m.If(tx.ready):
                        m.next = "HUNT"
                with m.Elif(load & ~(tx_full & tx_in_crc)):
                    emit(tx_crc.value.word_select(lane[:2], 8), in_crc=0)
                    m.d.sync += lane.eq(lane + 1)
        # The CSR read address is registered a cycle ahead (DECODE reads word
        # 0, CSR_READ_DATA the next): the opcode-and-index select in front of
        # the bank's address decode was the SoC's critical path on ECP5.
        read_next = Mux(fsm.ongoing("CSR_READ_DATA"), index + 1, 0)
        with m.Switch(opcode):
            with m.Case(Opcode.PING):
                m.d.sync += csr_addr.eq(ping_addrs[read_next])
            with m.Case(Opcode.READ_COUNTERS):
                m.d.sync += csr_addr.eq(counter_addrs[read_next])
            with m.Default():
                m.d.sync += csr_addr.eq(addr16[2:])
        return m
