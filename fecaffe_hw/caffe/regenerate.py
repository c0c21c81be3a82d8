"""Regenerate ``caffe_pb2.py`` from ``caffe.proto``: ``python -m fecaffe_hw.caffe.regenerate``.

Uses grpcio-tools' bundled protoc, so no system protoc is needed. The generated
module checks the protobuf runtime at import: code from protoc 35.x needs
protobuf >= 7.35 and < 8 (the runtime accepts gencode of its own major version
that is not newer than itself).
"""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent


def main():
    from grpc_tools import protoc

    args = ["protoc", f"-I{HERE}", f"--python_out={HERE}", str(HERE / "caffe.proto")]
    status = protoc.main(args)
    if status != 0:
        print(f"protoc failed with status {status}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
