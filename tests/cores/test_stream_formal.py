# amaranth: UnusedElaboratable=no
"""Formal proof, by k-induction in SymbiYosys (``yowasp-sby``, ``mode prove``,
``smtbmc yices``), that SkidBuffer obeys the stream contract and neither
loses, duplicates nor reorders data; and that the same harness catches
broken buffers with a counterexample from reset."""

import pytest
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume, Cover, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from fecaffe_hw.cores.skid_buffer import SkidBuffer
from formal import assert_proved, assert_refuted, requires_solver, white_box

pytestmark = requires_solver

PAYLOAD_BITS = 4
COUNT_BITS = 3
# The invariants below make the contract 1-inductive, so depth 1 is a
# complete proof. Counterexamples need longer traces: the "corrupt" buffer's
# shows only after six accepted words and their delivery (step 6).
PROOF_DEPTH = 1
BUG_DEPTH = 10


class StreamContract(Elaboratable):
    """Harness: free inputs drive ``dut.i`` and ``dut.o.ready``; asserts the
    stream properties on ``dut.o`` and a scoreboard that follows one
    arbitrary (``AnyConst``) transfer index from input to output.

    ``dut`` is a two-entry skid buffer: an output register (``o.valid``,
    ``o.payload``) and a skid register that is full exactly when ``i.ready``
    is low, its word in an internal signal named ``skid``. The ``inv_*``
    assertions tie that state to the scoreboard so that k-induction closes;
    without them a stalled skid register could hold any word for any number
    of cycles. They are assertions too, so a pass proves them as well;
    ``invariants=False`` leaves only the contract, so that a counterexample
    names the stream rule a broken buffer violates rather than the first
    internal inconsistency.
    """

    def __init__(self, dut, *, invariants=True):
        self.dut = dut
        self.invariants = invariants

    def elaborate(self, platform):
        m = Module()
        fragment, internals = white_box(self.dut, platform)
        m.submodules.dut = fragment
        dut = self.dut
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
            m.d.comb += Assert(dut.o.valid, "valid_withdrawn")
            m.d.comb += Assert(dut.o.payload == held, "payload_changed")

        # (c): counts of accepted and delivered words (modulo 2**COUNT_BITS);
        # the word accepted at index `chosen` must be the one delivered there.
        in_count = Signal(COUNT_BITS)
        out_count = Signal(COUNT_BITS)
        m.d.sync += [in_count.eq(in_count + accepted), out_count.eq(out_count + delivered)]
        occupancy = (in_count - out_count)[:COUNT_BITS]
        m.d.comb += Assert(occupancy <= 2, "occupancy_bound")
        m.d.comb += Assert(~dut.o.valid | (occupancy != 0), "valid_without_data")
        chosen = AnyConst(COUNT_BITS)
        armed = Signal()
        recorded = Signal(PAYLOAD_BITS)
        with m.If(delivered & (out_count == chosen)):
            m.d.comb += Assert(armed & (dut.o.payload == recorded), "data_mismatch")
            m.d.sync += armed.eq(0)
        with m.If(accepted & (in_count == chosen)):
            m.d.sync += [armed.eq(1), recorded.eq(dut.i.payload)]

        skid_full = ~dut.i.ready
        # Not vacuous: the assumptions allow the buffer to fill and the
        # chosen word to come out after waiting behind another.
        m.d.comb += Cover(skid_full & dut.o.valid & ~dut.o.ready)
        m.d.comb += Cover(delivered & armed & (out_count == chosen) & (chosen == 3))
        if not self.invariants:
            return m

        # Strengthening invariants. `position` is how many words are ahead
        # of the chosen one in the buffer: 0 means the output register.
        m.d.comb += Assert(occupancy == dut.o.valid + skid_full, "inv_occupancy")
        m.d.comb += Assert(~skid_full | dut.o.valid, "inv_skid_behind_output")
        position = (chosen - out_count)[:COUNT_BITS]
        m.d.comb += Assert(armed == (position < occupancy), "inv_armed")
        with m.If(armed & (position == 0)):
            m.d.comb += Assert(dut.o.payload == recorded, "inv_output_word")
        if "skid" in internals:
            with m.If(armed & (position == 1)):
                m.d.comb += Assert(internals["skid"] == recorded, "inv_skid_word")
        return m


@pytest.mark.parametrize("gate_payload", [True, False])
def test_skid_buffer_proof(tmp_path, gate_payload):
    assert_proved(StreamContract(SkidBuffer(PAYLOAD_BITS, gate_payload=gate_payload)), tmp_path,
                  depth=PROOF_DEPTH)


def test_skid_buffer_harness_is_not_vacuous(tmp_path):
    assert_proved(StreamContract(SkidBuffer(PAYLOAD_BITS)), tmp_path, mode="cover",
                  depth=BUG_DEPTH)


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
    assert_refuted(StreamContract(_BrokenBuffer(bug), invariants=False), tmp_path,
                   expected=caught, depth=BUG_DEPTH)


def test_broken_buffers_also_fail_with_invariants(tmp_path):
    # The invariants are assertions too: they cannot hide a bug, only be
    # the first thing a bug breaks.
    assert_refuted(StreamContract(_BrokenBuffer("drop")), tmp_path,
                   expected={"inv_occupancy", "data_mismatch", "occupancy_bound"}, depth=BUG_DEPTH)


def test_correct_variant_of_the_broken_buffer_passes(tmp_path):
    # The broken buffers differ from this one only in their bug.
    assert_proved(StreamContract(_BrokenBuffer(None)), tmp_path, depth=PROOF_DEPTH)
