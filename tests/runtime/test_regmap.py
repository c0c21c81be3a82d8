import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from fecaffe_hw.runtime import regmap
from fecaffe_hw.runtime.regmap import (
    COUNTERS, REGISTERS, Access, Field, Reg, Register, counter, register, register_at,
)

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_spec_addresses():
    spec = {"ID": 0x000, "VERSION": 0x004, "CAPABILITIES": 0x008, "ARRAY": 0x00C,
            "CONTROL": 0x010, "STATUS": 0x014, "ERROR": 0x018, "SCRATCH": 0x01C,
            "PLAN_HASH": 0x020, "CMD_SPACE": 0x024, "MEM_SIZE": 0x028}
    for name, address in spec.items():
        assert register(name).address == address == Reg[name]
        assert register_at(address).name == name
    names = ["CYCLES", "BUSY_CYCLES", "MACS", "ARRAY_STALL_CYCLES", "MEM_STALL_CYCLES",
             "MEM_READ_BYTES", "MEM_WRITE_BYTES", "COMMANDS_DONE"]
    assert [c.name for c in COUNTERS] == names
    for n, name in enumerate(names):
        assert counter(name).lo.address == 0x100 + 8 * n
        assert counter(name).hi.address == 0x104 + 8 * n
    assert register("ID").reset == 0x46434857 == int.from_bytes(b"WHCF", "little")


def test_field_positions_from_spec():
    array = register("ARRAY")
    packed = array.pack(rows=16, cols=8, data_width=16, acc_width=48)
    assert packed == 16 | 8 << 8 | 16 << 16 | 48 << 24
    assert array.unpack(0x30100810) == dict(rows=16, cols=8, data_width=16, acc_width=48)
    assert register("STATUS").field("cmd_fifo_level").mask == 0xFF00
    assert register("CONTROL").field("soft_reset").access is Access.SC
    assert register("ERROR").writable_mask == 0b111


def test_every_register_is_consistent():
    for reg in REGISTERS:
        assert reg.address % 4 == 0 and reg.fields
        covered = 0
        for f in reg.fields:
            assert covered & f.mask == 0
            covered |= f.mask
        assert reg.reset & ~covered == 0


def test_lookup_errors_name_the_key():
    with pytest.raises(KeyError, match="NOPE"):
        register("NOPE")
    with pytest.raises(KeyError, match="bogus"):
        register("CONTROL").field("bogus")
    assert register_at(0x02C) is None


@pytest.mark.parametrize("make, message", [
    (lambda: Field("x", 30, 4, Access.RW), "width 4"),
    (lambda: Field("x", 0, 2, Access.RW, reset=4), "reset 4"),
    (lambda: Field("x", 0, 1, Access.SC, reset=1), "self-clearing"),
    (lambda: Register("R", 0x3, Access.RW), "word-aligned"),
    (lambda: Register("R", 0, Access.RO, (Field("a", 0, 1, Access.RW),)), "read-only"),
    (lambda: Register("R", 0, Access.RW, (Field("a", 0, 2, Access.RW),
                                          Field("b", 1, 1, Access.RW))), "overlaps"),
])
def test_definitions_are_validated(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_version_value():
    assert regmap.version_value("1.2.3") == 0x010203
    assert regmap.version_value("0.1.0") == 0x000100
    with pytest.raises(ValueError, match="x.y"):
        regmap.version_value("x.y")


def test_json_lists_every_register():
    document = json.loads(regmap.to_json())
    assert [r["name"] for r in document["registers"]] == [r.name for r in REGISTERS]
    for entry, reg in zip(document["registers"], REGISTERS):
        assert entry["address"] == reg.address and entry["access"] == reg.access.value
        assert [(f["name"], f["lsb"], f["width"]) for f in entry["fields"]] == \
            [(f.name, f.lsb, f.width) for f in reg.fields]
    assert document["counters"] == [c.name for c in COUNTERS]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_c_header_compiles_and_agrees(tmp_path):
    header = tmp_path / "fchw_regmap.h"
    header.write_text(regmap.to_c_header())
    checks = "\n".join(
        f"_Static_assert(FCHW_{r.name}_ADDR == {r.address}u, \"{r.name}\");" for r in REGISTERS)
    source = tmp_path / "check.c"
    source.write_text(f'#include "fchw_regmap.h"\n#include "fchw_regmap.h"\n{checks}\n'
                      "_Static_assert(FCHW_STATUS_CMD_FIFO_LEVEL_MASK == 0xFF00u, \"mask\");\n")
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-fsyntax-only", str(source)],
                   check=True, cwd=tmp_path)


def test_markdown_has_a_row_per_register():
    markdown = regmap.to_markdown()
    for reg in REGISTERS:
        rows = [line for line in markdown.splitlines()
                if re.match(rf"\| 0x{reg.address:03X} \| {reg.name} \|", line)]
        assert len(rows) == 1, reg.name


def test_committed_docs_match_the_table():
    committed = (REPO / "docs" / "regmap.md").read_text()
    assert committed == regmap.to_markdown(), (
        "docs/regmap.md is stale: python -m fecaffe_hw.runtime.regmap --markdown > docs/regmap.md")


def test_command_line():
    result = subprocess.run([sys.executable, "-m", "fecaffe_hw.runtime.regmap", "--json"],
                            check=True, capture_output=True, text=True)
    assert json.loads(result.stdout)["id"] == regmap.ID_VALUE
    result = subprocess.run([sys.executable, "-m", "fecaffe_hw.runtime.regmap", "--bogus"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
