"""`gamma-edge info`: this machine as gamma-edge sees it: the CPU and its instruction sets, the
installed engines with their versions and devices, which precisions run natively, and the INT8
path to export for this CPU (contract.hardware decides all of it; this command only shows it)."""
from __future__ import annotations

import json
from importlib import metadata

import click

from contract import hardware
from runtime.inference.backends import cuda_driver_present, tensorrt_present


def _version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def engines() -> list[dict]:
    """Each installed engine: version, devices, and what each device computes natively."""
    found = []
    version = _version("onnxruntime-gpu", "onnxruntime")
    if version:
        entry = {"engine": "onnxruntime", "version": version}
        try:
            import onnxruntime as ort

            providers = ort.get_available_providers()
            usable = ["CPUExecutionProvider"]
            gpu = cuda_driver_present()     # onnxruntime-gpu lists CUDA even where no GPU exists
            if gpu and "CUDAExecutionProvider" in providers:
                usable.insert(0, "CUDAExecutionProvider")
            if gpu and tensorrt_present() and "TensorrtExecutionProvider" in providers:
                usable.insert(0, "TensorrtExecutionProvider")
            entry.update(providers_built=providers, providers_usable=usable)
        except ImportError as exc:
            entry["error"] = f"does not import ({exc})"
        found.append(entry)
    version = _version("openvino")
    if version:
        entry = {"engine": "openvino", "version": version}
        try:
            import openvino as ov

            core = ov.Core()
            entry["devices"] = {}
            for device in core.available_devices:
                properties = {}
                for name in ("FULL_DEVICE_NAME", "OPTIMIZATION_CAPABILITIES", "INFERENCE_PRECISION_HINT"):
                    try:
                        value = core.get_property(device, name)
                    except Exception:  # a property this device does not have
                        continue
                    properties[name] = (value.to_string() if hasattr(value, "to_string")
                                        else value if isinstance(value, (list, str)) else str(value))
                entry["devices"][device] = properties
        except ImportError as exc:
            entry["error"] = f"does not import ({exc})"
        found.append(entry)
    return found


def machine_report(cpu: hardware.CpuInfo) -> dict:
    kind = cpu.kind
    return {
        "cpu": {"model": cpu.model, "arch": cpu.arch, "microarchitecture": cpu.microarchitecture,
                "isa": cpu.isa_flags, "vnni": cpu.vnni, "native_bf16": cpu.native_bf16,
                "native_fp16": cpu.native_fp16, "kind": kind.name},
        "native_precisions": hardware.native_precisions(cpu),
        "int8": {"preset": kind.int8_preset, "onnxruntime_method": kind.ort_int8_method,
                 "recommended": f"gamma-edge export {kind.recommended}", "why": kind.why,
                 "applicable_presets": hardware.applicable_presets(cpu)},
        "engines": engines(),
        "torch": _version("torch"),
    }


def format_report(report: dict) -> str:
    cpu, int8 = report["cpu"], report["int8"]
    lines = [f"CPU        {cpu['model']} ({cpu['microarchitecture'] or 'unknown microarchitecture'}, {cpu['arch']})",
             f"           instruction sets: {', '.join(cpu['isa']) or 'none of those gamma-edge uses'}",
             f"           kind: {cpu['kind']}; VNNI {'yes' if cpu['vnni'] else 'no'}, "
             f"native bf16 {'yes' if cpu['native_bf16'] else 'no'}, native fp16 {'yes' if cpu['native_fp16'] else 'no'}",
             f"precisions native here: {', '.join(report['native_precisions'])}"
             + ("" if cpu["native_bf16"] else " (--precision bf16 is refused: it would only be slower)")]
    for engine in report["engines"]:
        if "error" in engine:
            lines.append(f"{engine['engine']:10s} {engine['version']}: {engine['error']}")
        elif engine["engine"] == "onnxruntime":
            lines.append(f"onnxruntime {engine['version']}: usable providers {', '.join(engine['providers_usable'])}"
                         f" (built with {', '.join(engine['providers_built'])})")
        else:
            lines.append(f"openvino   {engine['version']}:")
            for device, props in engine["devices"].items():
                capabilities = ", ".join(props.get("OPTIMIZATION_CAPABILITIES", []))
                lines.append(f"           {device}: {props.get('FULL_DEVICE_NAME', '')}; capabilities {capabilities}; "
                             f"default inference precision {props.get('INFERENCE_PRECISION_HINT', '-')} "
                             "(gamma-edge always sets it: fp32 unless --precision bf16)")
    lines.append(f"torch      {report['torch'] or 'not installed (export and training need it: pip install gamma-edge[full])'}")
    lines += ["",
              f"INT8 for this CPU: preset {int8['preset']} (--preset auto), ONNX Runtime method "
              f"{int8['onnxruntime_method']} (--int8-method auto); presets that run faithfully here: "
              f"{', '.join(int8['applicable_presets'])}",
              f"fastest faithful path: {int8['recommended']}",
              f"why: {int8['why']}"]
    return "\n".join(lines)


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def info_command(as_json):
    """Show this machine as gamma-edge sees it: CPU, engines, native precisions, INT8 choice.

    \b
    The CPU's instruction sets decide which precisions run natively (bf16 needs
    AVX512_BF16 or AMX), which INT8 preset 'export --int8' builds, and which
    export path is fastest here (docs/hardware.md has the measurements).

    \b
    Examples:
      gamma-edge info
      gamma-edge info --json > machine.json
    """
    report = machine_report(hardware.detect_cpu())
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
