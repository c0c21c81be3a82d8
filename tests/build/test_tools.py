"""run_tool: the one-line error names the tool's own error line, not a line
that merely mentions a signal called ``error``; no error line, no guess."""

import sys

import pytest

from fecaffe_hw.build.tools import BuildError, run_tool


def _fail_with(tmp_path, text):
    script = tmp_path / "tool.py"
    script.write_text(f"import sys\nsys.stdout.write({text!r})\nsys.exit(1)\n")
    with pytest.raises(BuildError) as caught:
        run_tool([sys.executable, str(script)], cwd=tmp_path, log=tmp_path / "tool.log")
    return str(caught.value)


def test_error_line_is_the_tools_own(tmp_path):
    message = _fail_with(tmp_path, "Adding SRST signal on csr (Q = error__overflow)\n"
                                   "ERROR: Can't open input file `missing.v' for reading\n"
                                   "Removed 3 unused cells (error_count)\n")
    assert "failed with status 1: ERROR: Can't open input file `missing.v'" in message
    assert str(tmp_path / "tool.log") in message


def test_no_error_line_names_only_status_and_log(tmp_path):
    message = _fail_with(tmp_path, "Adding SRST signal on csr (Q = error__overflow)\n")
    assert "failed with status 1 (see " in message
    assert "overflow" not in message
