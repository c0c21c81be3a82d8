"""fecaffe-hw: Caffe networks to FPGA training accelerators."""

__version__ = "0.1.0"

__all__ = ["Net", "SGDSolver", "TRAIN", "TEST", "Blob", "__version__"]


def __getattr__(name):
    # Imported on first use, so `import fecaffe_hw` (and the runtime, which
    # must not need NumPy-heavy imports at start-up) stays cheap.
    if name == "Net":
        from .reference.net import Net
        return Net
    if name == "SGDSolver":
        from .reference.solver import SGDSolver
        return SGDSolver
    if name in ("TRAIN", "TEST"):
        from .reference import layer
        return getattr(layer, name)
    if name == "Blob":
        from .reference.blob import Blob
        return Blob
    raise AttributeError(f"module 'fecaffe_hw' has no attribute {name!r}")
