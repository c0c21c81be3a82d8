"""The Vivado build trees: the Arty A7 (UART, DDR3L) and the Nitefury II (PCIe, DDR3).

:func:`write_vivado_tree` writes, into one directory, for the Arty:

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

For the Nitefury (``link="pcie"``, :class:`~fecaffe_hw.build.top.PcieBoardTop`)
the tree adds ``xdma.tcl`` (the XDMA IP, :data:`~fecaffe_hw.build.xdma.XDMA_CONFIG`),
``pcie.xdc`` (the board's GTP lane placement and the clock groups, read late
so it overrides the IP's defaults) and ``xdma_ports.txt``; its ``mig.prj`` is
for the board's DDR3-800 (:data:`NITEFURY_MIG`).

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
from .top import MIG_DDR3_PORTS, MIG_MODULE, NITEFURY_MIG_PORTS, BoardTop, PcieBoardTop

__all__ = ["VivadoTree", "write_vivado_tree", "mig_project", "check_tcl", "constrained_ports",
           "top_ports", "mig_blackbox_script", "blackbox_script", "pcie_xdc", "TOP_NAME",
           "MIG_TIMING", "NITEFURY_MIG_TIMING", "MigConfig", "ARTY_MIG", "NITEFURY_MIG"]

TOP_NAME = "fecaffe_top"

#: DDR3L timing in ns for MT41K128M16JT-125 (Micron 2Gb DDR3L data sheet, speed
#: bin -125 run at tCK = 3 ns, i.e. DDR3-667; x16 has a 2 KB page).
MIG_TIMING = {"trcd": 13.75, "trp": 13.75, "tras": 35, "trfc": 160, "trefi": 7.8,
              "tfaw": 45, "trrd": 7.5, "twtr": 7.5, "trtp": 7.5, "tcke": 5}

#: DDR3 timing in ns for MT41K256M16 (Micron 4Gb DDR3L data sheet, speed bin
#: -125, DDR3-1600 timings, run at tCK = 2.5 ns, i.e. DDR3-800; x16 has a 2 KB page).
NITEFURY_MIG_TIMING = {"trcd": 13.75, "trp": 13.75, "tras": 35, "trfc": 260, "trefi": 7.8,
                       "tfaw": 40, "trrd": 7.5, "twtr": 7.5, "trtp": 7.5, "tcke": 5}


@dataclasses.dataclass(frozen=True)
class MigConfig:
    """One board's MIG controller settings for ``mig.prj`` (docs/boards.md cites each)."""
    title: str
    memory_device: str      # MIG's part entry
    tck_ps: int             # memory clock period
    cl: int                 # CAS latency at tck
    cwl: int                # CAS write latency at tck
    timing: dict            # MIG_TIMING-style, ns (tREFI in us)
    voltage: str
    row_bits: int
    input_mhz: float        # MIG system clock
    mmcm_vco: int           # MHz
    system_clock: str       # "No Buffer" / "Differential"
    reference_clock: str    # "No Buffer" / "Use System Clock"
    internal_vref: bool
    drive: str              # output driver impedance
    rtt_nom: str
    chip_select: bool


ARTY_MIG = MigConfig(
    title="the Arty A7's DDR3L", memory_device="DDR3_SDRAM/Components/MT41K128M16XX-15E",
    tck_ps=3000, cl=5, cwl=5, timing=MIG_TIMING, voltage="1.35V", row_bits=14,
    input_mhz=1e6 / (2 * 3000), mmcm_vco=666, system_clock="No Buffer",
    reference_clock="No Buffer", internal_vref=True, drive="RZQ/6", rtt_nom="RZQ/6",
    chip_select=True)

NITEFURY_MIG = MigConfig(
    title="the Nitefury II's DDR3", memory_device="DDR3_SDRAM/Components/MT41K256M16XX-125",
    tck_ps=2500, cl=6, cwl=5, timing=NITEFURY_MIG_TIMING, voltage="1.5V", row_bits=15,
    input_mhz=200.0, mmcm_vco=800, system_clock="No Buffer",
    reference_clock="Use System Clock", internal_vref=False, drive="RZQ/7", rtt_nom="RZQ/4",
    chip_select=False)


@dataclasses.dataclass(frozen=True)
class VivadoTree:
    """A written Vivado build tree: ``files`` (paths), ``command`` (argv run in ``root``),
    ``top`` (module name), ``design`` (the top-level Elaboratable written)."""
    root: pathlib.Path
    files: list
    command: list
    top: str
    clk_mhz: float
    design: object = None


def write_vivado_tree(plan, out_dir, *, board=None, baud=None, link=None):
    """Write the Vivado build tree for ``plan`` on its Xilinx board; return a :class:`VivadoTree`.

    ``link`` is the host link (default the board's first: ``uart`` on the
    Arty, ``pcie`` on the Nitefury); ``baud`` applies to the UART only.
    """
    from ..compiler import board as board_info
    info = board_info(plan.board["name"] if board is None else board)
    if info.name != plan.board["name"]:
        raise PlanError(f"the plan is for board {plan.board['name']!r}, not {info.name!r}")
    if info.family != "xilinx7":
        raise PlanError(f"board {info.name!r} is {info.family}: use build_ecp5 for ECP5 boards")
    link = info.links[0] if link is None else link
    if link not in info.links:
        raise PlanError(f"board {info.name!r} has no {link} link "
                        f"(links: {', '.join(info.links)})")
    memory = info.memory.kind if info.memory else None
    if link == "pcie":
        if memory != "DDR3" or info.name != "nitefury":
            raise PlanError(f"board {info.name!r}: the PCIe tree is for the Nitefury II's "
                            f"XDMA and DDR3 (this board has {memory or 'no DRAM'})")
        from .nitefury import NitefuryPciePlatform
        return _write_tree(plan, out_dir, top=PcieBoardTop(plan),
                           platform=NitefuryPciePlatform(toolchain="Vivado"),
                           mig=NITEFURY_MIG, pins=NITEFURY_MIG_PORTS, pcie=True)
    if memory != "DDR3L":
        raise PlanError(f"board {info.name!r}: the Vivado tree has a MIG for DDR3L only "
                        f"(this board has {memory or 'no DRAM'})")
    return _write_tree(plan, out_dir, top=BoardTop(plan, baud=baud),
                       platform=info.platform_class()(toolchain="Vivado"),
                       mig=ARTY_MIG, pins=MIG_DDR3_PORTS, pcie=False)


def _write_tree(plan, out_dir, *, top, platform, mig, pins, pcie):
    from .xdma import xdma_tcl
    root = pathlib.Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    # The IP is created after the sources are read and before synthesis; the
    # PCIe constraints are read after the IP's own, so their LOCs win.
    after_read = "source mig.tcl"
    if pcie:
        after_read = ("source mig.tcl\nsource xdma.tcl\nread_xdc pcie.xdc\n"
                      "set_property PROCESSING_ORDER LATE [get_files pcie.xdc]")
    build_plan = platform.build(top, name=TOP_NAME, do_build=False,
                                script_after_read=after_read)
    written = {}

    def write(name, text):
        path = root / name
        path.write_text(text)
        written[name] = path

    write(f"{TOP_NAME}.v", _text(build_plan.files[f"{TOP_NAME}.v"]))
    write(f"{TOP_NAME}.xdc", _text(build_plan.files[f"{TOP_NAME}.xdc"]))
    soc_mem = top.soc.signature.members["mem"].signature
    write("mig.prj", mig_project(platform, part=platform._part, addr_width=soc_mem.addr_width,
                                 data_width=soc_mem.data_width, id_width=soc_mem.id_width,
                                 config=mig, pins=pins))
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
    if pcie:
        write("xdma.tcl", xdma_tcl())
        write("pcie.xdc", pcie_xdc())
        write("xdma_ports.txt", "".join(f"{direction} {name}\n" for name, (direction, _width)
                                        in sorted(top.xdma_ports.items())))
    return VivadoTree(root=root, files=sorted(written.values()),
                      command=["vivado", "-mode", "batch", "-log", "build.log",
                               "-source", "build.tcl"],
                      top=TOP_NAME, clk_mhz=top.clk_freq / 1e6, design=top)


def pcie_xdc():
    """``pcie.xdc``: the Nitefury's lane -> GTP channel placement, PCIe block and clock groups.

    XDMA's generated constraints place lane *i* on a default channel; the
    Nitefury's M.2 routing differs (RHS Research's fixed XDMA constraints), so
    these LOCs, read with PROCESSING_ORDER LATE, override them. Cells are found
    by their path inside the IP, whatever the hierarchy above.
    """
    from .nitefury import PCIE_LANE_CHANNELS
    from .xdma import XDMA_MODULE
    lines = ["# PCIe lane placement for the Nitefury II (see docs/boards.md), the PCIe",
             "# block, and the two asynchronous user clocks (XDMA axi_aclk, MIG ui_clk).",
             "# Read after the IP's own constraints (PROCESSING_ORDER LATE)."]
    for lane, channel in enumerate(PCIE_LANE_CHANNELS):
        # "?" matches the brackets of pipe_lane[n]: Vivado's =~ is a glob.
        lines.append(f"set_property LOC {channel} [get_cells -hier -filter {{NAME =~ "
                     f"\"*pipe_lane?{lane}?.gt_wrapper_i/gtp_channel.gtpe2_channel_i\"}}]")
    lines += [
        "set_property LOC GTPE2_COMMON_X0Y1 [get_cells -hier -filter "
        "{NAME =~ \"*pipe_lane?0?.pipe_quad.gt_common_enabled.gt_common_int.gt_common_i/"
        "qpll_wrapper_i/gtp_common.gtpe2_common_i\"}]",
        "set_property LOC PCIE_X0Y0 [get_cells -hier -filter "
        "{NAME =~ \"*pcie_top_i/pcie_7x_i/pcie_block_i\"}]",
        "# PERST# is resynchronised inside XDMA.",
        "set_false_path -from [get_ports pcie_x4_0__perst__io]",
        "# XdmaBridge crosses these with asynchronous FIFOs.",
        f"set_clock_groups -asynchronous -group [get_clocks -of_objects "
        f"[get_pins {XDMA_MODULE}/axi_aclk]] -group [get_clocks -of_objects "
        f"[get_pins {MIG_MODULE}/ui_clk]]",
    ]
    return "\n".join(lines) + "\n"


def _text(contents):
    return contents.decode() if isinstance(contents, bytes) else contents


_MIG_TCL = textwrap.dedent("""\
    # Creates the MIG (module "mig") for the board's DDR3 from mig.prj, then
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


def mig_project(platform, *, part, addr_width, data_width, id_width, config=ARTY_MIG,
                pins=MIG_DDR3_PORTS):
    """MIG's XML project (``mig.prj``) for the platform's ``ddr3`` resource.

    Pins come from the platform's resource (one source of truth with the
    XDC), ``pins`` says which MIG port each subsignal is; the controller
    settings from ``config`` (a :class:`MigConfig`); AXI widths from the
    SoC's master.
    """
    resource = platform.lookup("ddr3", 0)
    subsignals = {sub.name: sub for sub in resource.ios}
    pin_lines = []
    for port, (name, half) in pins.items():
        sub = subsignals[name]
        io = sub.ios[0]
        names = (io.p if half == "p" else io.n if half == "n" else io).names
        attrs = {**resource.attrs, **sub.attrs}
        for index, pad in enumerate(names):
            bus = f"[{index}]" if len(names) > 1 or port in (
                "ddr3_ck_p", "ddr3_ck_n", "ddr3_cke", "ddr3_cs_n", "ddr3_odt") else ""
            pin_lines.append(
                f'      <Pin VCCAUX_IO="HIGH" IOSTANDARD="{attrs.get("IOSTANDARD", "")}" '
                f'PADName="{pad}" SLEW="{attrs.get("SLEW", "")}" name="{port}{bus}" '
                f'IN_TERM="{attrs.get("IN_TERM", "")}" />')
    device, package, speed = _split_part(part)
    timing = " ".join(f'{k}="{v:g}"' for k, v in config.timing.items())
    return _MIG_PRJ.format(
        title=config.title, target=f"{device}-{package}/{speed}", tck=config.tck_ps,
        cl=config.cl, cwl=config.cwl, input_mhz=f"{config.input_mhz:.3f}",
        pins="\n".join(pin_lines), timing=timing, device=config.memory_device,
        vco=config.mmcm_vco, voltage=config.voltage, rows=config.row_bits,
        system_clock=config.system_clock, reference_clock=config.reference_clock,
        internal_vref=int(config.internal_vref), drive=config.drive, rtt=config.rtt_nom,
        cs="Enable" if config.chip_select else "Disable",
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
<!-- MIG project for {title}, written by fecaffe-hw. -->
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
  <SystemClock>{system_clock}</SystemClock>
  <ReferenceClock>{reference_clock}</ReferenceClock>
  <SysResetPolarity>ACTIVE LOW</SysResetPolarity>
  <BankSelectionFlag>FALSE</BankSelectionFlag>
  <InternalVref>{internal_vref}</InternalVref>
  <dci_hr_inouts_inputs>50 Ohms</dci_hr_inouts_inputs>
  <dci_cascade>0</dci_cascade>
  <Controller number="0">
    <MemoryDevice>{device}</MemoryDevice>
    <TimePeriod>{tck}</TimePeriod>
    <VccAuxIO>1.8V</VccAuxIO>
    <PHYRatio>4:1</PHYRatio>
    <InputClkFreq>{input_mhz}</InputClkFreq>
    <UIExtraClocks>0</UIExtraClocks>
    <MMCM_VCO>{vco}</MMCM_VCO>
    <DataWidth>16</DataWidth>
    <DeepMemory>1</DeepMemory>
    <DataMask>1</DataMask>
    <ECC>Disabled</ECC>
    <Ordering>Normal</Ordering>
    <BankMachineCnt>4</BankMachineCnt>
    <CustomPart>FALSE</CustomPart>
    <NewPartName></NewPartName>
    <RowAddress>{rows}</RowAddress>
    <ColAddress>10</ColAddress>
    <BankAddress>3</BankAddress>
    <MemoryVoltage>{voltage}</MemoryVoltage>
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
    <emrOutputDriveStrength name="Output Driver Impedance Control">{drive}</emrOutputDriveStrength>
    <emrMirrorSelection name="Address Mirroring">Disable</emrMirrorSelection>
    <emrCSSelection name="Controller Chip Select Pin">{cs}</emrCSSelection>
    <emrRTT name="RTT (nominal) - On Die Termination (ODT)">{rtt}</emrRTT>
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


def blackbox_script(tree):
    """yosys commands that make every IP of the tree (``mig``, and ``xdma`` on PCIe) a
    black box with its ports' directions (``<module>_ports.txt``), then set the top."""
    commands = []
    for listing in sorted(tree.root.glob("*_ports.txt")):
        directions = listing.read_text().split()
        pairs = zip(directions[0::2], directions[1::2])
        module = listing.name[:-len("_ports.txt")]
        commands.append(f"hierarchy -generate {module} " + " ".join(
            f"{d}:{name}" for d, name in pairs))
    return "; ".join(commands + [f"hierarchy -top {tree.top}"])


#: The Arty tree's name for :func:`blackbox_script` (its only IP is the MIG).
mig_blackbox_script = blackbox_script
