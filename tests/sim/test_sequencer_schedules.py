# amaranth: UnusedElaboratable=no
# (The AxiRam is elaborated by hand so the test can read its Memory.)
"""Whole compiled schedules on the gateware sequencer (pysim), memory word for
word against the NumPy machine: every command the compiler emits for small
nets with odd shapes (IM2COL with stride and padding, FMAP stores ending
mid-word, InnerProduct as a 1x1 convolution, biases, pooling, TanH/Sigmoid)
runs on the RTL exactly as the model says."""

from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from support import simulate

from fecaffe_hw.compiler.plan import buffer_depths
from fecaffe_hw.cores.axi_master import AxiMaster
from fecaffe_hw.cores.axi_ram import AxiRam
from fecaffe_hw.cores.sequencer import PoolGeometry, Sequencer
from fecaffe_hw.runtime.host_ops import HostOps
from fecaffe_hw.runtime.isa import HostOp, Opcode
from fecaffe_hw.sim.machine import Machine
from fecaffe_hw.sim.workload import build_workload

NETS = Path(__file__).parents[1] / "compiler" / "nets"


def sequencer_for(plan):
    eltwise = plan.units.get("eltwise", {})
    return Sequencer(
        rows=plan.rows, cols=plan.cols, data_width=plan.data_width, acc_width=plan.acc_width,
        **dict(zip(("a_depth", "b_depth", "c_depth"), buffer_depths(plan))),
        eltwise_in_frac=eltwise.get("in_frac", 12), eltwise_aux_frac=eltwise.get("aux_frac", 15),
        pool_geometries=tuple(PoolGeometry.from_layer(rec) for rec in plan.layers
                              if rec["type"] == "Pooling"),
        pool_backward=plan.training)


@pytest.mark.parametrize("net", ["odd_conv", "odd_ip"])
def test_inference_schedule_on_the_sequencer_equals_the_machine(net):
    workload = build_workload(NETS / f"{net}.prototxt", board="arty", phase="test", batch=2,
                              seed=7)
    plan = workload.plan
    machine = Machine(plan)
    for addr, data in workload.parameter_writes():
        machine.write(addr, data)
    host = HostOps(plan, workload.inputs)
    commands = workload.commands
    # The host's inputs are in memory before the sequencer starts (the
    # machine replays the same INPUT writes); the other HOST steps of an
    # inference pass only read.
    for c in commands:
        if c.opcode == Opcode.HOST and c.fields["func"] == HostOp.INPUT:
            host(dict(c.fields, layer=c.layer_index), machine.read, machine.write)
    start = machine.words().copy()
    machine.run(commands, host)

    dut = sequencer_for(plan)
    ram = AxiRam(size=len(start) * 4, latency=12, stall_rate=0.2,
                 init=[int(w) for w in start])
    ram_module = ram.elaborate(None)
    top = Module()
    top.submodules.dut = dut
    top.submodules.master = master = AxiMaster(max_outstanding=4)
    top.submodules.ram = ram_module
    wiring.connect(top, dut.mem, master.bus)
    wiring.connect(top, master.axi, ram.axi)
    words = [w for c in commands for w in c.words()]
    result = {}

    async def feed(ctx):
        for word in words:
            ctx.set(dut.commands.valid, 1)
            ctx.set(dut.commands.payload, word)
            await ctx.tick().until(dut.commands.ready)
        ctx.set(dut.commands.valid, 0)

    async def watch(ctx):
        bad = cycles = 0
        while not ctx.get(dut.end):
            ctx.set(dut.host_resume, ctx.get(dut.host_wait))
            bad += ctx.get(dut.bad_command) + ctx.get(dut.mem_fault)
            cycles += 1
            await ctx.tick()
        mem = ram_module.submodules.mem
        result.update(bad=bad, cycles=cycles,
                      image=np.array([ctx.get(mem.data[i]) for i in range(len(start))],
                                     dtype=np.uint32))

    simulate(top, feed, watch, name=f"schedule_{net}", deadline_cycles=400_000)
    assert result["bad"] == 0
    got, want = result["image"], machine.words()
    differ = np.flatnonzero(got != want)
    assert not differ.size, (f"{differ.size} words differ, first at byte {4 * differ[0]:#x}: "
                             f"{got[differ[0]]:#010x} != {want[differ[0]]:#010x}")
    print(f"{net}: {len(commands)} commands, {result['cycles']} cycles")
