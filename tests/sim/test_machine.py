"""The NumPy machine runs whole compiled schedules, and what it computes agrees
with the float reference: the compiler's lowering (tiling, IM2COL/FMAP
addressing, biases, requantisation shifts, host steps) is checked end to end
before any gateware runs it."""

from pathlib import Path

import numpy as np
import pytest

from fecaffe_hw.fixedpoint import dequantize, quantize
from fecaffe_hw.runtime.host_ops import HostOps
from fecaffe_hw.runtime.isa import EltwiseOp, Opcode
from fecaffe_hw.sim.machine import Machine, MachineError
from fecaffe_hw.sim.workload import build_workload

ROOT = Path(__file__).parents[2]
NETS = ROOT / "tests" / "compiler" / "nets"

#: Largest error vs float, in LSBs of each blob's format: a few roundings per
#: layer (inputs, weights, requantisation) accumulated over at most 4 layers.
LSB_BOUND = 16


def run_machine(workload):
    machine = Machine(workload.plan)
    for addr, data in workload.parameter_writes():
        machine.write(addr, data)
    host = HostOps(workload.plan, workload.inputs)
    machine.run(workload.commands, host)
    return machine, host


@pytest.mark.parametrize("net,batch", [
    (ROOT / "nets" / "lenet_train_test.prototxt", 2),
    (NETS / "odd_conv.prototxt", 3),
    (NETS / "odd_ip.prototxt", 2),
], ids=["lenet", "odd_conv", "odd_ip"])
def test_inference_schedule_matches_float_reference(net, batch):
    workload = build_workload(net, board="arty", phase="test", batch=batch, seed=3)
    machine, host = run_machine(workload)
    reference = workload.reference()
    checked = 0
    for name in workload.blobs():
        got = workload.float_blob(name, workload.read_blob(name, machine.read))
        want = reference.blobs[name].data
        lsb = 2.0 ** -workload.plan.formats[name]["data"].frac
        err = np.abs(got - want).max()
        assert err <= LSB_BOUND * lsb, f"{name}: error {err} > {LSB_BOUND} LSB ({lsb})"
        assert np.abs(want).max() > 4 * lsb, f"{name}: the reference is all but zero"
        checked += 1
    assert checked >= 3
    for layer, result in host.results.items():
        if "loss" in result:
            assert result["loss"] == pytest.approx(float(reference.blobs[layer].data), abs=0.01)


def test_machine_names_the_command_it_refuses():
    workload = build_workload(NETS / "odd_ip.prototxt", board="arty", phase="test", batch=2)
    machine = Machine(workload.plan)
    bad = (Opcode.GEMM, dict(a_offset=0, b_offset=0, c_offset=0, m=workload.plan.rows + 1,
                             n=1, k=1, flags=0, bias_addr=0, bias_shift=0))
    with pytest.raises(MachineError, match=r"command 1 \(GEMM\).*does not fit"):
        machine.run([(Opcode.NOP, {}), bad])
    with pytest.raises(MachineError, match="even, non-zero count"):
        machine.run([(Opcode.SGD_UPDATE, dict(count=3))])
    # odd_ip has a Sigmoid and no TanH: only the Sigmoid table is built.
    assert workload.plan.units["eltwise"]["tables"] == ["sigmoid"]
    tanh = dict(func=EltwiseOp.TANH_FWD, src=0, aux=0, dst=0, count=2, shift=0, slope=0)
    with pytest.raises(MachineError, match="TANH_FWD: the build has no tanh table"):
        machine.run([(Opcode.ELTWISE, tanh)])


@pytest.mark.parametrize("net,batch", [
    (ROOT / "nets" / "lenet_train_test.prototxt", 2),
    (NETS / "odd_conv.prototxt", 3),
    (NETS / "odd_ip.prototxt", 2),
], ids=["lenet", "odd_conv", "odd_ip"])
def test_training_iteration_matches_float_sgd(net, batch):
    """One training iteration of the compiled schedule (forward, backward,
    gradient accumulation, SGD with momentum and weight decay from zero
    history): every parameter's step agrees with the float reference's."""
    workload = build_workload(net, board="arty", phase="train", batch=batch, seed=3)
    machine, host = run_machine(workload)
    lr, decay = 0.01, 0.0005      # Machine.set_solver's defaults (momentum: no history yet)
    reference = workload.net
    reference.forward(**{k: v.astype(np.float32) for k, v in workload.inputs.items()})
    reference.backward()
    plan = workload.plan
    params = {p["key"]: p for rec in plan.layers for p in rec["params"]}
    checked = 0
    for layer, blobs in reference.params.items():
        for i, blob in enumerate(blobs):
            key = f"{layer}/{i}"
            fmt = plan.formats[key]["data"]
            region = plan.region(f"{key}.weight")
            before = dequantize(quantize(blob.data, fmt), fmt)
            after = dequantize(region.unpack(machine.read(region.offset, region.size)), fmt)
            want = lr * params[key]["lr_mult"] * (blob.diff + decay * params[key]["decay_mult"]
                                                  * blob.data)
            got = before - after
            # The weight rounds stochastically to its format (up to 1 LSB per
            # element); gradients carry the forward's roundings, and a MAX
            # pool whose window ties in fixed point (not in float) sends an
            # element's gradient elsewhere.
            lsb = 2.0 ** -fmt.frac
            err = np.abs(got - want).max()
            assert err <= 2 * lsb + 0.1 * np.abs(want).max(), f"{key}: error {err} ({lsb})"
            rel = np.linalg.norm(got - want) / np.linalg.norm(want)
            assert rel < 0.25, f"{key}: step off by {rel:.1%} of its size"
            checked += 1
            # The gradient is zeroed for the next iteration.
            grad = plan.region(f"{key}.gradient")
            assert not grad.unpack(machine.read(grad.offset, grad.size)).any()
    assert checked == sum(1 for p in params.values() if p["learn"])
    losses = [r["loss"] for r in host.results.values() if "loss" in r]
    assert losses and all(np.isfinite(losses))
