"""benchmarks/ecp5_logic_depth.py ranks register-to-register paths of a
yosys JSON netlist by nominal delay and names the signals along them."""

import importlib.util
import json
import pathlib

_SCRIPT = pathlib.Path(__file__).parents[2] / "benchmarks" / "ecp5_logic_depth.py"
_spec = importlib.util.spec_from_file_location("ecp5_logic_depth", _SCRIPT)
logic_depth = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(logic_depth)


def _cell(kind, **ports):
    """ports: name -> (direction, [bits])"""
    return {"type": kind,
            "port_directions": {p: d for p, (d, _) in ports.items()},
            "connections": {p: bits for p, (_, bits) in ports.items()}}


def test_deepest_path_is_ranked_first_with_its_signals(tmp_path, capsys):
    # a -> LUT -> LUT -> LUT -> deep ; a -> LUT -> shallow ; bit 1 is the clock.
    cells = {
        "a_TRELLIS_FF_Q": _cell("TRELLIS_FF", CLK=("input", [1]), DI=("input", [9]),
                                Q=("output", [2])),
        "x_LUT4_Z": _cell("LUT4", A=("input", [2]), Z=("output", [3])),
        "y_LUT4_Z": _cell("LUT4", A=("input", [3]), B=("input", [2]), Z=("output", [4])),
        "z_LUT4_Z": _cell("LUT4", A=("input", [4]), Z=("output", [5])),
        "deep_TRELLIS_FF_Q": _cell("TRELLIS_FF", CLK=("input", [1]), DI=("input", [5]),
                                   Q=("output", [6])),
        "s_LUT4_Z": _cell("LUT4", A=("input", [2]), Z=("output", [7])),
        "shallow_TRELLIS_FF_Q": _cell("TRELLIS_FF", CLK=("input", [1]), DI=("input", [7]),
                                      Q=("output", [8])),
    }
    netlist = tmp_path / "top.json"
    netlist.write_text(json.dumps({"modules": {"top": {"cells": cells}}}))
    assert logic_depth.main([str(netlist), "--route", "1.0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # clock-to-out 0.5 + route 1.0, then three LUTs of 0.25 + 1.0 each.
    assert lines[1].split() == ["5.2", "ns", "deep.DI", "(4", "signals)"]
    assert lines[2].split(" <- ") == ["          z", "y", "x", "a"]
    assert lines[3].split() == ["2.8", "ns", "shallow.DI", "(2", "signals)"]


def test_a_missing_netlist_is_one_line_and_exit_1(tmp_path, capsys):
    assert logic_depth.main([str(tmp_path / "none.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.json" in err
