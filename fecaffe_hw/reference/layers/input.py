"""Input: tops of fixed shapes that the caller fills (pycaffe's ``net.blobs[...]``)."""

from ..layer import Layer, register

__all__ = ["Input"]


@register("Input")
class Input(Layer):
    """Shapes its tops from ``input_param.shape``: one shape for all, or one per top."""

    num_bottoms = 0
    num_tops = (1, None)

    def setup(self, bottom, top):
        shapes = self.param.input_param.shape
        if len(shapes) not in (1, len(top)):
            raise self.error(f"input_param gives {len(shapes)} shapes for {len(top)} tops "
                             f"(need 1 or {len(top)})")
        self.shapes = []
        for s in shapes:
            dims = tuple(int(d) for d in s.dim)
            if any(d < 0 for d in dims):
                raise self.error(f"input shape {dims} has a negative dimension")
            self.shapes.append(dims)

    def reshape(self, bottom, top):
        for i, blob in enumerate(top):
            blob.reshape(self.shapes[0] if len(self.shapes) == 1 else self.shapes[i])

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass
