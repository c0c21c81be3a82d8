"""glog-style log lines, so Caffe's ``tools/extra/parse_log.py`` reads our logs.

A record becomes ``I1125 18:05:57.123456  1234 solver.py:218] message``:
severity letter, month and day, wall time with microseconds, thread id
(the pid, right-aligned in 5 columns after a space, as glog), source file and line.
"""

import logging
import os
import sys
import time

__all__ = ["GlogFormatter", "install"]

_SEVERITY = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W",
             logging.ERROR: "E", logging.CRITICAL: "F"}


class GlogFormatter(logging.Formatter):
    """Formats a :class:`logging.LogRecord` as one glog line per message line."""

    def format(self, record):
        letter = _SEVERITY.get(record.levelno, "I")
        seconds = int(record.created)
        micros = int(round((record.created - seconds) * 1e6))
        if micros == 1_000_000:
            seconds, micros = seconds + 1, 0
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(seconds))
        # glog prints the OS thread id, which for the main thread is the pid.
        tid = (record.process or os.getpid()) % 100000
        prefix = f"{letter}{stamp}.{micros:06d} {tid:5d} {record.filename}:{record.lineno}] "
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return "\n".join(prefix + line for line in message.split("\n"))


def install(logger="fecaffe_hw", *, stream=None, level=logging.INFO):
    """Attach a glog-formatted handler writing to ``stream`` (stderr, as glog).

    Returns the handler so the caller can remove it. Used by the CLI; library
    code only logs.
    """
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(GlogFormatter())
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    return handler
