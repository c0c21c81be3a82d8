"""The compiler: a Caffe network and a board in, a hardware Plan and a command Schedule out."""

from .boards import BOARDS, Board, ExternalMemory, board
from .formats import calibrate, format_for
from .plan import Plan, Region, plan_network
from .schedule import Command, Schedule, build_schedule

__all__ = ["BOARDS", "Board", "ExternalMemory", "board", "calibrate", "format_for", "Plan",
           "Region", "plan_network", "Command", "Schedule", "build_schedule"]
