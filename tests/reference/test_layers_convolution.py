import numpy as np
import pytest

from fecaffe_hw.errors import NetError
from fecaffe_hw.reference.im2col import col2im, conv_out_size, im2col
from reference.gradient_checker import blob, check_gradient, make_layer


def direct_convolution(x, w, b, pad, stride, dilation, group):
    """Convolution by the definition: loop over output pixels and kernel taps."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    x, w = x.astype(np.float64), w.astype(np.float64)
    out = np.zeros((n, m, oh, ow))
    mg = m // group
    for oy in range(oh):
        for ox in range(ow):
            for i in range(kh):
                for j in range(kw):
                    y = oy * stride[0] - pad[0] + i * dilation[0]
                    xx = ox * stride[1] - pad[1] + j * dilation[1]
                    if not (0 <= y < h and 0 <= xx < wd):
                        continue
                    for g in range(group):
                        xs = x[:, g * cg:(g + 1) * cg, y, xx]          # (n, cg)
                        ws = w[g * mg:(g + 1) * mg, :, i, j]           # (mg, cg)
                        out[:, g * mg:(g + 1) * mg, oy, ox] += xs @ ws.T
    if b is not None:
        out += b[:, None, None]
    return out


def random_config(rng):
    while True:
        group = int(rng.choice([1, 2, 3]))
        c = group * int(rng.integers(1, 3))
        m = group * int(rng.integers(1, 3))
        kh, kw = (int(k) for k in rng.integers(1, 4, 2))
        ph, pw = (int(p) for p in rng.integers(0, 3, 2))
        sh, sw = (int(s) for s in rng.integers(1, 4, 2))
        dh, dw = (int(d) for d in rng.integers(1, 3, 2))
        h, w = (int(s) for s in rng.integers(3, 8, 2))
        if h + 2 * ph >= dh * (kh - 1) + 1 and w + 2 * pw >= dw * (kw - 1) + 1:
            bias = bool(rng.integers(0, 2))
            text = (f'type: "Convolution" convolution_param {{ num_output: {m} '
                    f'kernel_h: {kh} kernel_w: {kw} pad_h: {ph} pad_w: {pw} '
                    f'stride_h: {sh} stride_w: {sw} dilation: {dh} dilation: {dw} '
                    f'group: {group} bias_term: {str(bias).lower()} '
                    'weight_filler { type: "gaussian" std: 0.5 } '
                    'bias_filler { type: "uniform" min: -1 max: 1 } }')
            return text, (2, c, h, w), (ph, pw), (sh, sw), (dh, dw), group, bias


@pytest.mark.parametrize("seed", range(12))
def test_forward_matches_direct_convolution(seed):
    rng = np.random.default_rng(seed)
    text, shape, pad, stride, dilation, group, bias = random_config(rng)
    layer = make_layer(text, seed=seed)
    bottom, top = [blob(rng.standard_normal(shape))], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    want = direct_convolution(bottom[0].data, layer.blobs[0].data,
                              layer.blobs[1].data if bias else None,
                              pad, stride, dilation, group)
    assert top[0].data.dtype == np.float32
    assert top[0].shape == want.shape
    np.testing.assert_allclose(top[0].data, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_gradients(seed):
    rng = np.random.default_rng(100 + seed)
    text, shape, *_ = random_config(rng)
    layer = make_layer(text, seed=seed)
    check_gradient(layer, [blob(rng.standard_normal(shape))], [blob(np.zeros(1))],
                   threshold=1e-6, seed=seed)


def test_gradients_float32_caffe_setting():
    # Caffe's own test setting: float32 blobs, step 1e-2, threshold 1e-2.
    layer = make_layer('type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 '
                       'stride: 2 pad: 1 weight_filler { type: "gaussian" } '
                       'bias_filler { type: "gaussian" } }')
    rng = np.random.default_rng(5)
    check_gradient(layer, [blob(rng.standard_normal((2, 2, 6, 5)))], [blob(np.zeros(1))],
                   float64=False, step=1e-2, threshold=1e-2)


def test_shared_weights_over_two_bottoms():
    layer = make_layer('type: "Convolution" convolution_param { num_output: 2 kernel_size: 2 '
                       'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }')
    rng = np.random.default_rng(3)
    bottom = [blob(rng.standard_normal((1, 2, 4, 4))), blob(rng.standard_normal((1, 2, 4, 4)))]
    check_gradient(layer, bottom, [blob(np.zeros(1)), blob(np.zeros(1))], threshold=1e-6)
    assert layer.macs == 2 * 1 * 2 * 3 * 3 * 2 * 2 * 2


def test_im2col_col2im_are_adjoint():
    rng = np.random.default_rng(0)
    geometry = ((3, 2), (1, 2), (2, 1), (1, 2))
    x = rng.standard_normal((2, 3, 7, 6))
    col = im2col(x, *geometry)
    oh, ow = conv_out_size(7, 3, 1, 2, 1), conv_out_size(6, 2, 2, 1, 2)
    assert col.shape == (3 * 3 * 2, 2 * oh * ow)
    c = rng.standard_normal(col.shape)
    np.testing.assert_allclose((col * c).sum(), (x * col2im(c, x.shape, *geometry)).sum())


@pytest.mark.parametrize("size,kernel,pad,stride,dilation,want", [
    (28, 5, 0, 1, 1, 24),     # LeNet conv1
    (12, 5, 0, 1, 1, 8),      # LeNet conv2
    (227, 11, 0, 4, 1, 55),   # AlexNet conv1
    (5, 3, 1, 2, 1, 3),
    (7, 3, 0, 2, 2, 2),       # effective kernel 5
    (6, 3, 1, 2, 1, 3),       # floor((6 + 2 - 3) / 2) + 1
])
def test_output_size(size, kernel, pad, stride, dilation, want):
    assert conv_out_size(size, kernel, pad, stride, dilation) == want
    layer = make_layer(f'type: "Convolution" convolution_param {{ num_output: 1 '
                       f'kernel_size: {kernel} pad: {pad} stride: {stride} '
                       f'dilation: {dilation} }}')
    bottom, top = [blob(np.zeros((1, 1, size, size)))], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    assert top[0].shape == (1, 1, want, want)


def test_lenet_conv_blobs_and_macs():
    layer = make_layer('name: "conv1" type: "Convolution" convolution_param { num_output: 20 '
                       'kernel_size: 5 stride: 1 weight_filler { type: "xavier" } '
                       'bias_filler { type: "constant" } }')
    bottom, top = [blob(np.zeros((64, 1, 28, 28)))], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    assert [b.shape for b in layer.blobs] == [(20, 1, 5, 5), (20,)]
    assert layer.macs == 64 * 20 * 24 * 24 * 25
    assert np.all(layer.blobs[1].data == 0)
    assert np.abs(layer.blobs[0].data).max() <= np.sqrt(3 / 25)


@pytest.mark.parametrize("text,shape,message", [
    ('num_output: 2 kernel_size: 7', (1, 1, 5, 5), "kernel 7x7 does not fit input 5x5 (pad 0)"),
    ('num_output: 2 kernel_size: 3 group: 2', (1, 3, 5, 5), "group 2 must divide"),
    ('num_output: 0 kernel_size: 3', (1, 1, 5, 5), "num_output 0"),
    ('num_output: 2', (1, 1, 5, 5), "kernel_size"),
    ('num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3', (1, 1, 5, 5), "not both"),
    ('num_output: 2 kernel_size: 3 stride: 0', (1, 1, 5, 5), "stride 0x0"),
])
def test_bad_parameters(text, shape, message):
    layer = make_layer(f'name: "conv9" type: "Convolution" convolution_param {{ {text} }}')
    with pytest.raises(NetError, match="conv9") as info:
        bottom, top = [blob(np.zeros(shape))], [blob(np.zeros(1))]
        layer.setup(bottom, top)
        layer.reshape(bottom, top)
    assert message in str(info.value)


def test_param_propagate_down_off_leaves_param_diffs():
    rng = np.random.default_rng(2)
    layer = make_layer('type: "Convolution" convolution_param { num_output: 2 kernel_size: 2 '
                       'weight_filler { type: "gaussian" } }')
    bottom, top = [blob(rng.standard_normal((1, 2, 4, 4)))], [blob(np.zeros(1))]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    layer.param_propagate_down = [True, False]
    top[0].diff[...] = rng.standard_normal(top[0].shape)
    layer.backward(top, [True], bottom)
    assert layer.blobs[0].diff.any()
    assert not layer.blobs[1].diff.any()
    assert bottom[0].diff.any()
