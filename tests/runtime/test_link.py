import random
import struct

import pytest

from fake_device import (
    FakeDevice, FakeTransport, VirtualClock, drop, duplicate, flip, lose, random_fault, truncate,
)
from fecaffe_hw.errors import LinkError
from fecaffe_hw.runtime import regmap
from fecaffe_hw.runtime.link import HostLink
from fecaffe_hw.runtime.protocol import MAX_MEM_DATA, Opcode, encode_request


def connect(device=None, **link_options):
    device = device or FakeDevice()
    clock = VirtualClock()
    transport = FakeTransport(device, clock=clock)
    link = HostLink(transport, clock=clock.now, sleep=clock.sleep, **link_options)
    return link, transport, device


def test_ping_and_identity():
    link, _, _ = connect(FakeDevice(plan_hash=0x1_DEADBEEF, capabilities=0b101))
    info = link.check_identity(expected_plan_hash=0x7_DEADBEEF)    # low 32 bits compared
    assert info.id == 0x46434857 and info.plan_hash == 0xDEADBEEF and info.capabilities == 5
    assert info.version == regmap.VERSION_VALUE


@pytest.mark.parametrize("device, expected_hash, message", [
    (FakeDevice(device_id=0x12345678), None, "not a fecaffe-hw device: ID is 0x12345678"),
    (FakeDevice(version=regmap.VERSION_VALUE + 0x10000), None, "regenerate the bitstream"),
    (FakeDevice(plan_hash=1), 2, "built for plan 0x00000001, expected plan 0x00000002"),
])
def test_identity_mismatch(device, expected_hash, message):
    link, _, _ = connect(device)
    with pytest.raises(LinkError, match=message) as info:
        link.check_identity(expected_hash)
    assert str(info.value).startswith("fake-device: ")


def test_csr_access_by_name_address_and_fields():
    link, _, device = connect(FakeDevice(array=regmap.register("ARRAY").pack(rows=4, cols=8)))
    link.write_csr("SCRATCH", 0xCAFEF00D)
    assert link.read_csr(0x01C) == 0xCAFEF00D
    assert regmap.register("ARRAY").unpack(link.read_csr("ARRAY"))["cols"] == 8
    assert link.read_csr("MEM_SIZE") == 16 and link.read_csr("ID") == regmap.ID_VALUE
    link.write_csr("ID", 0)                               # read-only: ignored
    assert link.read_csr("ID") == regmap.ID_VALUE
    device.errors = 0b111
    link.write_csr("ERROR", bad_command=1, overflow=1)    # write 1 to clear
    assert link.read_csr("ERROR") == 0b010
    with pytest.raises(LinkError, match=r"READ_CSR 0x02C: device answered BAD_ADDRESS"):
        link.read_csr(0x02C)
    with pytest.raises(ValueError, match="word-aligned"):
        link.read_csr(0x02)


def test_memory_round_trip_over_several_frames():
    link, transport, device = connect()
    data = random.Random(3).randbytes(3 * MAX_MEM_DATA + 8)
    link.write_mem(0x1000, data)
    assert bytes(device.memory[0x1000:0x1000 + len(data)]) == data
    assert device.executions[Opcode.WRITE_MEM] == 4
    assert link.read_mem(0x1004, len(data) - 4) == data[4:]
    assert link.read_mem(0, 0) == b""
    with pytest.raises(LinkError, match="WRITE_MEM 0x0000FFFC\\+8: device answered BAD_ADDRESS"):
        link.write_mem(0xFFFC, bytes(8))
    with pytest.raises(ValueError, match="multiple of 4"):
        link.write_mem(0, b"abc")


def test_run_and_counters():
    link, _, device = connect()
    link.run([1, 2, 0xFFFFFFFF])
    assert list(device.commands) == [1, 2, 0xFFFFFFFF]
    assert link.read_csr("CMD_SPACE") == 61
    assert regmap.register("STATUS").unpack(link.read_csr("STATUS")) == \
        dict(busy=1, error=0, host_wait=0, cmd_fifo_level=3)
    device.drain()
    device.counters.update(MACS=0x1_2345_6789_ABCD, COMMANDS_DONE=3, CYCLES=7)
    counters = link.read_counters()
    assert list(counters) == [c.name for c in regmap.COUNTERS]
    assert counters["MACS"] == 0x1_2345_6789_ABCD and counters["COMMANDS_DONE"] == 3
    lo = link.read_csr("MACS_LO")
    device.counters["MACS"] += 1 << 40                    # HI was latched by the LO read
    assert (link.read_csr("MACS_HI") << 32 | lo) == 0x1_2345_6789_ABCD
    link.write_csr("CONTROL", clear_counters=1, enable=1)
    assert set(link.read_counters().values()) == {0}


def test_run_waits_for_fifo_room():
    device = FakeDevice(cmd_fifo_depth=8, commands_per_second=1000)
    link, _, device = connect(device, poll_interval=0.002)
    words = list(range(100, 140))
    link.run(words)
    device.drain()
    assert device.executed_commands == words


def test_run_gives_up_when_fifo_stays_full():
    link, _, device = connect(FakeDevice(cmd_fifo_depth=8), busy_timeout=0.05)
    with pytest.raises(LinkError, match="no room for 0.05 s; 12 of 20 words not sent"):
        link.run(range(20))
    assert list(device.commands) == list(range(8))


@pytest.mark.parametrize("to_device, to_host", [
    ([drop(0)], []),                 # SYNC lost: device never sees the frame
    ([drop(7)], []),                 # payload byte lost: device times out mid-frame
    ([drop(-1)], []),
    ([flip(5, 3)], []),              # length corrupted
    ([flip(9, 0)], []),              # payload corrupted: BAD_CRC
    ([truncate(6)], []),
    ([lose(), flip(-2, 7), drop(3)], []),
    ([], [truncate(4)]),             # response cut off
    ([], [flip(8, 1)]),              # response corrupted
    ([], [drop(1)]),
    ([], [lose(), lose()]),
    ([flip(8, 2)], [None, truncate(9)]),
])
def test_recovers_from_link_faults(to_device, to_host):
    link, transport, device = connect(retries=3)
    link.ping()
    transport.to_device, transport.to_host = list(to_device), list(to_host)
    link.write_mem(0x40, b"\x11\x22\x33\x44\x55\x66\x77\x88")
    link.run([0xA, 0xB])
    assert link.read_mem(0x40, 8) == b"\x11\x22\x33\x44\x55\x66\x77\x88"
    assert list(device.commands) == [0xA, 0xB]
    assert device.executions[Opcode.WRITE_MEM] == 1 and device.executions[Opcode.RUN] == 1
    assert link.retries_used >= 1


def test_lost_response_does_not_repeat_a_run():
    link, transport, device = connect()
    link.ping()
    transport.to_host = [lose(), truncate(3), flip(4)]    # three answers to RUN lost
    link.run([7, 8, 9])
    assert list(device.commands) == [7, 8, 9]
    assert device.executions[Opcode.RUN] == 1
    assert link.retries_used == 3 and len(transport.writes) == 5


def test_duplicated_frame_executes_once_and_stale_answer_is_skipped():
    link, transport, device = connect()
    link.ping()
    transport.to_device = [duplicate()]
    link.run([5])
    assert link.read_csr("CMD_SPACE") == 63               # first answer on the wire: stale
    assert list(device.commands) == [5] and device.executions[Opcode.RUN] == 1


def test_dead_device_raises_after_retries():
    link, transport, device = connect(retries=2, timeout=0.25)
    transport.silent = True
    with pytest.raises(LinkError) as info:
        link.read_csr("STATUS")
    message = str(info.value)
    assert "READ_CSR STATUS (0x014)" in message and "after 3 tries" in message
    assert "no response within 0.25 s" in message and message.startswith("fake-device:")
    assert len(transport.writes) == 3 and transport.clock.now() == pytest.approx(0.75)


def test_device_that_always_corrupts_names_the_fault():
    link, transport, _ = connect(retries=1)
    transport.to_host = [flip(6)] * 10
    with pytest.raises(LinkError, match=r"PING \(seq 0\) failed after 2 tries: corrupt response "
                                        r"\(BAD_CRC\)"):
        link.ping()


def test_new_session_is_not_mistaken_for_a_duplicate():
    device = FakeDevice()
    device.last = (0, Opcode.WRITE_MEM, 0)                # left by an earlier session
    link, _, device = connect(device)
    link.write_mem(0, b"\x01\x02\x03\x04")
    assert bytes(device.memory[:4]) == b"\x01\x02\x03\x04"


def test_device_answers_a_bad_opcode_and_bad_lengths():
    device = FakeDevice()
    clock = VirtualClock()
    transport = FakeTransport(device, clock=clock)
    from fecaffe_hw.runtime.protocol import FrameDecoder, Status, encode_frame
    transport.write(encode_frame(0x42, 1, b""))
    transport.write(encode_request(Opcode.READ_CSR, 2, b"\x00"))
    transport.write(encode_request(Opcode.READ_MEM, 3, struct.pack("<IH", 0, 6)))
    events = FrameDecoder().feed(transport.read(200, 0.1))
    assert [(e.opcode, e.seq, e.status) for e in events] == [
        (0xC2, 1, Status.BAD_OPCODE), (0x82, 2, Status.BAD_LENGTH), (0x85, 3, Status.BAD_LENGTH)]


@pytest.mark.parametrize("seed", range(6))
def test_random_faults_keep_device_state_exact(seed):
    rng = random.Random(seed)
    link, transport, device = connect(retries=12)
    transport.to_device = [random_fault(rng) if rng.random() < 0.3 else None for _ in range(400)]
    transport.to_host = [random_fault(rng) if rng.random() < 0.3 else None for _ in range(400)]
    memory = bytearray(device.mem_size)
    words = []
    for _ in range(25):
        op = rng.choice(["write", "read", "run", "csr"])
        if op == "write":
            address = rng.randrange(0, 0x2000, 4)
            data = rng.randbytes(4 * rng.randrange(1, 400))
            link.write_mem(address, data)
            memory[address:address + len(data)] = data
        elif op == "read":
            address = rng.randrange(0, 0x2000, 4)
            assert link.read_mem(address, 64) == bytes(memory[address:address + 64])
        elif op == "run":
            new = [rng.randrange(1 << 32) for _ in range(rng.randrange(1, 6))]
            link.run(new)
            words += new
        else:
            value = rng.randrange(1 << 32)
            link.write_csr("SCRATCH", value)
            assert link.read_csr("SCRATCH") == value
    assert device.memory == memory
    assert list(device.commands) == words
    assert link.retries_used > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(timeout=0), "Timeout"), (dict(retries=-1), "Retries"),
    (dict(busy_timeout=-1), "Busy timeout"),
])
def test_link_options_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HostLink(FakeTransport(FakeDevice()), **kwargs)
