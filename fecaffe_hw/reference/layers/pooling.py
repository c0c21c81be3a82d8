"""Pooling: MAX (with Caffe's argmax mask) and AVE, with Caffe's output-size rules."""

import numpy as np

from ..layer import Layer, register

__all__ = ["Pooling", "pooled_size"]

MAX, AVE, STOCHASTIC = 0, 1, 2
CEIL, FLOOR = 0, 1
_FLT_MAX = np.finfo(np.float32).max


def pooled_size(size, kernel, pad, stride, round_mode=CEIL):
    """Caffe's pooled extent: ``ceil((size + 2p - k) / s) + 1`` (floor with
    ``round_mode: FLOOR``), less one if padding would start the last window at
    or beyond ``size + p``."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if round_mode == CEIL else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@register("Pooling")
class Pooling(Layer):
    """MAX or AVE pooling over ``kernel`` windows at ``stride`` with ``pad``.

    MAX keeps the flat ``h * W + w`` index of each window's first maximum
    (``self.mask``, also the optional second top; held as the window tap
    ``self.tap``) and backward routes the gradient there; AVE divides by the
    window clipped to ``H + pad``, padding inside it counted, as Caffe does.
    """

    num_tops = (1, 2)

    def setup(self, bottom, top):
        p = self.param.pooling_param
        self.method = p.pool
        if self.method == STOCHASTIC:
            raise self.error("STOCHASTIC pooling is not supported (MAX and AVE are)")
        if self.method not in (MAX, AVE):
            raise self.error(f"unknown pooling method {self.method}")
        if len(top) > 1 and self.method != MAX:
            raise self.error("only MAX pooling has a second (mask) top")
        self.global_pooling = p.global_pooling
        has_hw = p.HasField("kernel_h") or p.HasField("kernel_w")
        if self.global_pooling:
            if p.HasField("kernel_size") or has_hw:
                raise self.error("global_pooling takes no kernel size")
            self.kernel = None
        else:
            if p.HasField("kernel_size") == has_hw:
                raise self.error("kernel is kernel_size or kernel_h and kernel_w, exactly one")
            if has_hw and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
                raise self.error("kernel_h and kernel_w must be given together")
            self.kernel = ((p.kernel_h, p.kernel_w) if has_hw else (p.kernel_size, p.kernel_size))
            if min(self.kernel) <= 0:
                raise self.error(f"kernel {self.kernel[0]}x{self.kernel[1]} must be positive")
        has_pad_hw = p.HasField("pad_h") or p.HasField("pad_w")
        if has_pad_hw and p.HasField("pad"):
            raise self.error("pad is pad or pad_h and pad_w, not both")
        self.pad = (p.pad_h, p.pad_w) if has_pad_hw else (p.pad, p.pad)
        has_stride_hw = p.HasField("stride_h") or p.HasField("stride_w")
        if has_stride_hw and p.HasField("stride"):
            raise self.error("stride is stride or stride_h and stride_w, not both")
        self.stride = (p.stride_h, p.stride_w) if has_stride_hw else (p.stride, p.stride)
        if min(self.stride) <= 0:
            raise self.error(f"stride {self.stride[0]}x{self.stride[1]} must be positive")
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            raise self.error("global_pooling needs pad 0 and stride 1")
        if self.kernel and (self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]):
            raise self.error(f"pad {self.pad[0]}x{self.pad[1]} must be smaller than kernel "
                             f"{self.kernel[0]}x{self.kernel[1]}")
        fields = p.DESCRIPTOR.fields_by_name
        self.round_mode = p.round_mode if "round_mode" in fields else CEIL

    def reshape(self, bottom, top):
        if bottom[0].data.ndim != 4:
            raise self.error(f"pooling needs a 4-D bottom (N, C, H, W), got shape "
                             f"{bottom[0].shape}")
        n, c, h, w = bottom[0].shape
        kernel = (h, w) if self.global_pooling else self.kernel
        (kh, kw), (ph, pw), (sh, sw) = kernel, self.pad, self.stride
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise self.error(f"kernel {kh}x{kw} does not fit input {h}x{w} (pad {ph}"
                             + (f"x{pw})" if pw != ph else ")"))
        self.geometry = kernel
        self.in_hw = (h, w)
        self.out_hw = (pooled_size(h, kh, ph, sh, self.round_mode),
                       pooled_size(w, kw, pw, sw, self.round_mode))
        # Without padding Caffe never trims the ceil-mode extra window, and
        # with a kernel smaller than the stride it can miss the input entirely
        # (Caffe then writes out of bounds in backward): refuse that.
        if (self.out_hw[0] - 1) * sh - ph >= h or (self.out_hw[1] - 1) * sw - pw >= w:
            raise self.error(f"kernel {kh}x{kw} at stride {sh}x{sw} leaves the last pooling "
                             f"window outside input {h}x{w}")
        for t in top:
            t.reshape(n, c, *self.out_hw)

    def _taps(self):
        """Per kernel tap: its padded-array slices and the input coordinates it reads.

        The padded array is big enough for every window, ceil-mode ones
        included, so each tap is one strided slice."""
        (kh, kw), (sh, sw) = self.geometry, self.stride
        oh, ow = self.out_hw
        for i in range(kh):
            for j in range(kw):
                yield (i, j, (slice(i, i + sh * (oh - 1) + 1, sh),
                              slice(j, j + sw * (ow - 1) + 1, sw)))

    def _padded_extent(self):
        (kh, kw), (sh, sw) = self.geometry, self.stride
        oh, ow = self.out_hw
        return (sh * (oh - 1) + kh, sw * (ow - 1) + kw)

    def _window_sizes(self, dtype):
        """Caffe's AVE divisor: the window clipped to ``size + pad``, before clipping to 0."""
        sizes = []
        for out, k, p, s, size in zip(self.out_hw, self.geometry, self.pad, self.stride,
                                      self.in_hw):
            start = np.arange(out) * s - p
            end = np.minimum(start + k, size + p)
            sizes.append(end - start)
        return np.outer(*sizes).astype(dtype)

    def _padded(self, x, fill):
        """``x`` padded so every tap is one strided slice; ``x`` itself if no padding is needed."""
        n, c, h, w = x.shape
        (ph, pw), (eh, ew) = self.pad, self._padded_extent()
        if (ph, pw) == (0, 0) and eh <= h and ew <= w:
            return x
        xp = np.full((n, c, max(eh, h + ph), max(ew, w + pw)), fill, x.dtype)
        xp[:, :, ph:ph + h, pw:pw + w] = x
        return xp

    @property
    def mask(self):
        """Caffe's MAX mask: the flat ``h * W + w`` input index of each output."""
        kw = self.geometry[1]
        rows = np.arange(self.out_hw[0])[:, None] * self.stride[0] - self.pad[0]
        cols = np.arange(self.out_hw[1])[None, :] * self.stride[1] - self.pad[1]
        return (rows + self.tap // kw) * self.in_hw[1] + (cols + self.tap % kw)

    def forward(self, bottom, top):
        x = bottom[0].data
        n, c, _, _ = x.shape
        oh, ow = self.out_hw
        if self.method == MAX:
            xp = self._padded(x, -np.inf)
            best = np.full((n, c, oh, ow), -_FLT_MAX, x.dtype)
            tap = np.zeros((n, c, oh, ow), np.int32)
            better = np.empty((n, c, oh, ow), bool)
            # Taps in row-major order with a strict ">" keep the first maximum,
            # which is the element Caffe's loop records. Padding is -inf, so
            # it never wins.
            for k, (_, _, (sy, sx)) in enumerate(self._taps()):
                v = xp[:, :, sy, sx]
                np.greater(v, best, out=better)
                np.copyto(best, v, where=better)
                np.copyto(tap, k, where=better)
            self.tap = tap
            top[0].data[...] = best
            if len(top) > 1:
                top[1].data[...] = self.mask
        else:
            xp = self._padded(x, 0)
            acc = np.zeros((n, c, oh, ow), x.dtype)
            for _, _, (sy, sx) in self._taps():
                acc += xp[:, :, sy, sx]
            top[0].data[...] = acc / self._window_sizes(x.dtype)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        n, c, h, w = bottom[0].shape
        (ph, pw), (eh, ew) = self.pad, self._padded_extent()
        dxp = np.zeros((n, c, max(eh, h + ph), max(ew, w + pw)), dy.dtype)
        if self.method == MAX:
            routed = np.empty_like(dy)
            for k, (_, _, (sy, sx)) in enumerate(self._taps()):
                np.multiply(dy, self.tap == k, out=routed)
                dxp[:, :, sy, sx] += routed
        else:
            share = dy / self._window_sizes(dy.dtype)
            for _, _, (sy, sx) in self._taps():
                dxp[:, :, sy, sx] += share
        bottom[0].diff[...] = dxp[:, :, ph:ph + h, pw:pw + w]
