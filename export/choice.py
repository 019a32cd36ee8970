"""Which graph(s) an export builds when the user names no format, and how a folder of two graphs says
which to run on which CPU.

`--format auto` (the default): an FP32 or FP16 export is ONNX; an INT8 export is the format the CPU
kind's row of contract/hardware.py names as fastest faithful (OpenVINO INT8 where the CPU has VNNI or
AMX, ONNX Runtime INT8 elsewhere), and if that graph misses the fidelity gate, the other format.
`--format both` (INT8): both graphs in one folder; the manifest's own graph is the one preferred on
the exporting CPU, the other is listed in `alternatives`, and `prefer` names the format per CPU kind,
which the runtime's `--backend auto` follows on the CPU it finds (contract.manifest.choose_graph).
A user who names onnx or openvino gets exactly that.
"""
from __future__ import annotations

from contract import hardware
from contract.errors import UserError

AUTO, BOTH = "auto", "both"
CHOICES = (AUTO, BOTH)


def format_plans(fmt: str, precision: str, cpu: hardware.CpuInfo, onnx_options: bool = False) -> list[tuple[str, ...]]:
    """The folders worth trying, in order: each plan is the formats one folder holds, preferred first;
    a plan whose INT8 graph misses the fidelity gate gives way to the next. `onnx_options`: the user named
    an ONNX Runtime preset or INT8 method, which only an ONNX graph has, so 'auto' means ONNX."""
    if fmt == AUTO:
        if precision != "int8" or onnx_options:
            return [("onnx",)]
        first = cpu.kind.int8_format
        return [(first,), (hardware.other_int8_format(first),)]
    if fmt == BOTH:
        if precision != "int8":
            raise UserError("--format both builds an ONNX Runtime and an OpenVINO INT8 graph; add --int8, "
                            "or name one format for FP32 / FP16")
        first = cpu.kind.int8_format
        return [(first, hardware.other_int8_format(first))]
    return [(fmt,)]


def folder_name(fmt: str, precision: str, cpu: hardware.CpuInfo, onnx_options: bool = False) -> str:
    """The format part of the default output folder's name."""
    return "+".join(format_plans(fmt, precision, cpu, onnx_options)[0]) if fmt in CHOICES else fmt


def onnx_preset(formats: tuple[str, ...], preset: str, preset_auto: bool, cpu: hardware.CpuInfo) -> str:
    """The ONNX Runtime INT8 preset of a folder's ONNX graph: when it ships beside a preferred OpenVINO
    graph it serves the CPUs where ONNX Runtime is preferred (no VNNI), so 'auto' means the preset that
    is faithful on every CPU of this architecture, not the one for this CPU."""
    if preset_auto and len(formats) > 1 and formats[0] != "onnx":
        return hardware.portable_preset(cpu)
    return preset


def combine(manifests: list[dict]) -> dict:
    """The folder's manifest: the first graph's, with the others as `alternatives` and the `prefer` table."""
    folder = dict(manifests[0])
    if len(manifests) > 1:
        folder["alternatives"] = [{key: m.get(key) for key in ("model", "quantization", "parity")}
                                  for m in manifests[1:]]
    return folder


def prefer_block(precision: str) -> list[dict] | None:
    """The `prefer` table every INT8 manifest carries (contract.hardware.int8_preferences)."""
    return hardware.int8_preferences() if precision == "int8" else None


def alternatives_report(manifests: list[dict]) -> str:
    """Report lines for the graphs beside the manifest's own (empty for a one-graph export)."""
    lines = []
    for m in manifests[1:]:
        p, model = m["parity"], m["model"]
        lines.append(f"\n  also {model['kind']} {model['precision']} graph {model['file']}: max |diff| "
                     f"{p['max_abs_diff']:.3g}, SRCC {p['srcc']:.4f}, {p['file_bytes'] / 1e6:.1f} MB")
    if len(manifests) > 1:
        rows = ", ".join(f"{row['cpu_kind']}: {row['format']}" for row in manifests[0].get("prefer") or [])
        lines.append(f"\n  --backend auto runs the graph this folder prefers for the CPU it finds ({rows})")
    return "".join(lines)


def recommendation(cpu: hardware.CpuInfo, manifest: dict) -> str:
    """The line after every export that leads to the fastest faithful INT8 path for this CPU."""
    kind = cpu.kind
    quantization = manifest.get("quantization") or {}
    made = (manifest["model"]["precision"] == "int8"
            and manifest["model"]["kind"] == kind.int8_format
            and (kind.int8_format == "openvino" or quantization.get("method") in (kind.ort_int8_method, None)))
    head = (f"this CPU ({cpu.model}, {kind.name}): "
            + ("this export is the fastest faithful INT8 path measured for it"
               if made else f"the fastest faithful INT8 path is 'gamma-edge export {kind.recommended}'"))
    return f"{head} ({kind.why}; docs/hardware.md)"
