"""The layer interface of the float reference, and the registry of types.

A layer follows Caffe's ``Layer`` contract so that Caffe users can read it:

* ``setup(bottom, top)`` checks parameters against the bottom shapes and
  creates the learnable blobs (``self.blobs``) with the fillers;
* ``reshape(bottom, top)`` sets the top shapes from the bottom shapes;
* ``forward(bottom, top)`` writes ``top[i].data``;
* ``backward(top, propagate_down, bottom)`` *adds* parameter gradients to
  ``self.blobs[i].diff`` (Caffe accumulates them over ``iter_size``) and
  *writes* ``bottom[i].diff`` where ``propagate_down[i]``.

All arithmetic is float32, as in Caffe's CPU mode.
"""

from ..errors import NetError

__all__ = ["Layer", "register", "layer_class", "registered_types", "TRAIN", "TEST"]

# Caffe's Phase enum values.
TRAIN = 0
TEST = 1

_REGISTRY = {}


def register(type_name):
    """Class decorator: make a layer class the implementation of a Caffe type."""
    def decorate(cls):
        if type_name in _REGISTRY:
            raise ValueError(f"Layer type {type_name!r} is registered twice")
        cls.type = type_name
        _REGISTRY[type_name] = cls
        return cls
    return decorate


def layer_class(type_name, *, layer_name=None):
    """The class implementing Caffe type ``type_name``; :class:`NetError` if none."""
    from . import layers  # noqa: F401 -- importing the package registers every type
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise NetError(f"unknown layer type {type_name!r} (supported: "
                       f"{', '.join(sorted(_REGISTRY))})", layer=layer_name) from None


def registered_types():
    from . import layers  # noqa: F401
    return sorted(_REGISTRY)


class Layer:
    """Base class. ``param`` is the layer's ``caffe_pb2.LayerParameter``.

    ``rng`` is a ``numpy.random.Generator`` shared by the net (fillers,
    dropout masks), so a seeded net is reproducible.
    """

    type = None
    #: Number of bottoms and tops accepted: an int, or ``(min, max)`` with
    #: ``max=None`` for unbounded. Checked by :meth:`check_blob_counts`.
    num_bottoms = 1
    num_tops = 1
    #: Loss layers have a default ``loss_weight`` of 1 on their first top.
    is_loss = False

    def __init__(self, param, phase, rng):
        self.param = param
        self.name = param.name
        self.phase = phase
        self.rng = rng
        self.blobs = []

    def error(self, message):
        """A :class:`NetError` naming this layer, to be raised by the caller."""
        return NetError(message, layer=self.name)

    def check_blob_counts(self, n_bottom, n_top):
        for what, n, allowed in (("bottom", n_bottom, self.num_bottoms),
                                 ("top", n_top, self.num_tops)):
            lo, hi = (allowed, allowed) if isinstance(allowed, int) else allowed
            if n < lo or (hi is not None and n > hi):
                want = str(lo) if lo == hi else (f"at least {lo}" if hi is None
                                                 else f"{lo} to {hi}")
                raise self.error(f"{self.type} takes {want} {what} blob(s), got {n}")

    def setup(self, bottom, top):
        """Validate parameters and create ``self.blobs``. Default: nothing."""

    def reshape(self, bottom, top):
        raise NotImplementedError

    def forward(self, bottom, top):
        raise NotImplementedError

    def backward(self, top, propagate_down, bottom):
        raise NotImplementedError

    @property
    def macs(self):
        """Multiply-accumulates of one forward pass at the current shapes."""
        return 0
