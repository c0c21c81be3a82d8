"""The ``fecaffe-hw`` command: one entry point, a subcommand per job."""

import argparse
import sys

from .errors import FecaffeError

__all__ = ["main"]

_COMMANDS = {}


def command(name, help, epilog=None):
    """Register ``configure(parser)``; it must set ``parser.set_defaults(run=...)``."""
    def decorate(configure):
        _COMMANDS[name] = (help, epilog, configure)
        return configure
    return decorate


def build_parser():
    from . import commands  # noqa: F401 -- registers the subcommands
    parser = argparse.ArgumentParser(
        prog="fecaffe-hw",
        description="Caffe networks to FPGA training accelerators.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'fecaffe-hw COMMAND --help' for a command's options and examples.")
    parser.add_argument("--debug", action="store_true",
                        help="show a full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help, epilog, configure) in _COMMANDS.items():
        sub = subparsers.add_parser(name, help=help, description=help, epilog=epilog,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show a full traceback on errors")
        configure(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except FecaffeError as error:
        if args.debug:
            raise
        print(f"fecaffe-hw {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        # Files that are missing or unreadable, values that are out of range:
        # still one line, still the user's to fix.
        if args.debug:
            raise
        print(f"fecaffe-hw {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fecaffe-hw {args.command}: interrupted", file=sys.stderr)
        return 130
