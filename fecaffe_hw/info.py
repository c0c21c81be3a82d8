"""``fecaffe-hw info``: a network's layers, shapes, parameters and MACs."""

import json

__all__ = ["describe", "run_info"]


def describe(net):
    """The ``info`` report of a built :class:`~fecaffe_hw.reference.net.Net` as a dict.

    Caffe's automatically inserted Split layers are left out: they are an
    implementation detail of gradient summation, not part of the user's net.
    """
    layers = []
    for info in net.layer_infos():
        if info.type == "Split" and _inserted_split(info):
            continue
        layers.append({
            "name": info.name, "type": info.type,
            "bottoms": list(info.bottoms), "tops": list(info.tops),
            "top_shapes": [list(shape) for shape in info.top_shapes],
            "params": info.params, "macs": info.macs,
        })
    return {
        "name": net.name,
        "layers": layers,
        "params": sum(layer["params"] for layer in layers),
        "macs": sum(layer["macs"] for layer in layers),
    }


def _inserted_split(info):
    # Caffe's InsertSplits names them "{blob}_{producer}_{i}_split" with tops
    # "{...}_split_{j}"; a user's own Split layer is kept in the report.
    return info.name.endswith("_split") and all(
        top.startswith(info.name + "_") for top in info.tops)


def format_table(report):
    def shape(shapes):
        return ", ".join("x".join(map(str, s)) if s else "scalar" for s in shapes)

    header = ("layer", "type", "bottoms", "tops", "top shapes", "params", "MACs")
    rows = [(layer["name"], layer["type"], ", ".join(layer["bottoms"]),
             ", ".join(layer["tops"]), shape(layer["top_shapes"]),
             f"{layer['params']:,}", f"{layer['macs']:,}")
            for layer in report["layers"]]
    rows.append(("total", "", "", "", "", f"{report['params']:,}", f"{report['macs']:,}"))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    right = {5, 6}

    def line(row):
        return "  ".join(str(cell).rjust(w) if i in right else str(cell).ljust(w)
                         for i, (cell, w) in enumerate(zip(row, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([f"net {report['name']!r}", line(header), rule,
                      *map(line, rows[:-1]), rule, line(rows[-1])])


def run_info(args):
    from .reference.layer import TEST, TRAIN
    from .reference.net import Net
    phase = TRAIN if args.phase == "train" else TEST
    net = Net(args.net, phase=phase, stages=tuple(args.stage), seed=0)
    report = describe(net)
    print(json.dumps(report) if args.json else format_table(report))
