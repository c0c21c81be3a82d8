import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from fecaffe_hw.fixedpoint.windows import output_size, pixel_stream, window_origins, windows


def windows_by_loop(image, kernel, stride, pad, ceil_mode):
    """im2col the plain way: every output position, every channel, every tap."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    channels, height, width = image.shape
    oh = output_size(height, kh, sh, ph, ceil_mode=ceil_mode)
    ow = output_size(width, kw, sw, pw, ceil_mode=ceil_mode)
    rows = []
    for oy in range(oh):
        for ox in range(ow):
            for c in range(channels):
                row = []
                for ky in range(kh):
                    for kx in range(kw):
                        y, x = oy * sh - ph + ky, ox * sw - pw + kx
                        inside = 0 <= y < height and 0 <= x < width
                        row.append(int(image[c, y, x]) if inside else 0)
                rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(-1, kh * kw)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_windows_match_loop(data):
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    ph, pw = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kw - 1))
    height = data.draw(st.integers(max(1, kh - 2 * ph), 8))
    width = data.draw(st.integers(max(1, kw - 2 * pw), 8))
    channels = data.draw(st.integers(1, 3))
    ceil_mode = data.draw(st.booleans())
    try:
        output_size(height, kh, sh, ph, ceil_mode=ceil_mode)
        output_size(width, kw, sw, pw, ceil_mode=ceil_mode)
    except ValueError:
        assume(False)
    image = np.random.default_rng(data.draw(st.integers(0, 1000))).integers(
        -100, 100, (channels, height, width))
    got = windows(image, (kh, kw), (sh, sw), (ph, pw), ceil_mode=ceil_mode)
    assert np.array_equal(got, windows_by_loop(image, (kh, kw), (sh, sw), (ph, pw), ceil_mode))


@pytest.mark.parametrize("size, kernel, stride, pad, ceil_mode, expected", [
    (28, 5, 1, 0, False, 24),     # LeNet conv1
    (24, 2, 2, 0, True, 12),      # LeNet pool1
    (227, 11, 4, 0, False, 55),   # AlexNet conv1
    (55, 3, 2, 0, True, 27),      # AlexNet pool1
    (13, 3, 2, 0, True, 6),       # AlexNet pool5
    (112, 3, 2, 0, True, 56),     # GoogLeNet pool1: ceil rounds up
    (112, 3, 2, 0, False, 55),
    (5, 3, 2, 1, True, 3),        # padded: last window starts at 3 < 5 + 1
    (4, 2, 2, 1, True, 3),        # ceil gives 4, start 6 >= 4 + 1 trims it
])
def test_output_size_caffe_examples(size, kernel, stride, pad, ceil_mode, expected):
    assert output_size(size, kernel, stride, pad, ceil_mode=ceil_mode) == expected


def test_output_size_rejects():
    with pytest.raises(ValueError, match="Kernel 5 does not fit input 3 with pad 0"):
        output_size(3, 5, 1, 0)
    with pytest.raises(ValueError, match="Stride 2 > kernel 1 leaves the last pooling window"):
        output_size(4, 1, 2, 0, ceil_mode=True)


def test_pixel_stream_is_channel_interleaved_raster():
    image = np.arange(2 * 2 * 3).reshape(2, 2, 3)          # (C, H, W)
    assert list(pixel_stream(image)) == [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]


def test_window_origins_are_unpadded():
    y0, x0 = window_origins(5, 5, (3, 3), (2, 2), (1, 1), ceil_mode=True)
    assert list(y0) == [-1] * 3 + [1] * 3 + [3] * 3 and list(x0) == [-1, 1, 3] * 3
