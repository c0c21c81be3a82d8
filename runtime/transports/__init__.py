"""Byte transports the host link runs over.

A transport moves raw bytes; framing, retries and timeouts above the byte
level belong to :class:`~fecaffe_hw.runtime.link.HostLink`. Implementations:
:class:`~fecaffe_hw.runtime.transports.uart.UartTransport` (pyserial). A
transport that loses its device raises :class:`~fecaffe_hw.errors.LinkError`.
"""

from typing import Protocol, runtime_checkable

__all__ = ["Transport"]


@runtime_checkable
class Transport(Protocol):
    """What :class:`~fecaffe_hw.runtime.link.HostLink` needs from a byte link.

    ``name`` says which device it is, for error messages (e.g. the port).
    """

    name: str

    def write(self, data: bytes) -> None:
        """Send all of ``data``."""

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes; fewer (possibly none) if ``timeout`` seconds pass first."""

    def close(self) -> None:
        """Release the device; further use is an error."""
