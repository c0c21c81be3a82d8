"""Exceptions a user sees.

Every error that reaches the command line is a :class:`FecaffeError`: its
``str()`` is one line that names the file, line or layer at fault, and the CLI
prints it and exits with status 2. Python users catch the specific classes.
"""

__all__ = [
    "FecaffeError", "PrototxtError", "NetError", "WeightsError", "SolverError",
    "DataError", "PlanError", "LinkError",
]


class FecaffeError(Exception):
    """Base class; ``str(error)`` is a complete one-line message."""


class PrototxtError(FecaffeError):
    """A text-format file that does not parse, with its position."""

    def __init__(self, message, *, path=None, line=None, column=None):
        self.path, self.line, self.column, self.message = path, line, column, message
        where = str(path) if path is not None else "<string>"
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {message}")


class NetError(FecaffeError):
    """A network that parses but cannot be built: names the layer at fault."""

    def __init__(self, message, *, layer=None):
        self.layer, self.message = layer, message
        super().__init__(f'layer "{layer}": {message}' if layer is not None else message)


class WeightsError(FecaffeError):
    """A .caffemodel or .solverstate that does not match the network."""


class SolverError(FecaffeError):
    """A solver definition that cannot be run."""


class DataError(FecaffeError):
    """A data source that is missing or malformed."""


class PlanError(FecaffeError):
    """A network the chosen board cannot run: names the layer and the limit."""

    def __init__(self, message, *, layer=None):
        self.layer, self.message = layer, message
        super().__init__(f'layer "{layer}": {message}' if layer is not None else message)


class LinkError(FecaffeError):
    """A host link that failed: corrupt or lost bytes past the retries, a
    timeout, a device that vanished or is not the expected bitstream."""
