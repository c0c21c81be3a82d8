"""CSR bank built from a register table (``fecaffe_hw.runtime.regmap.REGISTERS``).

The bank answers the :class:`~fecaffe_hw.cores.csr_bus.CsrBus` and exposes
each register's fields to the SoC as ports, in one sub-interface per register
named by the register's name in lower case (``bank.status.busy``,
``bank.control.enable``); :meth:`CsrBank.field` finds them by the table's
names. Per field access kind:

- ``RO``: ``In(width)``, driven by the SoC; an undriven field reads its
  ``reset`` value (so constant fields such as ID need no driver).
- ``RW``: ``Out(width)``, the value last written (``reset`` after reset).
- ``SC``: ``Out(width)``, high for the one cycle after a write of 1; reads 0.
- ``W1C``: ``Out(width)`` with the sticky value and ``In(width)``
  ``<field>_set``: a 1 sets the bit, writing 1 clears it; a set and a clear in
  the same cycle leave the bit set, so no event is lost.

Registers whose ``counter`` names a 64-bit counter come in pairs (the lower
address is LO). The bank holds those counters: ``bank.counters.<name>``
(``In(increment_width)``) is added every cycle through one pipeline
register: an increment presented in cycle t is in the count that a read
issued in cycle t + 2 returns (one cycle later than an unpipelined adder).
``bank.counters_clear`` zeroes all of them; the count then holds exactly the
increments presented after the clear cycle, as without the pipeline register
(the one in flight is dropped with it). Reading LO returns bits 31:0 and
latches bits 63:32 into the counter's HI register, so LO then HI reads one
consistent value.

Unmapped addresses read 0 and raise ``bus.error``; so does a write to a
register with nothing writable (it has no effect). Latency: one cycle, one
access per cycle.
"""

from amaranth.hdl import Module, Signal, Const, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .csr_bus import CsrBus

__all__ = ["CsrBank"]


def _access(kind):
    name = getattr(kind, "name", kind)
    name = str(name).upper()
    if name not in ("RO", "RW", "W1C", "SC"):
        raise ValueError(f"Unknown access kind {kind!r}")
    return name


class CsrBank(wiring.Component):
    """Register bank implementing ``registers`` (see the module docstring).

    Parameters: ``registers`` (a table of Register(name, address, access,
    fields, ..., counter) objects), ``addr_width`` of the CSR bus (word
    address bits, default 14), ``increment_width`` of counter increments
    (1..32, default 16).
    """

    def __init__(self, registers, *, addr_width=14, increment_width=16):
        registers = tuple(registers)
        if isinstance(increment_width, bool) or not isinstance(increment_width, int) \
                or not 1 <= increment_width <= 32:
            raise ValueError(f"Counter increment width must be an integer in [1, 32], "
                             f"not {increment_width!r}")
        bus = CsrBus(addr_width=addr_width)
        self._registers, self._increment_width = registers, increment_width

        members = {"bus": In(bus), "counters_clear": In(1)}
        seen_addresses, counters = {}, {}
        for reg in registers:
            word = reg.address // 4
            if reg.address % 4 or word >> addr_width:
                raise ValueError(f"Register {reg.name} at {reg.address:#x} is not a word "
                                 f"address within {addr_width} address bits")
            if word in seen_addresses:
                raise ValueError(f"Registers {seen_addresses[word]} and {reg.name} share "
                                 f"address {reg.address:#x}")
            seen_addresses[word] = reg.name
            port_name = reg.name.lower()
            if port_name in members or hasattr(type(self), port_name):
                raise ValueError(f"Register name {reg.name!r} clashes with another port "
                                 f"or attribute of the bank")
            if getattr(reg, "counter", None) is not None:
                counters.setdefault(reg.counter, []).append(reg)
                continue
            fields = {}
            for f in reg.fields:
                kind = _access(f.access)
                if kind == "RO":
                    fields[f.name] = In(f.width, init=f.reset)
                elif kind in ("RW", "SC"):
                    fields[f.name] = Out(f.width, init=f.reset if kind == "RW" else 0)
                else:
                    fields[f.name] = Out(f.width, init=f.reset)
                    fields[f"{f.name}_set"] = In(f.width)
            if len(fields) != sum(2 if _access(f.access) == "W1C" else 1 for f in reg.fields):
                raise ValueError(f"Register {reg.name}: field names clash")
            if fields:
                members[port_name] = Out(wiring.Signature(fields))

        self._counters = {}
        for name, pair in counters.items():
            if len(pair) != 2:
                raise ValueError(f"Counter {name} needs exactly two registers (LO, HI), "
                                 f"not {len(pair)}")
            lo, hi = sorted(pair, key=lambda r: r.address)
            self._counters[name] = (lo, hi)
        if self._counters:
            members["counters"] = Out(wiring.Signature({
                name.lower(): In(increment_width) for name in self._counters}))
        super().__init__(members)

    @property
    def registers(self):
        return self._registers

    @property
    def increment_width(self):
        return self._increment_width

    @property
    def counter_names(self):
        return tuple(self._counters)

    def field(self, register, field):
        """The port of ``field`` of ``register`` (table names, e.g.
        ``field("STATUS", "busy")``); for a W1C field its value, and
        ``field(reg, name + "_set")`` its set input."""
        try:
            return getattr(getattr(self, register.lower()), field)
        except AttributeError:
            raise KeyError(f"CSR bank has no field {field!r} in register {register!r}") \
                from None

    def counter(self, name):
        """The increment input of counter ``name`` (e.g. ``"MACS"``)."""
        if name not in self._counters:
            raise KeyError(f"CSR bank has no counter {name!r}")
        return getattr(self.counters, name.lower())

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        r_data = Signal(32)
        error = Signal()
        m.d.comb += [bus.r_data.eq(r_data), bus.error.eq(error)]
        m.d.sync += [r_data.eq(0), error.eq(0)]

        counter_values = {}
        for name, (lo, hi) in self._counters.items():
            value = Signal(64, name=f"counter_{name.lower()}")
            hi_latch = Signal(32, name=f"counter_{name.lower()}_hi")
            counter_values[name] = (value, hi_latch)
            # The increment comes combinationally from the sequencer's decode:
            # register it before the 64-bit carry chain (ECP5 Fmax).
            increment = Signal(self._increment_width, name=f"counter_{name.lower()}_inc")
            with m.If(self.counters_clear):
                # The increment in flight was presented before or in the
                # clear cycle: dropping it keeps the clear exact.
                m.d.sync += [value.eq(0), increment.eq(0)]
            with m.Else():
                m.d.sync += [value.eq(value + increment),
                             increment.eq(getattr(self.counters, name.lower()))]

        # Self-clearing pulses last one cycle unless written again.
        for reg in self._registers:
            for f in reg.fields:
                if getattr(reg, "counter", None) is None and _access(f.access) == "SC":
                    m.d.sync += self.field(reg.name, f.name).eq(0)

        w1c_clear = {}
        with m.Switch(bus.addr):
            for reg in self._registers:
                with m.Case(reg.address // 4):
                    if getattr(reg, "counter", None) is not None:
                        value, hi_latch = counter_values[reg.counter]
                        lo, hi = self._counters[reg.counter]
                        with m.If(bus.r_stb):
                            if reg is lo:
                                m.d.sync += [r_data.eq(value[:32]), hi_latch.eq(value[32:])]
                            else:
                                m.d.sync += r_data.eq(hi_latch)
                        with m.If(bus.w_stb):
                            m.d.sync += error.eq(1)
                        continue
                    read_parts = []
                    writable = False
                    for f in reg.fields:
                        kind = _access(f.access)
                        port = self.field(reg.name, f.name)
                        if kind != "SC":
                            read_parts.append((f.lsb, port))
                        w_bits = bus.w_data[f.lsb:f.lsb + f.width]
                        if kind in ("RW", "SC"):
                            writable = True
                            with m.If(bus.w_stb):
                                m.d.sync += port.eq(w_bits)
                        elif kind == "W1C":
                            writable = True
                            clear = Signal(f.width, name=f"{reg.name.lower()}_{f.name}_clear")
                            w1c_clear[(reg.name, f.name)] = clear
                            with m.If(bus.w_stb):
                                m.d.comb += clear.eq(w_bits)
                    word = Const(0, 32)
                    for lsb, port in read_parts:
                        word = word | (Value.cast(port) << lsb)
                    with m.If(bus.r_stb):
                        m.d.sync += r_data.eq(word[:32])
                    if not writable:
                        with m.If(bus.w_stb):
                            m.d.sync += error.eq(1)
            with m.Default():
                with m.If(bus.r_stb | bus.w_stb):
                    m.d.sync += error.eq(1)

        for (reg_name, field_name), clear in w1c_clear.items():
            value = self.field(reg_name, field_name)
            set_ = self.field(reg_name, field_name + "_set")
            m.d.sync += value.eq((value & ~clear) | set_)
        return m
