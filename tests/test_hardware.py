"""Every choice that depends on the CPU, tested on every host by injecting the CPU (contract.hardware).

The CPUs below are the kinds this project's machines have been (docs/hardware.md): an AMD EPYC with
AVX2 only, an AMD EPYC Zen 4 with AVX-512 VNNI and AVX512_BF16, an Intel Xeon with AMX; plus an
ARM64 server. Nothing here asks the host which kind it is, except where a test says why.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from contract import hardware
from runtime.inference.backends import load_backend, openvino_precision
from contract.errors import UserError
from contract.hardware import CpuInfo
from contract.manifest import load_manifest

MODELS = Path(__file__).resolve().parents[1] / "runtime" / "models"
SAMPLE = Path(__file__).resolve().parents[1] / "runtime" / "samples" / "coins_pristine.png"

EPYC_AVX2 = CpuInfo("AMD EPYC", "x86_64", frozenset({"sse4_2", "avx", "avx2", "fma"}), "zen3")
EPYC_ZEN4 = CpuInfo("AMD EPYC 9R14", "x86_64", frozenset(
    {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}), "zen4")
XEON_AMX = CpuInfo("Intel Xeon Platinum 8488C", "x86_64", frozenset(
    {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"}),
    "sapphirerapids")
ALDER_LAKE = CpuInfo("12th Gen Intel Core i7-12700", "x86_64", frozenset({"avx2", "fma", "avx_vnni"}), "alderlake")
GRAVITON = CpuInfo("Neoverse-V1", "aarch64", frozenset({"asimd", "asimddp", "i8mm", "bf16", "asimdhp"}), "neoverse_v1")
OLD_X86 = CpuInfo("QEMU Virtual CPU", "x86_64", frozenset({"sse4_2"}), "x86_64")


@pytest.mark.parametrize("cpu, kind, preset, native", [
    (EPYC_AVX2, "x86 with AVX2", "avx2", ["fp32", "int8"]),
    (EPYC_ZEN4, "x86 with AVX-512 VNNI", "avx512_vnni", ["fp32", "bf16", "int8"]),
    (XEON_AMX, "x86 with AMX", "avx512_vnni", ["fp32", "bf16", "fp16", "int8"]),
    (ALDER_LAKE, "x86 with AVX-VNNI", "avx512_vnni", ["fp32", "int8"]),
    (GRAVITON, "ARM64", "arm64", ["fp32", "fp16", "int8"]),
    (OLD_X86, "other CPU", "avx2", ["fp32", "int8"]),
])
def test_cpu_kind_preset_and_native_precisions(cpu, kind, preset, native):
    assert cpu.kind.name == kind
    assert hardware.resolve_preset("auto", cpu).name == preset
    assert hardware.native_precisions(cpu) == native
    assert hardware.resolve_preset("tensorrt", cpu).name == "tensorrt"       # a named preset is kept


def test_presets_the_cpu_runs_faithfully():
    assert hardware.applicable_presets(EPYC_AVX2) == ["avx2"]              # 8-bit weights saturate without VNNI
    assert hardware.applicable_presets(EPYC_ZEN4) == ["avx2", "avx512_vnni"]
    assert hardware.applicable_presets(GRAVITON) == ["arm64"]
    assert hardware.PRESETS["avx2"].reduce_range and not hardware.PRESETS["avx512_vnni"].reduce_range
    with pytest.raises(UserError, match="unknown INT8 preset 'avx9'"):
        hardware.resolve_preset("avx9", EPYC_AVX2)


def test_the_host_is_detected_with_its_instruction_sets():
    cpu = hardware.detect_cpu()
    assert cpu.model and cpu.arch
    # archspec reads the same flags Linux lists; where /proc/cpuinfo exists, they must agree
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and cpu.x86:
        flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
        assert {f for f in hardware.ISA_FLAGS if f in flags} == set(cpu.isa_flags)


@pytest.mark.parametrize("quantization, cpu, expected", [
    ({"method": "dynamic", "preset": "avx512_vnni"}, EPYC_AVX2, "can saturate"),
    ({"method": "static-qdq", "preset": "avx2"}, EPYC_ZEN4, "more faithfully"),
    ({"method": "static-qdq", "preset": "avx2"}, XEON_AMX, "more faithfully"),
    ({"method": "static-qdq", "preset": "tensorrt"}, EPYC_ZEN4, "made for TensorRT"),
    ({"method": "dynamic", "preset": "arm64"}, EPYC_AVX2, "runs on x86_64"),
    ({"method": "dynamic", "preset": "avx2"}, GRAVITON, "runs on aarch64"),
    ({"method": "nncf-ptq", "nncf_preset": "MIXED"}, EPYC_AVX2, "slower than OpenVINO FP32"),
    ({"method": "static-qdq", "preset": "avx2"}, EPYC_AVX2, None),
    ({"method": "dynamic", "preset": "avx512_vnni"}, EPYC_ZEN4, None),
    ({"method": "nncf-ptq", "nncf_preset": "MIXED"}, XEON_AMX, None),
])
def test_int8_fit_notes(quantization, cpu, expected):
    notes = hardware.int8_notes(quantization, "CPU", cpu)
    if expected is None:
        assert notes == []
    else:
        assert len(notes) == 1 and expected in notes[0]
    assert hardware.int8_notes(quantization, "GPU", cpu) == []             # the CPU's instructions do not matter


def test_unknown_preset_is_refused_in_one_sentence():
    with pytest.raises(UserError, match="preset 'avx1024'.*does not know.*upgrade gamma-edge"):
        hardware.int8_notes({"method": "dynamic", "preset": "avx1024"}, "CPU", EPYC_AVX2)


def test_bf16_is_asked_not_assumed():
    assert hardware.openvino_float_precision("fp32", "auto", "CPU", XEON_AMX) == "fp32"   # never bf16 by itself
    assert hardware.openvino_float_precision("int8", "auto", "CPU", XEON_AMX) == "fp32"
    assert hardware.openvino_float_precision("fp32", "bf16", "CPU", EPYC_ZEN4) == "bf16"
    assert hardware.openvino_float_precision("fp16", "auto", "GPU", EPYC_AVX2) == "fp16"
    with pytest.raises(UserError, match="no native bf16.*AVX512_BF16 or AMX"):
        hardware.openvino_float_precision("fp32", "bf16", "CPU", EPYC_AVX2)
    with pytest.raises(UserError, match="bf16 is a CPU precision"):
        hardware.openvino_float_precision("fp32", "bf16", "GPU", XEON_AMX)


# -- the runtime's backends, on the embedded demo models -------------------------------------

def test_openvino_states_fp32_and_reports_what_it_compiled():
    manifest = load_manifest(MODELS / "demo")
    backend = load_backend(manifest, "openvino", "cpu", threads=1, cpu=XEON_AMX)
    assert backend.precision == openvino_precision(backend.compiled) == "fp32"
    assert "inference precision fp32" in backend.describe()


def test_every_openvino_compile_states_its_precision():
    """What compile_openvino hands OpenVINO, on any host (on an AVX2 host f32 is the plugin's default
    anyway, so only the config shows that it was said)."""
    from runtime.inference.backends import compile_openvino

    class RecordingCore:
        def compile_model(self, model, device, config):
            self.call = (device, config)
            return "compiled"

    core = RecordingCore()
    for precision, hint in (("fp32", "f32"), ("bf16", "bf16"), ("fp16", "f16")):
        compile_openvino(core, "model.xml", "CPU", precision, threads=2)
        assert core.call == ("CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint,
                                     "INFERENCE_NUM_THREADS": 2})
    compile_openvino(core, "model.xml", "NPU", "fp32")
    assert "INFERENCE_PRECISION_HINT" not in core.call[1]                  # NPUs take no precision hint


def test_bf16_on_a_bf16_cpu_is_compiled_and_read_back():
    """With a bf16 CPU injected, bf16 is passed to OpenVINO; what the backend reports is what OpenVINO
    says it compiled. On a host without bf16, OpenVINO compiles f32 and the backend says so in a note."""
    manifest = load_manifest(MODELS / "demo")
    backend = load_backend(manifest, "auto", "cpu", threads=1, precision="bf16", cpu=EPYC_ZEN4)
    assert type(backend).__name__ == "OpenVINOBackend"                   # only OpenVINO computes bf16
    compiled = openvino_precision(backend.compiled)
    assert backend.precision == compiled
    if compiled != "bf16":                                             # host without native bf16
        assert any("bf16 was asked but OpenVINO compiled the model in fp32" in n for n in backend.notes)
    crops = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    fp32 = load_backend(manifest, "openvino", "cpu", threads=1, cpu=EPYC_ZEN4).run(crops)
    # bf16 keeps 8 mantissa bits: scores move by about 1e-3 (docs/design.md sec. 5.1 measured 1e-3 to 6e-3)
    assert np.abs(backend.run(crops) - fp32).max() < 2e-2


@pytest.mark.parametrize("backend, cpu, match", [
    ("openvino", EPYC_AVX2, "no native bf16"),
    ("onnxruntime", XEON_AMX, "ONNX Runtime .* has no bf16 mode.*--backend openvino"),
])
def test_bf16_refusals(backend, cpu, match):
    with pytest.raises(UserError, match=match):
        load_backend(load_manifest(MODELS / "demo"), backend, "cpu", precision="bf16", cpu=cpu)


def test_int8_model_warns_on_a_cpu_it_was_not_made_for():
    manifest = load_manifest(MODELS / "demo-int8")
    assert manifest.raw["quantization"]["preset"] == "avx2"
    assert load_backend(manifest, "onnxruntime", "cpu", threads=1, cpu=EPYC_AVX2).notes == []
    notes = load_backend(manifest, "onnxruntime", "cpu", threads=1, cpu=EPYC_ZEN4).notes
    assert len(notes) == 1 and "made for AVX2 CPUs" in notes[0]


@pytest.fixture
def unknown_preset_model(tmp_path):
    folder = tmp_path / "future-int8"
    shutil.copytree(MODELS / "demo-int8", folder)
    document = json.loads((folder / "manifest.json").read_text())
    document["quantization"]["preset"] = "riscv_v"
    (folder / "manifest.json").write_text(json.dumps(document))
    return folder


def test_unknown_preset_in_a_manifest_is_refused(unknown_preset_model):
    with pytest.raises(UserError, match="preset 'riscv_v'"):
        load_backend(load_manifest(unknown_preset_model), "onnxruntime", "cpu", cpu=EPYC_AVX2)


# -- the command line: one sentence, non-zero exit, no traceback ------------------------------

def _cli(args, monkeypatch, cpu):
    from gamma_edge.cli import main

    monkeypatch.setattr(hardware, "detect_cpu", lambda: cpu)
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("args, match", [
    (["score", SAMPLE, "--precision", "bf16", "-q"], "no native bf16"),
    (["score", SAMPLE, "--backend", "onnxruntime", "--precision", "bf16", "-q"], "has no bf16 mode"),
    (["export", "--int8", "--preset", "avx9"], "Invalid value for '--preset'"),
])
def test_cli_refusals_are_one_sentence(args, match, monkeypatch):
    result = _cli(args, monkeypatch, EPYC_AVX2)
    assert result.exit_code in (1, 2)                                      # 1: our sentence, 2: click's usage
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert match in result.output


def test_cli_unknown_preset_manifest(unknown_preset_model, monkeypatch):
    result = _cli(["score", SAMPLE, "--model", unknown_preset_model, "-q"], monkeypatch, EPYC_AVX2)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "preset 'riscv_v'" in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_warns_when_an_int8_model_does_not_fit(monkeypatch):
    result = _cli(["score", SAMPLE, "--model", MODELS / "demo-int8"], monkeypatch, XEON_AMX)
    assert result.exit_code == 0
    assert "warning: this INT8 graph was made for AVX2 CPUs" in result.output


def test_info_shows_the_cpu_and_what_follows(monkeypatch):
    result = _cli(["info"], monkeypatch, XEON_AMX)
    assert result.exit_code == 0, result.output
    assert "Intel Xeon Platinum 8488C" in result.output and "x86 with AMX" in result.output
    assert "native bf16 yes" in result.output and "precisions native here: fp32, bf16, fp16, int8" in result.output
    assert "gamma-edge export --int8 --format openvino" in result.output
    report = json.loads(_cli(["info", "--json"], monkeypatch, EPYC_AVX2).output)
    assert report["cpu"]["kind"] == "x86 with AVX2" and report["int8"]["preset"] == "avx2"
    assert report["native_precisions"] == ["fp32", "int8"]
    assert {e["engine"] for e in report["engines"]} == {"onnxruntime", "openvino"}
