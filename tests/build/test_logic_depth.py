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
    assert "not placed" in lines[0]
    # clock-to-out 0.5, then three LUTs of 0.25 each, four nets of 1.0.
    assert lines[2].split() == ["5.2", "ns", "deep.DI", "(4", "signals)"]
    assert lines[3].split(" <- ") == ["          z", "y", "x", "a"]
    assert lines[4].split() == ["2.8", "ns", "shallow.DI", "(2", "signals)"]


def test_placed_netlist_charges_distance(tmp_path, capsys):
    # Two one-LUT paths from the same register: the one whose LUT nextpnr
    # put 50 tiles away is the worse, by the per-tile delay both ways.
    def placed(cell, x, y):
        cell["attributes"] = {"NEXTPNR_BEL": f"X{x}/Y{y}/SLICEA"}
        return cell
    cells = {
        "a_TRELLIS_FF_Q": placed(_cell("TRELLIS_FF", CLK=("input", [1]), DI=("input", [9]),
                                       Q=("output", [2])), 10, 10),
        # nextpnr's constant driver, placed far away: never charged.
        "$PACKER_GND": placed(_cell("TRELLIS_COMB", F=("output", [7])), 100, 100),
        "near_LUT4_Z": placed(_cell("TRELLIS_COMB", A=("input", [2]), B=("input", [7]),
                                    F=("output", [3])), 11, 10),
        "n_TRELLIS_FF_Q": placed(_cell("TRELLIS_FF", CLK=("input", [1]), DI=("input", [3]),
                                       Q=("output", [4])), 11, 10),
        "far_LUT4_Z": placed(_cell("TRELLIS_COMB", A=("input", [2]), F=("output", [5])), 60, 10),
        "f_TRELLIS_FF_Q": placed(_cell("TRELLIS_FF", CLK=("input", [1]), DI=("input", [5]),
                                       Q=("output", [6])), 10, 10),
    }
    netlist = tmp_path / "placed.json"
    netlist.write_text(json.dumps({"modules": {"top": {"cells": cells}}}))
    assert logic_depth.main([str(netlist), "--per-tile", "0.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "placed: 6 with tiles" in lines[0]
    # 0.5 + (0.6 + 0.1 * 50) + 0.25 + (0.6 + 0.1 * 50)
    assert lines[2].split()[1:3] == ["ns", "f.DI@10,10"]
    assert abs(float(lines[2].split()[0]) - 11.95) <= 0.05
    assert lines[3].split(" <- ") == ["          far@60,10", "a@10,10"]
    # 0.5 + (0.6 + 0.1) + 0.25 + 0.6 (same tile: no distance)
    assert lines[4].split()[1:3] == ["ns", "n.DI@11,10"]
    assert abs(float(lines[4].split()[0]) - 2.05) <= 0.05


def test_registered_multipliers_start_and_end_paths(tmp_path, capsys):
    # a -> MULT -> LUT -> r, with the multiplier combinational, with only its
    # output register, and with input and output registers.
    def netlist(registers):
        params = {"REG_INPUTA_CLK": "CLK0" if registers == "inputs" else "NONE",
                  "REG_OUTPUT_CLK": "NONE" if registers is None else "CLK0"}
        mult = _cell("MULT18X18D", A0=("input", [2]), B0=("input", [2]),
                     CLK0=("input", [1]), P0=("output", [3]))
        mult["parameters"] = params
        return {
            "a_TRELLIS_FF_Q": _cell("TRELLIS_FF", CLK=("input", [1]), DI=("input", [9]),
                                    Q=("output", [2])),
            "p_MULT18X18D_P0": mult,
            "x_LUT4_Z": _cell("LUT4", A=("input", [3]), Z=("output", [4])),
            "r_TRELLIS_FF_Q": _cell("TRELLIS_FF", CLK=("input", [1]), DI=("input", [4]),
                                    Q=("output", [5])),
        }

    def ranked(registers):
        path = tmp_path / f"{registers}.json"
        path.write_text(json.dumps({"modules": {"top": {"cells": netlist(registers)}}}))
        assert logic_depth.main([str(path), "--route", "1.0"]) == 0
        return {line.split()[2]: float(line.split()[0])
                for line in capsys.readouterr().out.splitlines()[2::2]}

    # 0.5 + (1.0 + 1.5) + 4.2 + (1.0 + 1.5) + 0.25 + 1.0: one path through it.
    # (The script prints a tenth of a nanosecond.)
    assert abs(ranked(None)["r.DI"] - 10.95) <= 0.051
    # Registered, its nets cost what any net does (its registers give the
    # long hops their own cycles): P launches at 0.74: 0.74 + 1.0 + 0.25 +
    # 1.0; A ends at 0.5 + 1.0 + setup.
    for registers, setup in (("output", 3.5), ("inputs", 0.08)):
        ends = ranked(registers)
        assert abs(ends["r.DI"] - 2.99) <= 0.051
        assert abs(ends["p.A0"] - (1.5 + setup)) <= 0.051


def test_a_missing_netlist_is_one_line_and_exit_1(tmp_path, capsys):
    assert logic_depth.main([str(tmp_path / "none.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.json" in err
