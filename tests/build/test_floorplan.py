import pytest

from fecaffe_hw.build.floorplan import MULT_SITES, array_floorplan, floorplan_commands


def _site(bel):
    x, y, name = bel.split("/")
    return int(x[1:]), int(y[1:]), name


def test_lfe5u_85f_sites():
    lines = MULT_SITES["LFE5U-85F"]
    sites = [bel for line in lines for bel in line]
    assert len(sites) == len(set(sites)) == 156      # the device's MULT18X18Ds
    for line in lines:
        xs = [_site(bel)[0] for bel in line]
        assert xs == sorted(xs) and len({_site(bel)[1] for bel in line}) == 1
        # Four to a block, nextpnr naming each by its column's offset in the block.
        for n in range(0, len(line), 4):
            base = _site(line[n])[0]
            assert [_site(bel)[2] for bel in line[n:n + 4]] == [
                f"MULT18_{x - base}" for x, _, _ in map(_site, line[n:n + 4])]
            assert [_site(bel)[0] - base for bel in line[n:n + 4]] == [0, 1, 4, 5]


@pytest.mark.parametrize("rows, cols", [(10, 11), (2, 2), (8, 10), (12, 13), (1, 52)])
def test_array_rows_take_consecutive_sites(rows, cols):
    placement = array_floorplan("LFE5U-85F", rows, cols)
    assert sorted(placement) == [(i, j) for i in range(rows) for j in range(cols)]
    assert len(set(placement.values())) == rows * cols
    lines = MULT_SITES["LFE5U-85F"]
    index = {bel: (k, n) for k, line in enumerate(lines) for n, bel in enumerate(line)}
    for i in range(rows):
        for j in range(cols - 1):
            # An `a` hop is one site along a multiplier row.
            (k0, n0), (k1, n1) = index[placement[i, j]], index[placement[i, j + 1]]
            assert k0 == k1 and n1 == n0 + 1
    used = [sum(index[bel][0] == k for bel in placement.values()) for k in range(len(lines))]
    # Spread over the rows, none more than one array row fuller than another.
    assert max(used) - min(used) <= cols


def test_no_floorplan_when_unknown_or_too_big():
    assert array_floorplan("LFE5UM5G-45F", 2, 2) == {}
    assert floorplan_commands("LFE5UM5G-45F", 2, 2) == []
    assert array_floorplan("LFE5U-85F", 13, 11) == {}     # 4 rows of 11 per 52 sites, 3 rows
    assert array_floorplan("LFE5U-85F", 1, 53) == {}


def test_commands_name_each_pe():
    commands = floorplan_commands("LFE5U-85F", 2, 3)
    assert len(commands) == 6
    assert commands[0].startswith('setattr -set BEL "X')
    assert commands[0].endswith(" *.array.mult_0_0.dsp/t:MULT18X18D")
