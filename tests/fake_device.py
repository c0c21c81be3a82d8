"""A pure-Python device that speaks the host protocol, and an in-process
transport to it with a virtual clock and fault injection.

:class:`FakeDevice` implements the device half of runtime/protocol.py and the
registers of runtime/regmap.py: CSRs with RO/RW/W1C/SC semantics and latched
64-bit counters, a bytearray tensor memory, a command FIFO, and the
duplicate-frame rule (writes and RUN run once per seq/opcode). Command words
are opaque here: the model's sequencer takes one word per command and only
counts it, so it can later grow into the functional-model device.

:class:`FakeTransport` connects a :class:`~fecaffe_hw.runtime.link.HostLink`
to a device. Time is virtual (:class:`VirtualClock`): a read that finds no
bytes advances the clock instead of sleeping, so timeouts cost nothing.
Faults are functions ``bytes -> bytes`` applied to whole writes (host to
device) or whole responses (device to host), consumed one per write/response
(``None`` passes the bytes unchanged).
"""

import collections
import math
import struct

from fecaffe_hw.runtime import regmap
from fecaffe_hw.runtime.protocol import (
    COUNTER_FORMAT, MAX_MEM_DATA, PING_RESPONSE, READ_CSR_REQUEST, READ_CSR_RESPONSE,
    READ_MEM_REQUEST, READ_OPCODES, RESPONSE_FLAG, WRITE_CSR_REQUEST, WRITE_MEM_HEADER,
    BadFrame, FrameDecoder, Opcode, Status, encode_error, encode_frame, encode_response,
)

__all__ = ["FakeDevice", "FakeTransport", "VirtualClock",
           "drop", "flip", "truncate", "lose", "duplicate", "random_fault"]


class VirtualClock:
    def __init__(self, start=0.0):
        self.time = start

    def now(self):
        return self.time

    def sleep(self, seconds):
        self.time += max(0.0, seconds)


class FakeDevice:
    """The device side of the protocol.

    ``mem_size`` bytes of tensor memory, a ``cmd_fifo_depth``-word command
    FIFO drained at ``commands_per_second`` while CONTROL.enable is set (None:
    only :meth:`drain` executes commands), and an ``inter_byte_timeout``
    after which a partial frame is answered with ERROR / TIMEOUT.
    """

    def __init__(self, *, mem_size=64 * 1024, cmd_fifo_depth=64, commands_per_second=None,
                 inter_byte_timeout=0.01, plan_hash=0, capabilities=0, array=0,
                 device_id=regmap.ID_VALUE, version=regmap.VERSION_VALUE):
        if mem_size <= 0 or mem_size % 4096:
            raise ValueError(f"Memory size must be a positive multiple of 4096, not {mem_size!r}")
        if cmd_fifo_depth < 1:
            raise ValueError(f"Command FIFO depth must be at least 1, not {cmd_fifo_depth!r}")
        self.mem_size, self.cmd_fifo_depth = mem_size, cmd_fifo_depth
        self.commands_per_second = commands_per_second
        self.inter_byte_timeout = inter_byte_timeout
        self.constants = {"ID": device_id, "VERSION": version, "CAPABILITIES": capabilities,
                          "ARRAY": array, "PLAN_HASH": plan_hash & 0xFFFFFFFF,
                          "MEM_SIZE": mem_size // 4096}
        self.memory = bytearray(mem_size)
        self.decoder = FrameDecoder()
        self.last_byte_time = 0.0
        self.executions = collections.Counter()   # opcode -> times executed
        self.executed_commands = []               # words the sequencer took, in order
        self.bad_frames = []                      # BadFrame events seen
        self._time = 0.0
        self._reset_state()
        self._control = regmap.register("CONTROL").reset
        self._scratch = regmap.register("SCRATCH").reset

    def _reset_state(self):
        self.commands = collections.deque()
        self.errors = 0
        self.counters = {c.name: 0 for c in regmap.COUNTERS}
        self._latched_hi = {c.name: 0 for c in regmap.COUNTERS}
        self.last = None                          # (seq, opcode, status) of the last executed frame

    # Time and the sequencer.

    def advance(self, now):
        """Let the sequencer run up to time ``now``."""
        elapsed, self._time = max(0.0, now - self._time), max(now, self._time)
        self.counters["CYCLES"] += int(elapsed * 100e6)
        if self.commands_per_second is not None and self._enabled:
            self.drain(math.floor(elapsed * self.commands_per_second))

    def drain(self, n=None):
        """Execute up to ``n`` queued command words (all if None)."""
        n = len(self.commands) if n is None else min(n, len(self.commands))
        for _ in range(n):
            self.executed_commands.append(self.commands.popleft())
            self.counters["COMMANDS_DONE"] += 1

    @property
    def _enabled(self):
        return regmap.register("CONTROL").field("enable").extract(self._control)

    # Bytes in, bytes out.

    def receive(self, data, now):
        """Bytes from the host at time ``now``; returns the response bytes."""
        if not data:
            return b""
        out = self.expire(now)
        self.last_byte_time = now
        for event in self.decoder.feed(data):
            out += self._answer(event)
        return out

    def expire(self, now):
        """Answer a partial frame whose bytes stopped before ``now``."""
        if self.decoder.in_frame and now - self.last_byte_time >= self.inter_byte_timeout:
            return self._answer(self.decoder.expire())
        return b""

    def next_event_time(self):
        """When :meth:`expire` would next answer something, or None."""
        return self.last_byte_time + self.inter_byte_timeout if self.decoder.in_frame else None

    def _answer(self, event):
        if event is None:
            return b""
        if isinstance(event, BadFrame):
            self.bad_frames.append(event)
            return encode_error(event.seq, event.status)
        try:
            opcode = Opcode(event.opcode)
        except ValueError:
            opcode = None
        if opcode is None or opcode == Opcode.ERROR:
            # Not an Opcode, so encode_response would refuse it.
            return encode_frame((event.opcode | RESPONSE_FLAG) & 0xFF, event.seq,
                                bytes([Status.BAD_OPCODE]))
        if (self.last is not None and self.last[:2] == (event.seq, opcode)
                and opcode not in READ_OPCODES):
            return encode_response(opcode, event.seq, self.last[2])
        status, data = self._execute(opcode, event.payload)
        self.last = (event.seq, opcode, status)
        return encode_response(opcode, event.seq, status, data)

    # Operations.

    def _execute(self, opcode, payload):
        self.executions[opcode] += 1
        handler = getattr(self, f"_op_{opcode.name.lower()}")
        return handler(payload)

    def _op_ping(self, payload):
        if payload:
            return Status.BAD_LENGTH, b""
        c = self.constants
        return Status.OK, PING_RESPONSE.pack(c["ID"], c["VERSION"], c["CAPABILITIES"],
                                             c["PLAN_HASH"])

    def _op_read_csr(self, payload):
        if len(payload) != READ_CSR_REQUEST.size:
            return Status.BAD_LENGTH, b""
        (address,) = READ_CSR_REQUEST.unpack(payload)
        value = self.read_csr(address)
        if value is None:
            return Status.BAD_ADDRESS, b""
        return Status.OK, READ_CSR_RESPONSE.pack(value)

    def _op_write_csr(self, payload):
        if len(payload) != WRITE_CSR_REQUEST.size:
            return Status.BAD_LENGTH, b""
        address, value = WRITE_CSR_REQUEST.unpack(payload)
        return (Status.OK if self.write_csr(address, value) else Status.BAD_ADDRESS), b""

    def _op_write_mem(self, payload):
        size = len(payload) - WRITE_MEM_HEADER.size
        if size < 4 or size % 4:
            return Status.BAD_LENGTH, b""
        (address,) = WRITE_MEM_HEADER.unpack_from(payload)
        if address % 4 or address + size > self.mem_size:
            return Status.BAD_ADDRESS, b""
        self.memory[address:address + size] = payload[WRITE_MEM_HEADER.size:]
        return Status.OK, b""

    def _op_read_mem(self, payload):
        if len(payload) != READ_MEM_REQUEST.size:
            return Status.BAD_LENGTH, b""
        address, count = READ_MEM_REQUEST.unpack(payload)
        if count == 0 or count % 4 or count > MAX_MEM_DATA:
            return Status.BAD_LENGTH, b""
        if address % 4 or address + count > self.mem_size:
            return Status.BAD_ADDRESS, b""
        return Status.OK, bytes(self.memory[address:address + count])

    def _op_run(self, payload):
        if not payload or len(payload) % 4:
            return Status.BAD_LENGTH, b""
        words = struct.unpack(f"<{len(payload) // 4}I", payload)
        if len(words) > self.cmd_fifo_depth - len(self.commands):
            return Status.BUSY, b""
        self.commands.extend(words)
        return Status.OK, b""

    def _op_read_counters(self, payload):
        if payload:
            return Status.BAD_LENGTH, b""
        return Status.OK, b"".join(COUNTER_FORMAT.pack(self.counters[c.name] & (2**64 - 1))
                                   for c in regmap.COUNTERS)

    # Registers.

    def read_csr(self, address):
        """The value a read of byte ``address`` returns, or None if no register."""
        reg = regmap.register_at(address)
        if reg is None:
            return None
        if reg.counter is not None:
            value = self.counters[reg.counter] & (2**64 - 1)
            if reg.name.endswith("_LO"):
                self._latched_hi[reg.counter] = value >> 32
                return value & 0xFFFFFFFF
            return self._latched_hi[reg.counter]
        if reg.name in self.constants:
            return self.constants[reg.name]
        if reg.name == "CONTROL":
            return self._control
        if reg.name == "STATUS":
            return reg.pack(busy=int(bool(self.commands)), error=int(bool(self.errors)),
                            cmd_fifo_level=min(255, len(self.commands)))
        if reg.name == "ERROR":
            return self.errors
        if reg.name == "SCRATCH":
            return self._scratch
        if reg.name == "CMD_SPACE":
            return self.cmd_fifo_depth - len(self.commands)
        raise AssertionError(f"FakeDevice does not model register {reg.name}")

    def write_csr(self, address, value):
        """Write ``value`` to byte ``address``; False if there is no register."""
        reg = regmap.register_at(address)
        if reg is None:
            return False
        if reg.name == "CONTROL":
            rw = sum(f.mask for f in reg.fields if f.access is regmap.Access.RW)
            self._control = (self._control & ~rw) | (value & rw)
            if reg.field("soft_reset").extract(value):
                self._reset_state()
            if reg.field("clear_counters").extract(value):
                self.counters = {c.name: 0 for c in regmap.COUNTERS}
        elif reg.name == "ERROR":
            self.errors &= ~(value & reg.writable_mask)
        elif reg.name == "SCRATCH":
            self._scratch = value
        return True


class FakeTransport:
    """A :class:`~fecaffe_hw.runtime.transports.Transport` to a
    :class:`FakeDevice` in the same process, on a :class:`VirtualClock`.

    ``to_device`` / ``to_host``: fault functions consumed one per host write /
    device response. ``silent``: the device has stopped answering.
    """

    name = "fake-device"

    def __init__(self, device, *, clock=None, to_device=(), to_host=(), silent=False):
        self.device = device
        self.clock = clock or VirtualClock()
        self.to_device = list(to_device)
        self.to_host = list(to_host)
        self.silent = silent
        self.rx = bytearray()
        self.writes = []          # host writes as sent, before faults
        self.closed = False

    def write(self, data):
        assert not self.closed, "write after close"
        data = bytes(data)
        self.writes.append(data)
        self.device.advance(self.clock.now())
        if self.silent:
            return
        data = _apply(self.to_device, data)
        self._deliver(self.device.receive(data, self.clock.now()))

    def read(self, n, timeout):
        assert not self.closed, "read after close"
        self.device.advance(self.clock.now())
        if not self.rx and not self.silent:
            due = self.device.next_event_time()
            if due is not None and due <= self.clock.now() + timeout:
                self.clock.time = max(self.clock.time, due)
                self._deliver(self.device.expire(self.clock.now()))
        if not self.rx:
            self.clock.sleep(timeout)
            return b""
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def close(self):
        self.closed = True

    def _deliver(self, response):
        if response:
            self.rx += _apply(self.to_host, response)


def _apply(faults, data):
    if faults:
        fault = faults.pop(0)
        if fault is not None:
            return fault(data)
    return data


# Faults.

def drop(index):
    """Lose byte ``index`` (negative counts from the end)."""
    def fault(data):
        i = index % len(data)
        return data[:i] + data[i + 1:]
    return fault


def flip(index, bit=0):
    """Invert one bit of byte ``index``."""
    def fault(data):
        i = index % len(data)
        return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1:]
    return fault


def truncate(length):
    """Keep only the first ``length`` bytes."""
    return lambda data: data[:length]


def lose():
    """Lose everything."""
    return lambda data: b""


def duplicate():
    """Deliver the bytes twice."""
    return lambda data: data + data


def random_fault(rng):
    """One of the faults above (or none) at a random position, from ``rng``."""
    kind = rng.choice(["none", "drop", "flip", "truncate", "lose", "duplicate"])
    if kind == "none":
        return None
    if kind == "drop":
        return drop(rng.randrange(1 << 16))
    if kind == "flip":
        return flip(rng.randrange(1 << 16), rng.randrange(8))
    if kind == "truncate":
        return lambda data: data[:rng.randrange(len(data))]
    return lose() if kind == "lose" else duplicate()
