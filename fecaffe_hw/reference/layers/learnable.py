"""The learnable blobs of the layers that multiply by a weight and add a bias."""

from ..blob import Blob
from ..fillers import fill

__all__ = ["weight_and_bias"]


def weight_and_bias(layer, param, weight_shape):
    """``[weight]`` or ``[weight, bias]`` filled from ``param``'s ``weight_filler``
    and ``bias_filler``, as Convolution and InnerProduct set them up.

    ``param`` is the layer's ``convolution_param`` / ``inner_product_param``
    (``num_output``, ``bias_term``). The weight is filled first, so the fillers
    draw from ``layer.rng`` in Caffe's order.
    """
    weight = Blob(weight_shape)
    weight.data[...] = fill(param.weight_filler, weight_shape, layer.rng, layer=layer.name)
    blobs = [weight]
    if param.bias_term:
        bias = Blob((param.num_output,))
        bias.data[...] = fill(param.bias_filler, (param.num_output,), layer.rng,
                              layer=layer.name)
        blobs.append(bias)
    return blobs
