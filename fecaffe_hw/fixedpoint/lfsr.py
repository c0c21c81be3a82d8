"""The LFSR every stochastic-rounding core uses, and stochastic rounding itself.

A 32-bit Galois LFSR shifting right with feedback mask ``LFSR_MASK``
(x^32 + x^22 + x^2 + x + 1): ``lsb = s & 1; s >>= 1; if lsb: s ^= LFSR_MASK``.
Each random word is the state after a step. Maximal length: period 2**32 - 1
over the nonzero states.
"""

import functools

import numpy as np

__all__ = ["LFSR_BITS", "LFSR_MASK", "lfsr_step", "Lfsr", "stochastic_round"]

LFSR_BITS = 32
LFSR_MASK = 0x80200003

# Words per block of the vectorised generator: blocks are produced by jumping
# the previous block LFSR_BLOCK steps ahead with a linear (GF(2)) map.
_BLOCK = 4096


def lfsr_step(state):
    """One step of the LFSR on a Python int state; returns the next state."""
    lsb = state & 1
    state >>= 1
    if lsb:
        state ^= LFSR_MASK
    return state


def _step_array(states):
    lsb = states & np.uint32(1)
    return (states >> np.uint32(1)) ^ (lsb * np.uint32(LFSR_MASK))


@functools.cache
def _jump_tables(steps):
    """Byte tables for the linear map "advance ``steps`` steps": the advanced
    state is the XOR of ``tables[k][byte k of state]`` over the four bytes."""
    columns = np.uint32(1) << np.arange(32, dtype=np.uint32)
    for _ in range(steps):
        columns = _step_array(columns)
    byte_values = np.arange(256, dtype=np.uint32)
    tables = np.zeros((4, 256), dtype=np.uint32)
    for k in range(4):
        for bit in range(8):
            selected = ((byte_values >> np.uint32(bit)) & np.uint32(1)).astype(bool)
            tables[k][selected] ^= columns[8 * k + bit]
    return tables


def _jump(states, tables):
    out = tables[0][states & np.uint32(0xFF)]
    for k in range(1, 4):
        out ^= tables[k][(states >> np.uint32(8 * k)) & np.uint32(0xFF)]
    return out


class Lfsr:
    """Seeded model of the hardware LFSR; ``seed`` is a nonzero 32-bit int."""

    def __init__(self, seed):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"LFSR seed must be an integer, not {seed!r}")
        if not 0 < seed < 2**LFSR_BITS:
            raise ValueError(f"LFSR seed must be a nonzero 32-bit value, not {seed!r}")
        self._state = int(seed)

    @property
    def state(self):
        """Current state (the last word produced, or the seed)."""
        return self._state

    def next_word(self):
        self._state = lfsr_step(self._state)
        return self._state

    def next_words(self, n):
        """The next ``n`` words as a uint32 array (the state after each step)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"Word count must be a non-negative integer, not {n!r}")
        n = int(n)
        words = np.empty(n, dtype=np.uint32)
        first = min(n, _BLOCK)
        for i in range(first):
            words[i] = self.next_word()
        if n > _BLOCK:
            tables = _jump_tables(_BLOCK)
            for start in range(_BLOCK, n, _BLOCK):
                stop = min(start + _BLOCK, n)
                words[start:stop] = _jump(words[start - _BLOCK:stop - _BLOCK], tables)
            self._state = int(words[-1])
        return words


def stochastic_round(q, shift, words):
    """``floor((q + (words & (2**shift - 1))) / 2**shift)`` elementwise.

    ``q`` is an integer array, ``shift`` in [1, 32], ``words`` a uint32 array of
    q's shape or an :class:`Lfsr` (then ``q.size`` words are drawn, in C order).
    The caller saturates to its format.
    """
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) \
            or not 1 <= shift <= LFSR_BITS:
        raise ValueError(f"Stochastic rounding shift must be in [1, {LFSR_BITS}], not {shift!r}")
    array = np.asarray(q)
    if array.dtype.kind not in "iu":
        raise TypeError(f"Expected an integer array, not dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if isinstance(words, Lfsr):
        words = words.next_words(array.size).reshape(array.shape)
    words = np.asarray(words)
    if words.shape != array.shape:
        raise ValueError(f"Need one random word per element: words shape {words.shape} "
                         f"!= values shape {array.shape}")
    shift = int(shift)
    mask = np.int64((1 << shift) - 1)
    noise = words.astype(np.int64) & mask
    # Split off the dropped bits first so adding noise cannot overflow int64.
    result = (array >> np.int64(shift)) + (((array & mask) + noise) >> np.int64(shift))
    return result[()] if np.ndim(q) == 0 else result
