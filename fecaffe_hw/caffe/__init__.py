"""Caffe's file formats: the protobuf schema, text prototxt and binary weights.

``caffe_pb2`` is generated from ``caffe.proto`` (Caffe's schema, the subset used
here; regenerate with ``python -m fecaffe_hw.caffe.regenerate``).
"""

from . import caffe_pb2
from .prototxt import (
    TEST, TRAIN, SolverNetPaths, SolverNets, filter_net, format_prototxt, net_for_phase,
    parse_net, parse_solver, read_net, read_solver, solver_net_paths, solver_nets, state_meets_rule,
    write_prototxt,
)
from .upgrade import (
    upgrade_batch_norm, upgrade_data_transformation, upgrade_legacy_inputs, upgrade_net,
    upgrade_solver_type, upgrade_v1_net,
)
from .weights import (
    array_to_blob, blob_shape, blob_to_array, layer_blobs, parse_caffemodel,
    parse_solverstate, read_caffemodel, read_solverstate, write_caffemodel,
    write_solverstate,
)

__all__ = [
    "caffe_pb2", "TRAIN", "TEST",
    "parse_net", "read_net", "parse_solver", "read_solver", "format_prototxt", "write_prototxt",
    "upgrade_net", "upgrade_v1_net", "upgrade_data_transformation", "upgrade_legacy_inputs",
    "upgrade_batch_norm", "upgrade_solver_type", "filter_net", "state_meets_rule",
    "net_for_phase", "solver_net_paths", "solver_nets", "SolverNetPaths", "SolverNets",
    "blob_shape", "blob_to_array", "array_to_blob", "layer_blobs",
    "read_caffemodel", "write_caffemodel", "parse_caffemodel",
    "read_solverstate", "write_solverstate", "parse_solverstate",
]
