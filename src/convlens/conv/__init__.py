"""The convolution itself, in NumPy only.

* :mod:`~convlens.conv.ops`: reference ``conv2d`` (cross-correlation or true
  convolution), ``conv_transpose2d``, ``max_pool2d`` and ``avg_pool2d`` with PyTorch's
  parameters and semantics;
* :mod:`~convlens.conv.arithmetic`: output sizes and receptive fields;
* :mod:`~convlens.conv.kernels`: classic hand-made kernels and :func:`apply`;
* :mod:`~convlens.conv.explain`: how one output value is made, step by step.

This package imports NumPy and nothing else (no torch), so it can be read and used
on its own.
"""

from convlens.conv.arithmetic import (
    FieldTable,
    Geometry,
    LayerField,
    LayerSpec,
    output_size,
    parse_layer,
    parse_params,
    receptive_field_stack,
)
from convlens.conv.explain import Trace, explain, parse_kernel, parse_matrix, to_float_image
from convlens.conv.kernels import KERNELS, apply, filter_map, kernel, list_kernels
from convlens.conv.ops import avg_pool2d, conv2d, conv_transpose2d, max_pool2d, pad2d

__all__ = [
    "KERNELS",
    "FieldTable",
    "Geometry",
    "LayerField",
    "LayerSpec",
    "Trace",
    "apply",
    "avg_pool2d",
    "conv2d",
    "conv_transpose2d",
    "explain",
    "filter_map",
    "kernel",
    "list_kernels",
    "max_pool2d",
    "output_size",
    "pad2d",
    "parse_kernel",
    "parse_layer",
    "parse_matrix",
    "parse_params",
    "receptive_field_stack",
    "to_float_image",
]
