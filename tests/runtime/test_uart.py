import socket
import threading
import time

import pytest
import serial

from fake_device import FakeDevice
from fecaffe_hw.errors import LinkError
from fecaffe_hw.runtime.link import HostLink
from fecaffe_hw.runtime.transports import Transport
from fecaffe_hw.runtime.transports.uart import UartTransport


def test_loopback_bytes_and_short_reads():
    with UartTransport("loop://", baud=3_000_000) as transport:
        assert isinstance(transport, Transport) and transport.name == "loop://"
        transport.write(b"\xA5\x5Ahello")
        assert transport.read(4, 0.1) == b"\xA5\x5Ahe"
        start = time.monotonic()
        assert transport.read(10, 0.05) == b"llo"         # fewer on timeout
        assert time.monotonic() - start < 1.0


def test_missing_port_names_it():
    with pytest.raises(LinkError, match="^/dev/fecaffe-no-such-tty: cannot open serial port"):
        UartTransport("/dev/fecaffe-no-such-tty")


@pytest.mark.parametrize("method, args", [("read", (4, 0.01)), ("write", (b"x",))])
def test_vanished_device_becomes_link_error(monkeypatch, method, args):
    transport = UartTransport("loop://")

    def unplugged(*_args, **_kwargs):
        raise serial.SerialException("device reports readiness to read but returned no data")
    monkeypatch.setattr(transport._serial, method, unplugged)
    with pytest.raises(LinkError, match=f"^loop://: {method} failed: device reports"):
        getattr(transport, method)(*args)


def test_closed_port_becomes_link_error():
    transport = UartTransport("loop://")
    transport.close()
    with pytest.raises(LinkError, match="^loop://: write failed"):
        transport.write(b"x")


@pytest.mark.parametrize("kwargs, message", [
    (dict(port=""), "Port"), (dict(port="loop://", baud=0), "Baud"),
])
def test_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UartTransport(**kwargs)


def test_link_over_loopback_without_device_times_out():
    # The loopback echoes our own request, which is not an answer.
    link = HostLink(UartTransport("loop://"), timeout=0.02, retries=1)
    with pytest.raises(LinkError, match="loop://: PING .* after 2 tries: no response"):
        link.ping()


def test_host_link_to_a_device_behind_a_socket():
    device = FakeDevice(plan_hash=0xABCD)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        connection, _ = server.accept()
        with connection:
            while data := connection.recv(4096):
                connection.sendall(device.receive(data, time.monotonic()))
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with HostLink(UartTransport(f"socket://127.0.0.1:{port}"), timeout=2.0) as link:
            assert link.check_identity(0xABCD).plan_hash == 0xABCD
            link.write_mem(0x100, bytes(range(256)) * 8)
            assert link.read_mem(0x100, 2048) == bytes(range(256)) * 8
            link.run([1, 2, 3])
        thread.join(timeout=5)
        assert list(device.commands) == [1, 2, 3]
    finally:
        server.close()
