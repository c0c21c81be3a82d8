"""fecaffe-hw: Caffe networks to FPGA training accelerators."""

__version__ = "0.1.0"
