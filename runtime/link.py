"""The host side of the protocol: :class:`HostLink` over any byte transport.

Stop-and-wait: one frame in flight. A frame whose response does not arrive
within ``timeout``, arrives corrupt, or comes back as an ERROR frame is sent
again with the same seq, up to ``retries`` more times; the device executes a
duplicate write or RUN at most once, so retries are safe. After that the link
raises :class:`~fecaffe_hw.errors.LinkError` naming the operation, the number
of tries and what went wrong.

The device remembers only its last (seq, opcode), so a new session could
collide with the previous session's last frame. HostLink therefore sends a
PING (always re-executed, harmless) before its first frame with a side effect.
"""

import struct
import time
from typing import NamedTuple

from ..errors import LinkError
from . import regmap
from .protocol import (
    COUNTER_FORMAT, MAX_MEM_DATA, MAX_RUN_WORDS, PING_RESPONSE, READ_CSR_REQUEST,
    READ_CSR_RESPONSE, READ_MEM_REQUEST, READ_OPCODES, RESPONSE_FLAG, WRITE_CSR_REQUEST,
    WRITE_MEM_HEADER, BadFrame, FrameDecoder, Opcode, Status, encode_request,
)

__all__ = ["HostLink", "DeviceInfo"]


class DeviceInfo(NamedTuple):
    """What PING returns."""
    id: int
    version: int
    capabilities: int
    plan_hash: int

    @property
    def version_string(self):
        return _version_string(self.version)


class HostLink:
    """A client of one device over ``transport`` (see
    :class:`~fecaffe_hw.runtime.transports.Transport`).

    ``timeout``: seconds to wait for each response; ``retries``: extra tries
    per frame; ``busy_timeout``: seconds RUN waits for command FIFO room.
    ``clock`` and ``sleep`` default to :func:`time.monotonic` and
    :func:`time.sleep` (tests pass a virtual clock).
    """

    def __init__(self, transport, *, timeout=0.5, retries=3, busy_timeout=10.0,
                 poll_interval=0.001, clock=time.monotonic, sleep=time.sleep):
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"Timeout must be a positive number of seconds, not {timeout!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"Retries must be a non-negative integer, not {retries!r}")
        if not (isinstance(busy_timeout, (int, float)) and busy_timeout >= 0):
            raise ValueError(f"Busy timeout must be a non-negative number, not {busy_timeout!r}")
        if not (isinstance(poll_interval, (int, float)) and poll_interval >= 0):
            raise ValueError(f"Poll interval must be a non-negative number, not {poll_interval!r}")
        self.transport = transport
        self.timeout, self.retries = timeout, retries
        self.busy_timeout, self.poll_interval = busy_timeout, poll_interval
        self._clock, self._sleep = clock, sleep
        self._decoder = FrameDecoder()
        self._seq = 0
        self._synced = False
        self.frames_sent = 0        # including retries, for link statistics
        self.retries_used = 0

    @property
    def name(self):
        return getattr(self.transport, "name", None) or repr(self.transport)

    def close(self):
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # Operations.

    def ping(self):
        """The device's :class:`DeviceInfo`."""
        frame = self._exchange(Opcode.PING, b"", "PING", PING_RESPONSE.size)
        return DeviceInfo(*PING_RESPONSE.unpack(frame.data))

    def check_identity(self, expected_plan_hash=None):
        """PING and check that the device is fecaffe-hw gateware of this
        toolkit's major.minor version (and built for ``expected_plan_hash``,
        compared on its low 32 bits); returns the :class:`DeviceInfo`."""
        info = self.ping()
        if info.id != regmap.ID_VALUE:
            raise LinkError(f"{self.name}: not a fecaffe-hw device: ID is 0x{info.id:08X}, "
                            f"expected 0x{regmap.ID_VALUE:08X} ('FCHW')")
        if info.version >> 8 != regmap.VERSION_VALUE >> 8:
            raise LinkError(f"{self.name}: gateware version {info.version_string} does not match "
                            f"this toolkit ({_version_string(regmap.VERSION_VALUE)}); "
                            f"regenerate the bitstream")
        if expected_plan_hash is not None and info.plan_hash != expected_plan_hash & 0xFFFFFFFF:
            raise LinkError(f"{self.name}: gateware was built for plan 0x{info.plan_hash:08X}, "
                            f"expected plan 0x{expected_plan_hash & 0xFFFFFFFF:08X}; "
                            f"build and load the bitstream for this plan")
        return info

    def read_csr(self, register):
        """The 32-bit value of ``register`` (a name from the regmap or a byte address)."""
        address, what = self._csr_address(register)
        frame = self._exchange(Opcode.READ_CSR, READ_CSR_REQUEST.pack(address),
                               f"READ_CSR {what}", READ_CSR_RESPONSE.size)
        return READ_CSR_RESPONSE.unpack(frame.data)[0]

    def write_csr(self, register, value=None, **fields):
        """Write ``value``, or the named ``fields`` (others written 0), to ``register``."""
        address, what = self._csr_address(register)
        if fields:
            if value is not None:
                raise ValueError("Give a register value or field values, not both")
            reg = regmap.register_at(address)
            if reg is None:
                raise ValueError(f"No register at 0x{address:03X} to pack fields into")
            value = reg.pack(**fields)
        if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"CSR value must be a u32, not {value!r}")
        self._exchange(Opcode.WRITE_CSR, WRITE_CSR_REQUEST.pack(address, value),
                       f"WRITE_CSR {what}", 0)

    def read_mem(self, address, n):
        """``n`` bytes of tensor memory from byte ``address`` (both multiples of 4)."""
        _check_span(address, n)
        chunks = []
        for offset in range(0, n, MAX_MEM_DATA):
            count = min(MAX_MEM_DATA, n - offset)
            frame = self._exchange(Opcode.READ_MEM, READ_MEM_REQUEST.pack(address + offset, count),
                                   f"READ_MEM 0x{address + offset:08X}+{count}", count)
            chunks.append(frame.data)
        return b"".join(chunks)

    def write_mem(self, address, data):
        """Write ``data`` (a multiple of 4 bytes) to tensor memory at byte ``address``."""
        data = bytes(data)
        _check_span(address, len(data))
        for offset in range(0, len(data), MAX_MEM_DATA):
            chunk = data[offset:offset + MAX_MEM_DATA]
            self._exchange(Opcode.WRITE_MEM, WRITE_MEM_HEADER.pack(address + offset) + chunk,
                           f"WRITE_MEM 0x{address + offset:08X}+{len(chunk)}", 0)

    def run(self, words):
        """Push u32 command ``words`` into the sequencer's command FIFO, in
        order, waiting (up to ``busy_timeout``) while the FIFO is full."""
        words = [int(w) for w in words]
        for w in words:
            if not 0 <= w <= 0xFFFFFFFF:
                raise ValueError(f"Command word must be a u32, not {w!r}")
        sent, space, busy_since = 0, None, None
        while sent < len(words):
            n = min(MAX_RUN_WORDS, len(words) - sent)
            if space is not None:
                n = min(n, space)
            if n > 0:
                frame = self._exchange(Opcode.RUN, struct.pack(f"<{n}I", *words[sent:sent + n]),
                                       f"RUN {n} words", 0, busy_ok=True)
                if frame.status == Status.OK:
                    sent, busy_since = sent + n, None
                    space = None if space is None else space - n
                    continue
            now = self._clock()
            if busy_since is None:
                busy_since = now
            elif now - busy_since > self.busy_timeout:
                raise LinkError(f"{self.name}: RUN: command FIFO had no room for "
                                f"{self.busy_timeout} s; {len(words) - sent} of {len(words)} "
                                f"words not sent")
            if space is not None and n == 0:
                self._sleep(self.poll_interval)
            space = self.read_csr("CMD_SPACE")

    def read_counters(self):
        """Every performance counter: ``{name: value}`` in regmap order."""
        size = COUNTER_FORMAT.size * len(regmap.COUNTERS)
        frame = self._exchange(Opcode.READ_COUNTERS, b"", "READ_COUNTERS", size)
        return {c.name: COUNTER_FORMAT.unpack_from(frame.data, COUNTER_FORMAT.size * c.index)[0]
                for c in regmap.COUNTERS}

    # Framing, retries.

    def _csr_address(self, register):
        if isinstance(register, str):
            reg = regmap.register(register)
            return reg.address, f"{reg.name} (0x{reg.address:03X})"
        if not isinstance(register, int) or register % 4 or not 0 <= register <= 0xFFFF:
            raise ValueError(f"CSR address must be a word-aligned u16 or a register name, "
                             f"not {register!r}")
        reg = regmap.register_at(register)
        return register, f"{reg.name} (0x{register:03X})" if reg else f"0x{register:03X}"

    def _exchange(self, opcode, payload, what, data_size, *, busy_ok=False):
        if not self._synced and opcode not in READ_OPCODES:
            self.ping()
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFF
        request = encode_request(opcode, seq, payload)
        failures = []
        for attempt in range(1 + self.retries):
            if attempt:
                self.retries_used += 1
            # A partial frame from the last try would swallow the new response.
            self._decoder.reset()
            self.transport.write(request)
            self.frames_sent += 1
            outcome = self._await_response(opcode, seq)
            if isinstance(outcome, str):
                failures.append(outcome)
                continue
            self._synced = True
            status = outcome.status
            if status == Status.BUSY and busy_ok:
                return outcome
            if status != Status.OK:
                name = status.name if isinstance(status, Status) else f"unknown status {status}"
                raise LinkError(f"{self.name}: {what}: device answered {name}")
            if len(outcome.data) != data_size:
                raise LinkError(f"{self.name}: {what}: response carries {len(outcome.data)} "
                                f"data bytes, expected {data_size}")
            return outcome
        reasons = "; ".join(dict.fromkeys(failures))
        tries = 1 + self.retries
        raise LinkError(f"{self.name}: {what} (seq {seq}) failed after {tries} "
                        f"{'try' if tries == 1 else 'tries'}: {reasons}")

    def _await_response(self, opcode, seq):
        """The response Frame, or a string saying why there is none."""
        deadline = self._clock() + self.timeout
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                if self._decoder.in_frame:
                    return f"response cut off (no byte within {self.timeout} s)"
                return f"no response within {self.timeout} s"
            data = self.transport.read(self._decoder.bytes_needed, remaining)
            for event in self._decoder.feed(data):
                if isinstance(event, BadFrame):
                    return f"corrupt response ({event.status.name})"
                if event.opcode == Opcode.ERROR:
                    status = event.status
                    name = status.name if isinstance(status, Status) else status
                    return f"device reported {name}"
                if event.opcode == opcode | RESPONSE_FLAG and event.seq == seq and event.payload:
                    return event
                # Anything else is a late answer to an earlier frame: skip it.


def _check_span(address, n):
    if not isinstance(address, int) or address % 4 or not 0 <= address <= 0xFFFFFFFF:
        raise ValueError(f"Memory address must be a word-aligned u32, not {address!r}")
    if not isinstance(n, int) or n % 4 or n < 0:
        raise ValueError(f"Memory length must be a multiple of 4 bytes, not {n!r}")
    if address + n > 1 << 32:
        raise ValueError(f"Memory span 0x{address:08X}+{n} runs past the 32-bit address space")


def _version_string(version):
    return f"{version >> 16 & 0xFF}.{version >> 8 & 0xFF}.{version & 0xFF}"
