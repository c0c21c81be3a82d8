"""Stream register slice that breaks the valid and ready timing paths."""

from amaranth.hdl import Module, Mux, Signal, Shape
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Two-entry skid buffer: ``o`` replays ``i`` one cycle later.

    Ports: ``i`` (stream in), ``o`` (stream out), both of ``payload_shape``.
    Latency one cycle; throughput one transfer per cycle on both sides.
    ``i.ready``, ``o.valid`` and ``o.payload`` come straight from registers:
    there is no combinational path from ``o.ready`` to ``i.ready`` nor from
    ``i.valid`` to ``o.valid``. When ``o`` stalls, the word already accepted
    on ``i`` that cycle waits in the skid register and ``i.ready`` drops.

    With ``gate_payload=False`` the payload registers load whenever they are
    free, whether or not a word is accepted (the valid bits say which hold
    one): ``i.valid`` then reaches only the two valid bits, not the payload
    registers' enables, which matters when ``i.valid`` is late and the
    payload wide.
    """

    def __init__(self, payload_shape, *, gate_payload=True):
        try:
            Shape.cast(payload_shape)
        except TypeError as error:
            raise TypeError(f"Payload shape must be shape-castable, not {payload_shape!r}") \
                from error
        if not isinstance(gate_payload, bool):
            raise TypeError(f"gate_payload must be a bool, not {gate_payload!r}")
        self._payload_shape = payload_shape
        self._gate_payload = gate_payload
        super().__init__({
            "i": In(stream.Signature(payload_shape)),
            "o": Out(stream.Signature(payload_shape)),
        })

    @property
    def payload_shape(self):
        return self._payload_shape

    def elaborate(self, platform):
        m = Module()
        skid_valid = Signal()
        skid = Signal.like(self.i.payload, name="skid")

        m.d.comb += self.i.ready.eq(~skid_valid)
        accepted = self.i.valid & self.i.ready

        if not self._gate_payload:
            with m.If(~self.o.valid | self.o.ready):
                m.d.sync += self.o.payload.eq(Mux(skid_valid, skid, self.i.payload))
            with m.If(~skid_valid):
                m.d.sync += skid.eq(self.i.payload)
        with m.If(~self.o.valid | self.o.ready):
            # The output register is free this cycle: refill it from the skid
            # register first (older data), else from the input.
            with m.If(skid_valid):
                m.d.sync += [self.o.valid.eq(1), skid_valid.eq(0)]
                if self._gate_payload:
                    m.d.sync += self.o.payload.eq(skid)
            with m.Else():
                m.d.sync += self.o.valid.eq(accepted)
                if self._gate_payload:
                    with m.If(accepted):
                        m.d.sync += self.o.payload.eq(self.i.payload)
        with m.Elif(accepted):
            m.d.sync += skid_valid.eq(1)
            if self._gate_payload:
                m.d.sync += skid.eq(self.i.payload)
        return m
