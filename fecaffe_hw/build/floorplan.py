"""Floorplan of the systolic array on an ECP5's rows of multipliers.

The MULT18X18Ds of an ECP5 sit in a few rows across the die, four to a
sysDSP block, and the array is a 2-D mesh: PE ``(i, j)`` passes its ``a``
operand to ``(i, j + 1)`` and its ``b`` operand to ``(i + 1, j)``, and
column ``j`` drains its accumulators through one bus. Left to itself
nextpnr scatters the PEs along those rows in no order (on the 10x11 ULX3S
plan, neighbours' operand nets spanned 25-30 tiles on average, and the
route stalled); the array's multipliers are then where most of the die's
routing goes. This module pins each PE's multiplier to a site instead.

When the array's columns fit the blocks of one multiplier row, each array
column takes one block of every multiplier row (in order; an array that
leaves only one or two blocks free leaves them between its halves, for the
rest of the SoC's multipliers), its rows filling the block's four sites and then the same
block on the next multiplier row: a ``b`` hop is one site (or straight up
to the next multiplier row), an ``a`` hop one block (across the gap, three),
and each column's drain bus stays in one vertical slice of the die. Wider arrays go row by row instead: array row ``i`` takes ``cols``
consecutive sites, an ``a`` hop one site and a ``b`` hop ``cols`` sites.
Only the multipliers are pinned; the placer puts each PE's fabric logic
(its accumulator) where it likes. The sites go to yosys as each cell's
``BEL`` attribute, which nextpnr's placers keep.

Only devices whose multiplier sites are listed in :data:`MULT_SITES` are
floorplanned; for others :func:`array_floorplan` returns no commands and
nextpnr places the array alone.
"""

__all__ = ["MULT_SITES", "MIDDLE_GAP_BLOCKS", "array_floorplan", "floorplan_commands"]


#: MULT18X18Ds in a sysDSP block.
BLOCK_SITES = 4


def _sites(rows_y, block_x):
    # Each sysDSP block holds four MULT18X18Ds at columns 0, 1, 4 and 5 of
    # its nine; nextpnr names them by that column and their index in the block.
    return [[f"X{x + offset}/Y{y}/MULT18_{offset}" for x in block_x for offset in (0, 1, 4, 5)]
            for y in rows_y]


#: nextpnr device -> its MULT18X18D sites, one list per multiplier row,
#: each ordered left to right (read from nextpnr's placements of the
#: LFE5U-85F: 3 rows of 13 blocks, 156 sites; the die's centre column, 67,
#: has none).
MULT_SITES = {
    "LFE5U-85F": _sites((10, 34, 58), (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114)),
}


def _spread(rows, lines):
    # Array rows per multiplier row, spread evenly, the middle ones taking
    # any extra (the die's middle is the closest to the rest of the SoC).
    count = [rows // lines] * lines
    order = sorted(range(lines), key=lambda k: abs(k - (lines - 1) / 2))
    for k in order[:rows % lines]:
        count[k] += 1
    return count


#: An array that leaves at most this many sysDSP blocks of a multiplier row
#: free leaves them between its two halves rather than at its sides.
MIDDLE_GAP_BLOCKS = 2


def _column_blocks(cols, blocks):
    """The block each array column takes: the array centred; if it leaves
    no more than :data:`MIDDLE_GAP_BLOCKS` blocks free, they lie between
    its halves.

    The rest of the SoC (sequencer, DMAs, pooling, eltwise engine) places
    around the die's middle, and its own multipliers go to whichever sites
    the array left: when an array nearly fills the rows and the free blocks
    are at the die's edges, they landed there, far from their logic. On the
    10x11 ULX3S plan (two free blocks) the gap in the middle routed in 312 s
    with 9 endpoints over 13.3 ns, against 727 s and 24 endpoints with the
    free blocks at the edges (same sources otherwise, one build each). A
    smaller array leaves free blocks beside it, near the middle anyway. An
    ``a`` hop across the gap is the gap's blocks longer."""
    spare = blocks - cols
    gap = spare if spare <= MIDDLE_GAP_BLOCKS else 0
    first = (spare - gap) // 2
    left = (cols + 1) // 2
    return [first + j + (gap if j >= left else 0) for j in range(cols)]


def array_floorplan(device, rows, cols):
    """``{(i, j): bel}`` placing a ``rows x cols`` array on ``device``'s
    multiplier rows, or ``{}`` when the device's sites are unknown or the
    array does not fit.

    With ``cols`` no more than a multiplier row's blocks (and ``rows`` no
    more than four per multiplier row), column ``j`` takes one block of
    each multiplier row, in order, centred, one or two free blocks between
    the halves of an array that leaves no more (:func:`_column_blocks`);
    otherwise array rows take
    ``cols`` consecutive sites each, as many to a multiplier row as fit,
    centred.
    Either way the array rows are spread evenly over the multiplier rows.
    """
    lines = MULT_SITES.get(device)
    if not lines:
        return {}
    sites = min(len(line) for line in lines)
    blocks = sites // BLOCK_SITES
    placement, i = {}, 0
    if cols <= blocks and rows <= BLOCK_SITES * len(lines):
        for line, n in zip(lines, _spread(rows, len(lines))):
            for r in range(n):
                for j, block in enumerate(_column_blocks(cols, blocks)):
                    placement[(i, j)] = line[block * BLOCK_SITES + r]
                i += 1
        return placement
    per_line = sites // cols
    if per_line == 0 or rows > per_line * len(lines):
        return {}
    for line, n in zip(lines, _spread(rows, len(lines))):
        start = (len(line) - n * cols) // 2
        for r in range(n):
            for j in range(cols):
                placement[(i, j)] = line[start + r * cols + j]
            i += 1
    return placement


def floorplan_commands(device, rows, cols, *, array_path="*.array"):
    """The yosys commands that give the array's multipliers their sites
    (:func:`array_floorplan`): one ``setattr`` per PE on the ``MULT18X18D``
    inside module ``{array_path}.mult_{i}_{j}.dsp``; none if there is no
    floorplan for ``device``."""
    return [f'setattr -set BEL "{bel}" {array_path}.mult_{i}_{j}.dsp/t:MULT18X18D'
            for (i, j), bel in sorted(array_floorplan(device, rows, cols).items())]
