"""The Vivado build tree for the Arty A7 (and other Xilinx boards with a DDR3 MIG).

:func:`write_vivado_tree` writes, into one directory:

* ``fecaffe_top.v``: the board top level (:class:`~fecaffe_hw.build.top.BoardTop`)
  from the amaranth-boards platform, with the MIG as a black box ``mig``;
* ``fecaffe_top.xdc``: the platform's constraints: clock, reset, UART and
  every DDR3L pin (location, IOSTANDARD, slew, termination);
* ``mig.prj`` and ``mig.tcl``: the MIG project for the Arty's DDR3L
  (MT41K128M16JT-125; parameters in docs/boards.md) and the script that
  creates, generates and synthesises the IP from it;
* ``build.tcl``: create the project, read the sources, ``source mig.tcl``,
  ``synth_design``, ``opt_design``, ``place_design``, ``route_design``,
  ``write_bitstream`` (amaranth's Vivado flow, reports included);
* ``build.sh``: ``vivado -mode batch -source build.tcl``.

Vivado is not needed to write the tree; :func:`check_tcl` and
:func:`constrained_ports` check it with ``tclsh`` and
:func:`mig_blackbox_script` gives yosys the MIG as a black box.
"""

import dataclasses
import pathlib
import re
import shutil
import subprocess
import textwrap

from ..errors import PlanError
from .tools import BuildError
from .top import MIG_DDR3_PORTS, MIG_MODULE, BoardTop

__all__ = ["VivadoTree", "write_vivado_tree", "mig_project", "check_tcl", "constrained_ports",
           "top_ports", "mig_blackbox_script", "TOP_NAME", "MIG_TIMING"]

TOP_NAME = "fecaffe_top"

#: DDR3L timing in ns for MT41K128M16JT-125 (Micron 2Gb DDR3L data sheet, speed
#: bin -125 run at tCK = 3 ns, i.e. DDR3-667; x16 has a 2 KB page).
MIG_TIMING = {"trcd": 13.75, "trp": 13.75, "tras": 35, "trfc": 160, "trefi": 7.8,
              "tfaw": 45, "trrd": 7.5, "twtr": 7.5, "trtp": 7.5, "tcke": 5}

# Memory clock period (ps), CAS and CAS write latency at that clock (DDR3-667: CL 5, CWL 5).
_TCK_PS, _CL, _CWL = 3000, 5, 5


@dataclasses.dataclass(frozen=True)
class VivadoTree:
    """A written Vivado build tree: ``files`` (paths), ``command`` (argv run in ``root``)."""
    root: pathlib.Path
    files: list
    command: list
    top: str
    clk_mhz: float


def write_vivado_tree(plan, out_dir, *, board=None, baud=None):
    """Write the Vivado build tree for ``plan`` on its Xilinx board; return a :class:`VivadoTree`."""
    from ..compiler import board as board_info
    info = board_info(plan.board["name"] if board is None else board)
    if info.name != plan.board["name"]:
        raise PlanError(f"the plan is for board {plan.board['name']!r}, not {info.name!r}")
    if info.family != "xilinx7":
        raise PlanError(f"board {info.name!r} is {info.family}: use build_ecp5 for ECP5 boards")
    if info.memory is None or info.memory.kind != "DDR3L":
        raise PlanError(f"board {info.name!r}: the Vivado tree has a MIG for DDR3L only "
                        f"(this board has {info.memory.kind if info.memory else 'no DRAM'})")
    root = pathlib.Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    top = BoardTop(plan, baud=baud)
    platform = info.platform_class()(toolchain="Vivado")
    build_plan = platform.build(top, name=TOP_NAME, do_build=False,
                                script_after_read="source mig.tcl")
    written = {}

    def write(name, text):
        path = root / name
        path.write_text(text)
        written[name] = path

    write(f"{TOP_NAME}.v", _text(build_plan.files[f"{TOP_NAME}.v"]))
    write(f"{TOP_NAME}.xdc", _text(build_plan.files[f"{TOP_NAME}.xdc"]))
    soc_mem = top.soc.signature.members["mem"].signature
    write("mig.prj", mig_project(platform, part=platform._part, addr_width=soc_mem.addr_width,
                                 data_width=soc_mem.data_width, id_width=soc_mem.id_width))
    write("mig.tcl", _MIG_TCL)
    write("build.tcl", "# Run from this directory: vivado -mode batch -source build.tcl\n"
                       "cd [file dirname [file normalize [info script]]]\n"
          + _text(build_plan.files[f"{TOP_NAME}.tcl"]))
    write("build.sh", "#!/bin/sh\n# Vivado batch build of the fecaffe-hw accelerator.\nset -e\n"
                      'cd "$(dirname "$0")"\nexec vivado -mode batch -log build.log '
                      "-source build.tcl\n")
    written["build.sh"].chmod(0o755)
    write("mig_ports.txt", "".join(f"{direction} {name}\n"
                                   for name, direction in sorted(top.mig_ports.items())))
    return VivadoTree(root=root, files=sorted(written.values()),
                      command=["vivado", "-mode", "batch", "-log", "build.log",
                               "-source", "build.tcl"],
                      top=TOP_NAME, clk_mhz=top.clk_freq / 1e6)


def _text(contents):
    return contents.decode() if isinstance(contents, bytes) else contents


_MIG_TCL = textwrap.dedent("""\
    # Creates the MIG (module "mig") for the board's DDR3L from mig.prj, then
    # generates and synthesises it so synth_design sees a netlist, not a black box.
    set here [file dirname [file normalize [info script]]]
    set ipdir [file join $here ip]
    file mkdir $ipdir
    create_ip -name mig_7series -vendor xilinx.com -library ip -module_name mig -dir $ipdir
    file copy -force [file join $here mig.prj] [file join $ipdir mig mig.prj]
    set_property -dict [list \\
        CONFIG.XML_INPUT_FILE {mig.prj} \\
        CONFIG.RESET_BOARD_INTERFACE {Custom} \\
        CONFIG.MIG_DONT_TOUCH_PARAM {Custom} \\
        CONFIG.BOARD_MIG_PARAM {Custom}] [get_ips mig]
    generate_target {instantiation_template synthesis} [get_ips mig]
    synth_ip [get_ips mig]
    """)


def mig_project(platform, *, part, addr_width, data_width, id_width):
    """MIG's XML project (``mig.prj``) for the platform's ``ddr3`` resource.

    Pins come from amaranth-boards' resource (one source of truth with the
    XDC); timing from :data:`MIG_TIMING`; AXI widths from the SoC's master.
    """
    resource = platform.lookup("ddr3", 0)
    subsignals = {sub.name: sub for sub in resource.ios}
    pins = []
    for port, (name, half) in MIG_DDR3_PORTS.items():
        sub = subsignals[name]
        io = sub.ios[0]
        names = (io.p if half == "p" else io.n if half == "n" else io).names
        attrs = {**resource.attrs, **sub.attrs}
        for index, pad in enumerate(names):
            bus = f"[{index}]" if len(names) > 1 or port in (
                "ddr3_ck_p", "ddr3_ck_n", "ddr3_cke", "ddr3_cs_n", "ddr3_odt") else ""
            pins.append(f'      <Pin VCCAUX_IO="HIGH" IOSTANDARD="{attrs.get("IOSTANDARD", "")}" '
                        f'PADName="{pad}" SLEW="{attrs.get("SLEW", "")}" name="{port}{bus}" '
                        f'IN_TERM="{attrs.get("IN_TERM", "")}" />')
    device, package, speed = _split_part(part)
    timing = " ".join(f'{k}="{v:g}"' for k, v in MIG_TIMING.items())
    return _MIG_PRJ.format(
        target=f"{device}-{package}/{speed}", tck=_TCK_PS, cl=_CL, cwl=_CWL,
        input_mhz=f"{1e6 / (2 * _TCK_PS):.3f}", pins="\n".join(pins), timing=timing,
        addr_width=addr_width, data_width=data_width, id_width=max(id_width, 1),
        mem_bytes=1 << addr_width)


def _split_part(part):
    # "xc7a35ticsg324-1L" -> ("xc7a35ti", "csg324", "-1L")
    match = re.fullmatch(r"(xc7[a-z]\d+t?i?)([a-z]+\d+)(-\w+)", part)
    if not match:
        raise PlanError(f"cannot split Xilinx part name {part!r} for MIG")
    return match.groups()


_MIG_PRJ = """\
<?xml version='1.0' encoding='UTF-8'?>
<!-- MIG project for the Arty A7's DDR3L, written by fecaffe-hw. -->
<Project NoOfControllers="1">
  <ModuleName>mig</ModuleName>
  <dci_inouts_inputs>1</dci_inouts_inputs>
  <dci_inputs>1</dci_inputs>
  <Debug_En>OFF</Debug_En>
  <DataDepth_En>1024</DataDepth_En>
  <LowPower_En>ON</LowPower_En>
  <XADC_En>Enabled</XADC_En>
  <TargetFPGA>{target}</TargetFPGA>
  <Version>4.2</Version>
  <SystemClock>No Buffer</SystemClock>
  <ReferenceClock>No Buffer</ReferenceClock>
  <SysResetPolarity>ACTIVE LOW</SysResetPolarity>
  <BankSelectionFlag>FALSE</BankSelectionFlag>
  <InternalVref>1</InternalVref>
  <dci_hr_inouts_inputs>50 Ohms</dci_hr_inouts_inputs>
  <dci_cascade>0</dci_cascade>
  <Controller number="0">
    <MemoryDevice>DDR3_SDRAM/Components/MT41K128M16XX-15E</MemoryDevice>
    <TimePeriod>{tck}</TimePeriod>
    <VccAuxIO>1.8V</VccAuxIO>
    <PHYRatio>4:1</PHYRatio>
    <InputClkFreq>{input_mhz}</InputClkFreq>
    <UIExtraClocks>0</UIExtraClocks>
    <MMCM_VCO>666</MMCM_VCO>
    <DataWidth>16</DataWidth>
    <DeepMemory>1</DeepMemory>
    <DataMask>1</DataMask>
    <ECC>Disabled</ECC>
    <Ordering>Normal</Ordering>
    <BankMachineCnt>4</BankMachineCnt>
    <CustomPart>FALSE</CustomPart>
    <NewPartName></NewPartName>
    <RowAddress>14</RowAddress>
    <ColAddress>10</ColAddress>
    <BankAddress>3</BankAddress>
    <MemoryVoltage>1.35V</MemoryVoltage>
    <C0_MEM_SIZE>{mem_bytes}</C0_MEM_SIZE>
    <UserMemoryAddressMap>BANK_ROW_COLUMN</UserMemoryAddressMap>
    <PinSelection>
{pins}
    </PinSelection>
    <System_Control>
      <Pin PADName="No connect" Bank="Select Bank" name="sys_rst" />
      <Pin PADName="No connect" Bank="Select Bank" name="init_calib_complete" />
      <Pin PADName="No connect" Bank="Select Bank" name="tg_compare_error" />
    </System_Control>
    <TimingParameters>
      <Parameters {timing} />
    </TimingParameters>
    <mrBurstLength name="Burst Length">8 - Fixed</mrBurstLength>
    <mrBurstType name="Read Burst Type and Length">Sequential</mrBurstType>
    <mrCasLatency name="CAS Latency">{cl}</mrCasLatency>
    <mrMode name="Mode">Normal</mrMode>
    <mrDllReset name="DLL Reset">No</mrDllReset>
    <mrPdMode name="DLL control for precharge PD">Slow Exit</mrPdMode>
    <emrDllEnable name="DLL Enable">Enable</emrDllEnable>
    <emrOutputDriveStrength name="Output Driver Impedance Control">RZQ/6</emrOutputDriveStrength>
    <emrMirrorSelection name="Address Mirroring">Disable</emrMirrorSelection>
    <emrCSSelection name="Controller Chip Select Pin">Enable</emrCSSelection>
    <emrRTT name="RTT (nominal) - On Die Termination (ODT)">RZQ/6</emrRTT>
    <emrPosted name="Additive Latency (AL)">0</emrPosted>
    <emrOCD name="Write Leveling Enable">Disabled</emrOCD>
    <emrDQS name="TDQS enable">Enabled</emrDQS>
    <emrRDQS name="Qoff">Output Buffer Enabled</emrRDQS>
    <mr2PartialArraySelfRefresh name="Partial-Array Self Refresh">Full Array</mr2PartialArraySelfRefresh>
    <mr2CasWriteLatency name="CAS write latency">{cwl}</mr2CasWriteLatency>
    <mr2AutoSelfRefresh name="Auto Self Refresh">Enabled</mr2AutoSelfRefresh>
    <mr2SelfRefreshTempRange name="High Temparature Self Refresh Rate">Normal</mr2SelfRefreshTempRange>
    <mr2RTTWR name="RTT_WR - Dynamic On Die Termination (ODT)">Dynamic ODT off</mr2RTTWR>
    <PortInterface>AXI</PortInterface>
    <AXIParameters>
      <C0_C_RD_WR_ARB_ALGORITHM>RD_PRI_REG</C0_C_RD_WR_ARB_ALGORITHM>
      <C0_S_AXI_ADDR_WIDTH>{addr_width}</C0_S_AXI_ADDR_WIDTH>
      <C0_S_AXI_DATA_WIDTH>{data_width}</C0_S_AXI_DATA_WIDTH>
      <C0_S_AXI_ID_WIDTH>{id_width}</C0_S_AXI_ID_WIDTH>
      <C0_S_AXI_SUPPORTS_NARROW_BURST>0</C0_S_AXI_SUPPORTS_NARROW_BURST>
    </AXIParameters>
  </Controller>
</Project>
"""

# Runs a TCL file with every Vivado command stubbed (the `unknown` handler
# records it), so syntax errors, unbalanced braces and bad Tcl surface here.
# get_ports records the names it is asked for: the XDC check reads them back.
_TCL_CHECKER = r"""
set calls {}
set ports {}
proc unknown {args} { global calls; lappend calls [lindex $args 0]; return "" }
proc get_ports {args} { global ports; foreach p $args { lappend ports $p }; return $args }
proc set_property {args} {
    global calls located
    lappend calls set_property
    if {[lindex $args 0] in {LOC PACKAGE_PIN}} { foreach p [lindex $args 2] { lappend located $p } }
    return ""
}
set located {}
rename file tcl_file
proc file {sub args} {
    if {$sub in {mkdir copy delete rename}} { global calls; lappend calls "file $sub"; return "" }
    return [tcl_file $sub {*}$args]
}
cd [file dirname [lindex $argv 0]]
if {[catch {source [lindex $argv 0]} message]} {
    puts "TCLERROR $message"
    exit 1
}
foreach c [lsort -unique $calls] { puts "CALL $c" }
foreach p $ports { puts "PORT $p" }
foreach p $located { puts "LOCATED $p" }
"""


def check_tcl(path, *, tclsh="tclsh"):
    """Source ``path`` in ``tclsh`` with Vivado's commands stubbed.

    Returns ``(commands, ports)``: the Vivado commands it calls and the port
    names it passes to ``get_ports``. BuildError names the file on a Tcl error.
    """
    commands, ports, _located = _run_checker(path, tclsh)
    return commands, ports


def _run_checker(path, tclsh):
    path = pathlib.Path(path).resolve()
    if shutil.which(tclsh) is None:
        raise BuildError(f"{tclsh}: not found on PATH (needed to check {path.name})")
    done = subprocess.run([tclsh, "/dev/stdin", str(path)], input=_TCL_CHECKER, text=True,
                          capture_output=True)
    lines = done.stdout.splitlines()
    if done.returncode != 0:
        error = next((l[9:] for l in lines if l.startswith("TCLERROR ")), done.stderr.strip())
        raise BuildError(f"{path}: Tcl error: {error}")

    def tagged(tag):
        return [l[len(tag) + 1:] for l in lines if l.startswith(tag + " ")]
    return set(tagged("CALL")), tagged("PORT"), tagged("LOCATED")


def constrained_ports(xdc_path, *, tclsh="tclsh"):
    """Port bits the XDC gives a location (``LOC`` or ``PACKAGE_PIN``), as Verilog names.

    The XDC is sourced as Vivado does (it is Tcl), so escaping is Tcl's.
    """
    return set(_run_checker(xdc_path, tclsh)[2])


def top_ports(verilog_path, top=TOP_NAME):
    """Every bit of the top module's ports in ``verilog_path``, as ``name`` or ``name[i]``."""
    text = pathlib.Path(verilog_path).read_text()
    module = re.search(rf"module\s+\\?{re.escape(top)}\s*\((.*?)\);(.*?)endmodule", text, re.S)
    if module is None:
        raise BuildError(f"{verilog_path}: no module {top}")
    names = [n.strip().lstrip("\\") for n in module.group(1).split(",") if n.strip()]
    bits = []
    for name in names:
        decl = re.search(rf"(?:input|output|inout)\s+(?:wire\s+|reg\s+)?(\[(\d+):(\d+)\]\s*)?"
                         rf"\\?{re.escape(name)}\s*;", module.group(2))
        if decl is None:
            raise BuildError(f"{verilog_path}: port {name} of {top} has no declaration")
        if decl.group(1):
            high, low = int(decl.group(2)), int(decl.group(3))
            bits += [f"{name}[{i}]" for i in range(min(high, low), max(high, low) + 1)]
        else:
            bits.append(name)
    return bits


def mig_blackbox_script(tree):
    """A yosys command that makes ``mig`` a black box with its ports' directions."""
    directions = (tree.root / "mig_ports.txt").read_text().split()
    pairs = zip(directions[0::2], directions[1::2])
    return "hierarchy -generate " + MIG_MODULE + " " + " ".join(
        f"{d}:{name}" for d, name in pairs) + f"; hierarchy -top {tree.top}"
