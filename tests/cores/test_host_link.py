# amaranth: UnusedElaboratable=no
"""UartHostLink at the pin level: a host model bit-bangs request frames onto
``rx`` at a few percent off the nominal baud rate and samples ``tx`` with the
same clock; responses must match the protocol's Python device model."""

import struct

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import wiring

from fecaffe_hw.cores.axi_master import AxiMaster
from fecaffe_hw.cores.axi_ram import AxiRam
from fecaffe_hw.cores.csr_bank import CsrBank
from fecaffe_hw.cores.host_link import UartHostLink
from fecaffe_hw.runtime import regmap
from fecaffe_hw.runtime.protocol import (
    READ_CSR_REQUEST, READ_MEM_REQUEST, WRITE_CSR_REQUEST, WRITE_MEM_HEADER, Frame,
    FrameDecoder, Opcode, Status, encode_request,
)
from fake_device import FakeDevice
from support import simulate, uart_receive, uart_send

CLK_FREQ = 8e6
BAUD = 1e6             # 8 cycles per bit
TIMEOUT = 400          # 5 byte times
MEM_SIZE = 4096
PLAN_HASH = 0x0BADF00D


class LinkSoc(Elaboratable):
    """The link with a CSR bank, tensor memory and a command FIFO stand-in."""

    def __init__(self, *, fifo_depth=8):
        self.link = UartHostLink(clk_freq=CLK_FREQ, baud=BAUD, timeout=TIMEOUT,
                                 mem_size=MEM_SIZE)
        self.fifo_depth = fifo_depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self.link
        m.submodules.bank = bank = CsrBank(regmap.REGISTERS)
        m.submodules.master = master = AxiMaster()
        m.submodules.ram = ram = AxiRam(size=MEM_SIZE, latency=4)
        wiring.connect(m, link.csr, bank.bus)
        wiring.connect(m, link.mem, master.bus)
        wiring.connect(m, master.axi, ram.axi)
        pushed = Signal(16)
        with m.If(link.cmd.valid & link.cmd.ready):
            m.d.sync += pushed.eq(pushed + 1)
        m.d.comb += [
            link.cmd.ready.eq(1),
            link.cmd_space.eq(self.fifo_depth - pushed),
            bank.field("PLAN_HASH", "value").eq(PLAN_HASH),
        ]
        return m


def exchange(steps, *, mismatch, name):
    """Send ``steps`` (bytes, truncated) through the pins with a host whose
    bit time is off by ``mismatch`` (+0.02: 2 % fast); return the responses
    and the model's."""
    soc = LinkSoc()
    link = soc.link
    device = FakeDevice(mem_size=MEM_SIZE, cmd_fifo_depth=soc.fifo_depth, plan_hash=PLAN_HASH,
                        inter_byte_timeout=0.5)
    expected, counts = [], []
    for t, (data, truncated) in enumerate(steps):
        out = device.receive(data, float(t))
        if truncated:
            out += device.expire(t + 0.9)
        expected += FrameDecoder().feed(out)
        counts.append(len(expected))

    bit = link.cycles_per_bit / (1 + mismatch)
    got = []

    async def send(ctx):
        for (data, _), count in zip(steps, counts):
            await uart_send(ctx, link.rx, data, bit_cycles=bit)
            while len(got) < count:
                await ctx.tick()

    async def receive(ctx):
        decoder = FrameDecoder()
        while len(got) < len(expected):
            got.extend(decoder.feed([await uart_receive(ctx, link.tx, bit_cycles=bit)]))

    simulate(soc, send, receive, name=name, deadline_cycles=400_000)
    return got, expected


def requests():
    data = bytes(range(7, 7 + 36))
    return [
        encode_request(Opcode.PING, 1),
        encode_request(Opcode.WRITE_MEM, 2, WRITE_MEM_HEADER.pack(0x80) + data),
        encode_request(Opcode.READ_MEM, 3, READ_MEM_REQUEST.pack(0x80, len(data))),
        encode_request(Opcode.WRITE_CSR, 4, WRITE_CSR_REQUEST.pack(regmap.Reg.SCRATCH, 0xA5A55A5A)),
        encode_request(Opcode.READ_CSR, 5, READ_CSR_REQUEST.pack(regmap.Reg.SCRATCH)),
        encode_request(Opcode.RUN, 6, struct.pack("<3I", 1, 2, 3)),
    ]


@pytest.mark.parametrize("mismatch", [-0.02, 0.0, 0.02])
def test_frames_through_the_pins(mismatch):
    frames = requests()
    steps = [(frame, False) for frame in frames]
    got, expected = exchange(steps, mismatch=mismatch, name=f"host_link_{mismatch:+.2f}")
    assert got == expected
    assert all(isinstance(e, Frame) and e.status == Status.OK for e in got)
    assert got[2].data == bytes(range(7, 7 + 36))


def test_cut_off_frame_times_out_and_the_next_one_works():
    frame = encode_request(Opcode.WRITE_CSR, 9, WRITE_CSR_REQUEST.pack(regmap.Reg.SCRATCH, 1))
    steps = [(frame[:7], True), (frame, False),
             (encode_request(Opcode.READ_CSR, 10, READ_CSR_REQUEST.pack(regmap.Reg.SCRATCH)),
              False)]
    got, expected = exchange(steps, mismatch=0.01, name="host_link_timeout")
    assert got == expected
    assert got[0] == Frame(Opcode.ERROR, 9, bytes([Status.TIMEOUT]))
    assert got[2].data == struct.pack("<I", 1)


def test_parameters_validated():
    with pytest.raises(ValueError, match="cycles per bit"):
        UartHostLink(clk_freq=10e6, baud=5e6)
    with pytest.raises(ValueError, match="timeout"):
        UartHostLink(clk_freq=10e6, baud=1e6, timeout=-1)
