import pytest

from fecaffe_hw.build.floorplan import (MIDDLE_GAP_BLOCKS, MULT_SITES, array_floorplan,
                                        floorplan_commands)


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


def _index():
    lines = MULT_SITES["LFE5U-85F"]
    return {bel: (k, n) for k, line in enumerate(lines) for n, bel in enumerate(line)}


def _check_spread(placement, rows, cols):
    assert sorted(placement) == [(i, j) for i in range(rows) for j in range(cols)]
    assert len(set(placement.values())) == rows * cols
    index = _index()
    used = [sum(index[bel][0] == k for bel in placement.values()) for k in range(3)]
    # Spread over the multiplier rows, none more than one array row fuller.
    assert max(used) - min(used) <= cols


@pytest.mark.parametrize("rows, cols", [(10, 11), (2, 2), (8, 10), (12, 13), (1, 13)])
def test_array_columns_take_blocks(rows, cols):
    placement = array_floorplan("LFE5U-85F", rows, cols)
    _check_spread(placement, rows, cols)
    index = _index()
    # One or two free blocks lie between the array's halves; more go to its sides.
    gap = 13 - cols if 13 - cols <= MIDDLE_GAP_BLOCKS else 0
    for i in range(rows):
        for j in range(cols):
            k, n = index[placement[i, j]]
            if j + 1 < cols:
                # An `a` hop is the same site of the next block along (past
                # the gap in the middle).
                step = 1 + (gap if j + 1 == (cols + 1) // 2 else 0)
                assert index[placement[i, j + 1]] == (k, n + 4 * step)
            if i + 1 < rows:
                # A `b` hop is the next site of the block, or the first site
                # of the same block on a later multiplier row.
                k1, n1 = index[placement[i + 1, j]]
                assert (k1, n1) in ((k, n + 1), (k + 1, n - n % 4))
    # Centred: as many blocks unused on the left as on the right, give or take one.
    left = min(index[bel][1] for bel in placement.values()) // 4
    right = 13 - 1 - max(index[bel][1] for bel in placement.values()) // 4
    assert abs(left - right) <= 1


@pytest.mark.parametrize("rows, cols", [(1, 52), (4, 20), (2, 26)])
def test_wide_array_rows_take_consecutive_sites(rows, cols):
    placement = array_floorplan("LFE5U-85F", rows, cols)
    _check_spread(placement, rows, cols)
    index = _index()
    for i in range(rows):
        for j in range(cols - 1):
            # An `a` hop is one site along a multiplier row.
            (k0, n0), (k1, n1) = index[placement[i, j]], index[placement[i, j + 1]]
            assert k0 == k1 and n1 == n0 + 1


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
