"""The float32 reference layers; importing this package registers every type."""

from . import (  # noqa: F401 -- imported for their @register side effect
    accuracy,
    activation,
    concat,
    convolution,
    data,
    dropout,
    eltwise,
    flatten,
    inner_product,
    input,
    lrn,
    pooling,
    softmax,
    split,
)
