"""RTL simulation backends behind one interface: Amaranth's pysim and CXXRTL."""

from .backend import SimBackend, SimBuildError, SimTimeout, cxx_compiler, open_backend

__all__ = ["SimBackend", "SimBuildError", "SimTimeout", "cxx_compiler", "open_backend"]
