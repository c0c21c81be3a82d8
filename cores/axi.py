"""AXI4, AXI4-Lite and AXI4-Stream as Amaranth signatures.

Every AXI channel is a ``lib.stream`` channel: ``valid``/``ready`` are AXI's
``xVALID``/``xREADY`` and the payload's fields are the channel's signals
without their prefix (``aw.payload.addr`` is ``AWADDR``, ``r.payload.last`` is
``RLAST``, an AXI-Stream ``payload.keep`` is ``TKEEP``). :func:`amba_ports`
lists the AMBA names and signals of an interface, for Verilog top levels that meet a
vendor IP (MIG, XDMA). Signatures take the master's view.

AXI4 channels carry ``id``, ``addr``, ``len`` (beats - 1), ``size``
(log2 bytes per beat), ``burst``, ``lock``, ``cache``, ``prot``; ``w`` carries
``data``, ``strb``, ``last``; ``b`` carries ``id``, ``resp``; ``r`` carries
``id``, ``data``, ``resp``, ``last``.
"""

from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "Burst", "Resp", "AxiSignature", "AxiLiteSignature", "AxiStreamSignature",
    "amba_ports", "BOUNDARY_BYTES",
]

#: An AXI burst must not cross a 4 KB boundary.
BOUNDARY_BYTES = 4096


class Burst(enum.Enum, shape=2):
    FIXED = 0
    INCR = 1
    WRAP = 2


class Resp(enum.Enum, shape=2):
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


def _check_width(what, value, *, low, high, power_of_two=False):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high \
            or (power_of_two and value & (value - 1)):
        kind = "a power of two" if power_of_two else "an integer"
        raise ValueError(f"AXI {what} must be {kind} in [{low}, {high}], not {value!r}")


class AxiSignature(wiring.Signature):
    """AXI4 (full) master: ``aw``, ``w``, ``ar`` Out; ``b``, ``r`` In.

    Parameters: ``addr_width`` (1..64), ``data_width`` (8..1024, a power of
    two), ``id_width`` (0..32).
    """

    def __init__(self, *, addr_width, data_width, id_width=1):
        _check_width("address width", addr_width, low=1, high=64)
        _check_width("data width", data_width, low=8, high=1024, power_of_two=True)
        _check_width("ID width", id_width, low=0, high=32)
        self._addr_width, self._data_width, self._id_width = addr_width, data_width, id_width
        address = data.StructLayout({
            "id": id_width, "addr": addr_width, "len": 8, "size": 3, "burst": Burst,
            "lock": 1, "cache": 4, "prot": 3,
        })
        super().__init__({
            "aw": Out(stream.Signature(address)),
            "w":  Out(stream.Signature(data.StructLayout({
                "data": data_width, "strb": data_width // 8, "last": 1}))),
            "b":  In(stream.Signature(data.StructLayout({"id": id_width, "resp": Resp}))),
            "ar": Out(stream.Signature(address)),
            "r":  In(stream.Signature(data.StructLayout({
                "id": id_width, "data": data_width, "resp": Resp, "last": 1}))),
        })

    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)
    id_width = property(lambda self: self._id_width)

    def __eq__(self, other):
        return (type(other) is type(self) and self.addr_width == other.addr_width
                and self.data_width == other.data_width and self.id_width == other.id_width)

    def __hash__(self):
        return hash((type(self), self.addr_width, self.data_width, self.id_width))

    def __repr__(self):
        return (f"AxiSignature(addr_width={self.addr_width}, data_width={self.data_width}, "
                f"id_width={self.id_width})")


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite master: ``aw`` {addr, prot}, ``w`` {data, strb}, ``ar`` {addr, prot}
    Out; ``b`` {resp}, ``r`` {data, resp} In. ``data_width`` is 32 or 64."""

    def __init__(self, *, addr_width, data_width=32):
        _check_width("address width", addr_width, low=1, high=64)
        if data_width not in (32, 64):
            raise ValueError(f"AXI4-Lite data width must be 32 or 64, not {data_width!r}")
        self._addr_width, self._data_width = addr_width, data_width
        address = data.StructLayout({"addr": addr_width, "prot": 3})
        super().__init__({
            "aw": Out(stream.Signature(address)),
            "w":  Out(stream.Signature(data.StructLayout({
                "data": data_width, "strb": data_width // 8}))),
            "b":  In(stream.Signature(data.StructLayout({"resp": Resp}))),
            "ar": Out(stream.Signature(address)),
            "r":  In(stream.Signature(data.StructLayout({"data": data_width, "resp": Resp}))),
        })

    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)

    def __eq__(self, other):
        return (type(other) is type(self) and self.addr_width == other.addr_width
                and self.data_width == other.data_width)

    def __hash__(self):
        return hash((type(self), self.addr_width, self.data_width))

    def __repr__(self):
        return f"AxiLiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


def AxiStreamSignature(data_width):
    """AXI4-Stream transmitter: a ``lib.stream.Signature`` whose payload is
    ``{data: data_width, keep: data_width // 8, last: 1}`` (TDATA, TKEEP,
    TLAST; valid/ready are TVALID/TREADY). ``data_width`` is 8..1024, a
    multiple of 8."""
    if isinstance(data_width, bool) or not isinstance(data_width, int) \
            or not 8 <= data_width <= 1024 or data_width % 8:
        raise ValueError(f"AXI-Stream data width must be a multiple of 8 in [8, 1024], "
                         f"not {data_width!r}")
    return stream.Signature(data.StructLayout({
        "data": data_width, "keep": data_width // 8, "last": 1}))


_CHANNEL_PREFIX = {"aw": "AW", "w": "W", "b": "B", "ar": "AR", "r": "R"}


def amba_ports(signature, interface):
    """Yield ``(name, flow, value)`` for every AMBA signal of ``interface``
    (an object of ``signature``, one of this module's): ``("AWADDR", Out,
    <slice>)``, ``("RREADY", Out, <signal>)``, ``("TKEEP", Out, ...)``, with
    flows seen from the side that holds ``signature``. For top levels that
    connect to a vendor IP's Verilog ports (MIG, XDMA)."""
    for path, leaf, value in signature.flatten(interface):
        flow = leaf.flow
        if path[0] in _CHANNEL_PREFIX:
            prefix, rest = _CHANNEL_PREFIX[path[0]], path[1:]
            member = signature.members[path[0]].signature.members[rest[0]]
        else:
            prefix, rest = "T", path
            member = signature.members[rest[0]]
        if rest == ("payload",):
            layout = data.Layout.cast(member.shape)
            view = data.View(layout, value)
            for name, _field in layout:
                yield prefix + name.upper(), flow, view[name].as_value() \
                    if hasattr(view[name], "as_value") else view[name]
        else:
            yield prefix + rest[0].upper(), flow, value
