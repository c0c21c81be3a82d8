"""Caffe text prototxt: parsing nets and solvers, phase filtering, solver nets.

Follows Caffe's own readers: ``ReadNetParamsFromTextFileOrDie`` (parse, then
upgrade: see :mod:`.upgrade`), ``Net::FilterNet`` / ``Net::StateMeetsRule``
(include / exclude rules) and ``Solver::InitTrainNet`` / ``InitTestNets`` (which
nets a solver trains and tests, and in which state).
"""

import collections
import os
import pathlib
import re

from google.protobuf import text_format

from ..errors import NetError, PrototxtError, SolverError
from . import caffe_pb2
from .atomic import write_atomically
from .upgrade import upgrade_legacy_inputs, upgrade_net, upgrade_solver_type

__all__ = [
    "parse_net", "read_net", "parse_solver", "read_solver", "format_prototxt",
    "write_prototxt",
    "filter_net", "state_meets_rule",
    # Re-exported from .upgrade, where they live, for callers that use this module alone.
    "upgrade_net", "upgrade_legacy_inputs", "upgrade_solver_type",
    "net_for_phase", "solver_net_paths", "solver_nets", "SolverNetPaths", "SolverNets",
    "TRAIN", "TEST",
]

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

_POSITION = re.compile(r"^\d+:\d+ : ")
_NO_FIELD = re.compile(r'^Message type "(?:caffe\.)?([\w.]+)" has no field named "(\w+)"\.?$')
_REPEATED = re.compile(
    r'^Message type "(?:caffe\.)?([\w.]+)" should not have multiple "(\w+)" fields\.?$')
_NO_ENUM = re.compile(r'^Enum type "(?:caffe\.)?([\w.]+)" has no value named (\S+?)\.?$')


def _clean_message(message, source_line):
    """Turn a text_format.ParseError message into a short lower-case phrase."""
    message = _POSITION.sub("", message)
    # text_format quotes the offending source line before the actual complaint.
    if source_line is not None and message.startswith(f"'{source_line}': "):
        message = message[len(source_line) + 4:]
    elif message.startswith("'"):
        message = re.sub(r"^'.*?': ", "", message, count=1)
    if match := _NO_FIELD.match(message):
        kind, field = match.groups()
        hint = ""
        if kind == "V1LayerParameter" and field == "layer":
            hint = " (V0 net format: upgrade it with Caffe's upgrade_net_proto_text)"
        return f'unknown field "{field}" in {kind}{hint}'
    if match := _REPEATED.match(message):
        kind, field = match.groups()
        return f'field "{field}" given more than once in {kind}'
    if match := _NO_ENUM.match(message):
        kind, value = match.groups()
        return f"unknown value {value} for {kind}"
    message = message.rstrip(".")
    return message[:1].lower() + message[1:]


def _parse(text, message, path):
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        line, column = error.GetLine(), error.GetColumn()
        lines = text.splitlines()
        source_line = lines[line - 1] if line is not None and 0 < line <= len(lines) else None
        raise PrototxtError(_clean_message(str(error), source_line),
                            path=path, line=line, column=column) from None
    if not message.IsInitialized():
        missing = ", ".join(message.FindInitializationErrors())
        raise PrototxtError(f"missing required field {missing}", path=path)
    return message


def _read_text(path):
    try:
        return pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PrototxtError(f"cannot read file: {error.strerror or error}",
                            path=path) from None
    except UnicodeDecodeError:
        raise PrototxtError("not a text file (invalid UTF-8)", path=path) from None


def parse_net(text, path=None):
    """Parse net prototxt ``text`` into a ``NetParameter``, as written (no upgrade).

    ``path`` only labels errors. Raises :class:`PrototxtError` with line and column.
    """
    return _parse(text, caffe_pb2.NetParameter(), path)


def read_net(path):
    """Read a net prototxt file into a ``NetParameter``, as written (no upgrade)."""
    return parse_net(_read_text(path), path)


def parse_solver(text, path=None, *, upgrade=True):
    """Parse solver prototxt ``text`` into a ``SolverParameter``.

    With ``upgrade`` the deprecated ``solver_type`` enum becomes the ``type``
    string, as Caffe's ``ReadSolverParamsFromTextFileOrDie`` does.
    """
    solver = _parse(text, caffe_pb2.SolverParameter(), path)
    if upgrade:
        upgrade_solver_type(solver, path=path)
    return solver


def read_solver(path, *, upgrade=True):
    """Read a solver prototxt file into a ``SolverParameter`` (see :func:`parse_solver`)."""
    return parse_solver(_read_text(path), path, upgrade=upgrade)


def format_prototxt(message):
    """A net, solver or any Caffe message as prototxt text (Caffe's TextFormat::Print)."""
    return text_format.MessageToString(message)


def write_prototxt(path, message):
    """Write ``message`` to ``path`` as prototxt text, atomically."""
    write_atomically(path, format_prototxt(message).encode("utf-8"),
                     lambda text: PrototxtError(text, path=path))


def _phase(phase):
    if isinstance(phase, str):
        try:
            return caffe_pb2.Phase.Value(phase.upper())
        except ValueError:
            raise ValueError(f"Phase must be TRAIN or TEST, not {phase!r}") from None
    if phase not in (TRAIN, TEST):
        raise ValueError(f"Phase must be TRAIN or TEST, not {phase!r}")
    return int(phase)


def state_meets_rule(state, rule):
    """Caffe's ``Net::StateMeetsRule``: does ``NetState`` meet ``NetStateRule``?"""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    # The state must hold ALL of the rule's stages and NONE of its not_stages.
    stages = set(state.stage)
    if not all(stage in stages for stage in rule.stage):
        return False
    if any(stage in stages for stage in rule.not_stage):
        return False
    return True


def filter_net(net, phase, stages=(), level=0):
    """Caffe's ``Net::FilterNet``: the layers of ``net`` that run in a state.

    The state is the net's own ``state`` with ``phase`` and ``level`` replacing
    its phase and level and ``stages`` added to its stages, exactly as Caffe's
    ``Net(file, phase, level, stages)`` constructor does; ``phase=None`` or
    ``level=None`` keeps the file's value. A layer with include rules is kept
    if the state meets any of them; one with exclude rules is dropped if it
    meets any; one with both is a :class:`NetError`. Returns a new
    ``NetParameter`` whose ``state`` is the state used.
    """
    state = caffe_pb2.NetState()
    state.CopyFrom(net.state)
    if phase is not None:
        state.phase = _phase(phase)
    if isinstance(stages, str):
        stages = (stages,)
    state.stage.extend(stages)
    if level is not None:
        state.level = level
    return _filter(net, state)


def _filter(net, state):
    filtered = caffe_pb2.NetParameter()
    filtered.CopyFrom(net)
    filtered.ClearField("layer")
    filtered.state.CopyFrom(state)
    for layer in net.layer:
        if layer.include and layer.exclude:
            raise NetError("specify either include rules or exclude rules, not both",
                           layer=layer.name)
        if layer.include:
            keep = any(state_meets_rule(state, rule) for rule in layer.include)
        else:
            keep = not any(state_meets_rule(state, rule) for rule in layer.exclude)
        if keep:
            filtered.layer.add().CopyFrom(layer)
    return filtered


def _load_net(path_or_param):
    if isinstance(path_or_param, caffe_pb2.NetParameter):
        net = caffe_pb2.NetParameter()
        net.CopyFrom(path_or_param)
        return net
    if isinstance(path_or_param, (str, os.PathLike)):
        return read_net(path_or_param)
    raise TypeError(f"Expected a path or a NetParameter, not {path_or_param!r}")


def net_for_phase(path_or_param, phase, stages=(), level=0):
    """Read (if a path), upgrade (:func:`upgrade_net`) and filter for a state, in one call.

    ``path_or_param`` is not modified. See :func:`filter_net` for the state.
    """
    net = upgrade_net(_load_net(path_or_param))
    return filter_net(net, phase, stages, level)


SolverNetPaths = collections.namedtuple("SolverNetPaths", "net train_net test_net")
SolverNetPaths.__doc__ = """Resolved net files of a solver: ``net`` and ``train_net``
are a path or None, ``test_net`` a list of paths."""

SolverNets = collections.namedtuple("SolverNets", "train test")
SolverNets.__doc__ = """The nets a solver runs: ``train`` is one filtered
``NetParameter``, ``test`` a list, one per test net instance."""


def _resolve(name, solver_path, field):
    candidate = pathlib.Path(name)
    if candidate.is_absolute() or candidate.exists() or solver_path is None:
        return candidate
    solver_dir = pathlib.Path(solver_path).parent
    for fallback in (solver_dir / candidate, solver_dir / candidate.name):
        if fallback.exists():
            return fallback
    raise SolverError(f'{solver_path}: {field} "{name}" not found (looked in the working '
                      f"directory and in {solver_dir})")


def solver_net_paths(solver, solver_path=None):
    """Resolve a solver's ``net``, ``train_net`` and ``test_net`` file names.

    Caffe opens them relative to the working directory, and so does this, first.
    A name not found there is tried relative to the solver file's directory,
    then as its base name in that directory (Caffe's stock solvers name nets
    from the Caffe root, e.g. ``examples/mnist/lenet_train_test.prototxt``,
    while a copied solver usually sits beside its net). Without ``solver_path``
    names are returned unresolved; with it a name found nowhere is a
    :class:`SolverError`.
    """
    def one(field):
        if not solver.HasField(field):
            return None
        return _resolve(getattr(solver, field), solver_path, field)

    return SolverNetPaths(
        net=one("net"),
        train_net=one("train_net"),
        test_net=[_resolve(name, solver_path, "test_net") for name in solver.test_net])


def _solver_error(solver_path, message):
    where = f"{solver_path}: " if solver_path is not None else ""
    return SolverError(where + message)


def _state(default_phase, *states):
    # Caffe starts from the solver's default phase and MergeFrom()s the net's
    # own state, then the solver's train_state / test_state (highest precedence).
    state = caffe_pb2.NetState(phase=default_phase)
    for more in states:
        state.MergeFrom(more)
    return state


def solver_nets(solver, solver_path=None):
    """Caffe's ``Solver::InitTrainNet`` and ``InitTestNets``: the nets a solver runs.

    Loads the train net and every test net instance from the solver's
    ``train_net_param`` / ``train_net`` / ``net_param`` / ``net`` and
    ``test_net_param`` / ``test_net`` fields (files resolved by
    :func:`solver_net_paths`), upgrades them (:func:`upgrade_net`) and filters
    each for its state: phase TRAIN or TEST, merged with the net's own state, then with
    ``train_state`` / ``test_state[i]``. Inconsistent solvers raise
    :class:`SolverError` with Caffe's message.
    """
    paths = solver_net_paths(solver, solver_path)
    train_fields = [f for f in ("net", "net_param", "train_net", "train_net_param")
                    if solver.HasField(f)]
    if len(train_fields) != 1:
        raise _solver_error(solver_path, "a solver must specify exactly one train net using "
                            "one of net, net_param, train_net, train_net_param, not "
                            f"{len(train_fields)}")
    source = {"net": paths.net, "net_param": solver.net_param,
              "train_net": paths.train_net, "train_net_param": solver.train_net_param}
    train = upgrade_net(_load_net(source[train_fields[0]]))
    train = _filter(train, _state(TRAIN, train.state, solver.train_state))

    has_generic = solver.HasField("net") or solver.HasField("net_param")
    specific = ([_load_net(p) for p in solver.test_net_param]
                + [_load_net(p) for p in paths.test_net])
    if has_generic and len(solver.test_iter) < len(specific) or \
            not has_generic and len(solver.test_iter) != len(specific):
        raise _solver_error(solver_path, "test_iter must be specified for each test network "
                            f"({len(specific)} test net(s), {len(solver.test_iter)} test_iter)")
    generic = source["net" if solver.HasField("net") else "net_param"] if has_generic else None
    nets = specific + [_load_net(generic) for _ in range(len(solver.test_iter) - len(specific))]
    if solver.test_state and len(solver.test_state) != len(nets):
        raise _solver_error(solver_path, "test_state must be unspecified or specified once "
                            f"per test net ({len(nets)} test net(s), "
                            f"{len(solver.test_state)} test_state)")
    if nets and solver.test_interval <= 0:
        raise _solver_error(solver_path, f"test_interval must be positive when there are "
                            f"test nets, not {solver.test_interval}")
    test = []
    for i, net in enumerate(nets):
        upgrade_net(net)
        extra = (solver.test_state[i],) if solver.test_state else ()
        test.append(_filter(net, _state(TEST, net.state, *extra)))
    return SolverNets(train=train, test=test)
