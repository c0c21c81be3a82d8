"""Running the external build tools: one log file per tool, one-line errors."""

import os
import pathlib
import re
import shutil
import subprocess

from ..errors import FecaffeError

__all__ = ["BuildError", "tool_command", "run_tool"]


class BuildError(FecaffeError):
    """A board build that failed: names the tool and its log file."""


def tool_command(env_var, default):
    """The command for a tool: ``$env_var`` when set (as amaranth's toolchain reads it), else ``default``."""
    return os.environ.get(env_var) or default


def run_tool(argv, *, cwd, log, errors_from=None, timeout=None):
    """Run ``argv`` in ``cwd``, stdout and stderr into ``log``; BuildError on failure,
    quoting the last error line of ``errors_from`` (default ``log``)."""
    log = pathlib.Path(log)
    if shutil.which(argv[0]) is None:
        raise BuildError(f"{argv[0]}: not found on PATH (needed for {log.stem})")
    with open(log, "ab") as output:
        try:
            done = subprocess.run(argv, cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{argv[0]} did not finish in {timeout} s (see {log})") from None
    if done.returncode != 0:
        source = log if errors_from is None else pathlib.Path(errors_from)
        last = _last_error(source) if source.is_file() else ""
        raise BuildError(f"{argv[0]} failed with status {done.returncode}"
                         f"{': ' + last if last else ''} (see {source})")


# Yosys, nextpnr, ecppack and Vivado all start their error lines so; a
# signal or cell whose name merely contains "error" must not match.
_ERROR_LINE = re.compile(r"^\s*(ERROR|Error)\b")


def _last_error(log):
    lines = pathlib.Path(log).read_text(errors="replace").splitlines()
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line.strip()[:200]
    return ""
