"""UART transport over pyserial.

The link has no RTS/CTS (the Arty's FT2232H wires RX/TX only); the host
protocol is stop-and-wait, which is its flow control. ``port`` may be a device
path (``/dev/ttyUSB1``, ``COM3``) or any pyserial URL (``loop://``,
``socket://host:port`` for a simulation that serves the byte stream).
"""

import serial

from ...errors import LinkError

__all__ = ["UartTransport"]


class UartTransport:
    """A :class:`~fecaffe_hw.runtime.transports.Transport` on a serial port,
    8N1 at ``baud``. Errors from a device that vanishes (unplugged board,
    closed port) become :class:`LinkError` naming the port."""

    def __init__(self, port, baud=115200):
        if not isinstance(port, str) or not port:
            raise ValueError(f"Port must be a non-empty string, not {port!r}")
        if not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"Baud rate must be a positive integer, not {baud!r}")
        self.port, self.baud = port, baud
        try:
            self._serial = serial.serial_for_url(port, baudrate=baud, timeout=0,
                                                 write_timeout=None)
        except (serial.SerialException, OSError, ValueError) as error:
            raise LinkError(f"{port}: cannot open serial port: {_reason(error)}") from error

    @property
    def name(self):
        return self.port

    def write(self, data):
        try:
            self._serial.write(bytes(data))
            self._serial.flush()
        except (serial.SerialException, OSError) as error:
            raise LinkError(f"{self.port}: write failed: {_reason(error)}") from error

    def read(self, n, timeout):
        if n <= 0:
            return b""
        try:
            self._serial.timeout = max(0.0, timeout)
            return bytes(self._serial.read(n))
        except (serial.SerialException, OSError) as error:
            raise LinkError(f"{self.port}: read failed: {_reason(error)}") from error

    def close(self):
        try:
            self._serial.close()
        except (serial.SerialException, OSError) as error:
            raise LinkError(f"{self.port}: close failed: {_reason(error)}") from error

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"UartTransport({self.port!r}, baud={self.baud})"


def _reason(error):
    return " ".join(str(error).split()) or type(error).__name__
