"""The CPU this runs on, and every choice that follows from it (docs/hardware.md).

One place detects the CPU, once: archspec (Spack's CPU library) reads the
instruction sets from /proc/cpuinfo, sysctl or CPUID and names the model and
microarchitecture. Everything that depends on the CPU is decided here from a
`CpuInfo`, never from the host directly, so tests inject the CPU they mean:

- which inference precisions run natively (bf16 needs AVX512_BF16 or AMX; OpenVINO
  would otherwise pick bf16 by itself on such CPUs, so every compile states one);
- which INT8 preset (u8/s8, 7-bit weights or not) a graph is built with (`PRESETS`),
  and which preset and ONNX Runtime INT8 method `auto` means on this CPU (`CPU_KINDS`);
- whether an INT8 graph fits the CPU it runs on (`int8_notes`).

Torch-free: the runtime, export and the benchmarks all read it.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass, field

from contract.errors import UserError

# --------------------------------------------------------------------------------------------
# The CPU
# --------------------------------------------------------------------------------------------

# Instruction sets that matter for this model, as Linux's /proc/cpuinfo names them.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",          # x86
             "asimd", "asimddp", "i8mm", "bf16", "asimdhp", "sve")    # ARM64


@dataclass(frozen=True)
class CpuInfo:
    """A CPU as far as inference cares: model string, architecture and instruction sets."""

    model: str
    arch: str                                   # "x86_64", "aarch64", ...
    features: frozenset[str] = field(default_factory=frozenset)
    microarchitecture: str = ""                 # archspec's name: zen3, zen4, sapphirerapids, ...

    @property
    def x86(self) -> bool:
        return self.arch in ("x86_64", "AMD64", "i686")

    @property
    def arm64(self) -> bool:
        return self.arch in ("aarch64", "arm64")

    def has(self, *flags: str) -> bool:
        return any(f in self.features for f in flags)

    @property
    def vnni(self) -> bool:
        """One-instruction u8 x s8 dot products (no 16-bit intermediate that can saturate)."""
        return self.x86 and self.has("avx512_vnni", "avx_vnni", "amx_int8")

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware, where OpenVINO's CPU plugin runs bf16 (x86 only)."""
        return self.x86 and self.has("avx512_bf16", "amx_bf16")

    @property
    def native_fp16(self) -> bool:
        """fp16 arithmetic in hardware, where OpenVINO's CPU plugin runs f16."""
        return (self.x86 and self.has("avx512_fp16", "amx_fp16")) or (self.arm64 and self.has("asimdhp"))

    @property
    def isa_flags(self) -> list[str]:
        return [f for f in ISA_FLAGS if f in self.features]

    @property
    def kind(self) -> "CpuKind":
        return next(k for k in CPU_KINDS if k.matches(self))

    def describe(self) -> str:
        flags = ", ".join(self.isa_flags) or "none of " + ", ".join(ISA_FLAGS[:6])
        micro = f" ({self.microarchitecture})" if self.microarchitecture else ""
        return f"{self.model}{micro}, {self.arch}: {flags}"


@functools.cache
def detect_cpu() -> CpuInfo:
    """The host CPU (cached). Callers use `hardware.detect_cpu()` so tests can replace it."""
    arch = platform.machine() or "unknown"
    try:
        import archspec.cpu
        from archspec.cpu.detect import detected_info

        features = frozenset(detected_info().features)
        microarchitecture = archspec.cpu.host().name
        model = archspec.cpu.brand_string() or ""
    except Exception:   # archspec missing or unable to read this OS: say nothing rather than guess
        features, microarchitecture, model = frozenset(), "", ""
    return CpuInfo(model=(model or platform.processor() or arch).strip(), arch=arch, features=features,
                   microarchitecture=microarchitecture)


# --------------------------------------------------------------------------------------------
# Precisions
# --------------------------------------------------------------------------------------------

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
# Our names <-> OpenVINO's INFERENCE_PRECISION_HINT values.
OPENVINO_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
FROM_OPENVINO = {"f32": "fp32", "float32": "fp32", "f16": "fp16", "float16": "fp16", "bf16": "bf16",
                 "bfloat16": "bf16"}


def native_precisions(cpu: CpuInfo) -> list[str]:
    """The float precisions this CPU computes in hardware, plus int8 (every x86-64 and ARM64 CPU)."""
    return ["fp32"] + (["bf16"] if cpu.native_bf16 else []) + (["fp16"] if cpu.native_fp16 else []) + ["int8"]


def openvino_float_precision(model_precision: str, asked: str, device: str, cpu: CpuInfo) -> str:
    """The float precision an OpenVINO compile is told (our name), from what the user asked:
    auto keeps the model's own (FP32 for FP32 and INT8 graphs on CPU; FP16 graphs compute in FP32 on a
    CPU); bf16 only on a CPU that has it. Raises UserError with one sentence otherwise."""
    if asked == "bf16":
        if device != "CPU":
            raise UserError(f"bf16 is a CPU precision in OpenVINO; drop --precision bf16 for {device} "
                                   "or use --precision fp16 there")
        if not cpu.native_bf16:
            raise UserError(
                f"this CPU ({cpu.model}) has no native bf16 (it needs AVX512_BF16 or AMX), so bf16 would only "
                "be slower; use --precision fp32 or auto")
        return "bf16"
    if asked in ("fp32", "fp16"):
        return asked
    if model_precision == "fp16" and device != "CPU":
        return "fp16"
    return "fp32"


def check_onnxruntime_precision(asked: str) -> None:
    if asked == "bf16":
        raise UserError(
            "ONNX Runtime runs a graph in the precision it was exported in and has no bf16 mode; bf16 is "
            "OpenVINO's (on CPUs with AVX512_BF16 or AMX): use --backend openvino --precision bf16")


# --------------------------------------------------------------------------------------------
# INT8 presets: how a graph is quantized for one kind of target
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Int8Preset:
    name: str
    activation_type: str            # "QUInt8" | "QInt8"
    weight_type: str                # "QUInt8" | "QInt8"
    reduce_range: bool              # 7-bit weights: u8 x s8 pairs cannot saturate VPMADDUBSW's int16 sums
    symmetric_activations: bool
    target: str                     # the instruction set the graph is made for
    per_channel: bool = True
    description: str = ""


PRESETS = {p.name: p for p in (
    Int8Preset("avx2", "QUInt8", "QInt8", True, False, "x86 AVX2 without VNNI",
               description="x86 without VNNI: u8 activations, 7-bit s8 weights (no saturation)"),
    Int8Preset("avx512_vnni", "QUInt8", "QInt8", False, False, "x86 with AVX512-VNNI, AVX-VNNI or AMX",
               description="x86 with AVX512-VNNI / AVX-VNNI / AMX: u8 activations, full 8-bit s8 weights"),
    Int8Preset("arm64", "QUInt8", "QInt8", False, False, "ARM64 (NEON dot product / i8mm)",
               description="ARM64: u8 activations, s8 weights"),
    Int8Preset("tensorrt", "QInt8", "QInt8", False, True, "NVIDIA TensorRT",
               description="TensorRT execution provider: symmetric s8/s8"),
)}
PRESET_CHOICES = ("auto", *PRESETS)
INT8_METHODS = ("auto", "static", "dynamic")


def resolve_preset(name: str, cpu: CpuInfo) -> Int8Preset:
    """'auto' -> the preset for this CPU; a name -> that preset; else one sentence."""
    if name == "auto":
        return PRESETS[cpu.kind.int8_preset]
    if name not in PRESETS:
        raise UserError(f"unknown INT8 preset '{name}'; choose auto or one of {', '.join(PRESETS)}")
    return PRESETS[name]


def resolve_int8_method(name: str, cpu: CpuInfo) -> str:
    if name == "auto":
        return cpu.kind.ort_int8_method
    if name not in INT8_METHODS:
        raise UserError(f"unknown INT8 method '{name}'; choose one of {', '.join(INT8_METHODS)}")
    return name


def portable_preset(cpu: CpuInfo) -> str:
    """The preset whose graph runs faithfully on every CPU of this one's architecture: what an ONNX Runtime
    graph gets when it ships beside an OpenVINO one for the CPUs where ONNX Runtime is preferred."""
    return "arm64" if cpu.arm64 else "avx2"


def applicable_presets(cpu: CpuInfo) -> list[str]:
    """The CPU presets whose graphs run faithfully on this CPU (a full 8-bit u8 x s8 graph can saturate
    without VNNI, so it is not applicable there)."""
    if cpu.arm64:
        return ["arm64"]
    return ["avx2", "avx512_vnni"] if cpu.vnni else ["avx2"]


# --------------------------------------------------------------------------------------------
# CPU kinds: one row each, in the order they are matched; docs/hardware.md has the measurements
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CpuKind:
    name: str
    requires: tuple[str, ...]       # any of these flags (empty: matches every CPU of the architecture)
    arch: str                       # "x86" | "arm64" | "any"
    int8_preset: str
    ort_int8_method: str            # the ONNX Runtime INT8 method measured fastest at the fidelity gate
    int8_format: str                # the export format of the fastest faithful INT8 path: "onnx" | "openvino"
    why: str

    def matches(self, cpu: CpuInfo) -> bool:
        if self.arch == "x86" and not cpu.x86 or self.arch == "arm64" and not cpu.arm64:
            return False
        return not self.requires or cpu.has(*self.requires)

    @property
    def recommended(self) -> str:
        """The export options of the fastest faithful INT8 path on this kind of CPU."""
        if self.int8_format == "openvino":
            return "--int8 --format openvino"
        return f"--int8 --int8-method {self.ort_int8_method}"


CPU_KINDS = (
    CpuKind("x86 with AMX", ("amx_int8",), "x86", "avx512_vnni", "dynamic", "openvino",
            "AMX runs int8 tiles; OpenVINO INT8 uses them through oneDNN (not yet measured by this project: "
            "run benchmarks/bench_export.py and add the table to docs/hardware.md)"),
    CpuKind("x86 with AVX-512 VNNI", ("avx512_vnni",), "x86", "avx512_vnni", "dynamic", "openvino",
            "measured on AMD EPYC Zen 4 (2 threads, ViT-B/16 MoAE): OpenVINO INT8 5.23x eager FP32, ONNX Runtime "
            "INT8 dynamic 4.85x, static 4.28x; the avx512_vnni preset as fast as avx2 and more faithful"),
    CpuKind("x86 with AVX-VNNI", ("avx_vnni",), "x86", "avx512_vnni", "dynamic", "openvino",
            "VNNI in 256-bit registers; expected to rank like AVX-512 VNNI (not yet measured by this project)"),
    CpuKind("x86 with AVX2", ("avx2",), "x86", "avx2", "dynamic", "onnx",
            "measured on AMD EPYC (AVX2, no VNNI; 2 threads, ViT-B/16 MoAE): ONNX Runtime INT8 dynamic 2.73x eager "
            "FP32, static 2.43x, OpenVINO INT8 only 1.25x (slower than its FP32, 1.48x: its int8 gains need VNNI)"),
    CpuKind("ARM64", (), "arm64", "arm64", "dynamic", "onnx",
            "ONNX Runtime's ARM64 int8 kernels use the dot-product instructions (not yet measured by this project)"),
    CpuKind("other CPU", (), "any", "avx2", "static", "onnx",
            "no INT8 measurement for this CPU; the avx2 preset (7-bit weights) is the safe choice"),
)


INT8_FORMATS = ("onnx", "openvino")


def other_int8_format(fmt: str) -> str:
    return INT8_FORMATS[1 - INT8_FORMATS.index(fmt)]


def int8_preferences() -> list[dict]:
    """Which INT8 graph to run on which kind of CPU, as every INT8 manifest records it (`prefer`) and
    `--backend auto` reads it: one row per CPU kind, in matching order."""
    return [{"cpu_kind": kind.name, "format": kind.int8_format} for kind in CPU_KINDS]


# --------------------------------------------------------------------------------------------
# Does an INT8 graph fit the CPU it runs on?
# --------------------------------------------------------------------------------------------

def check_int8_preset(quantization: dict | None) -> None:
    """One sentence (UserError) when a manifest names an INT8 preset this runtime does not know."""
    name = (quantization or {}).get("preset")
    if (quantization or {}).get("method") != "nncf-ptq" and name is not None and name not in PRESETS:
        raise UserError(
            f"this INT8 model was built with preset '{name}', which this runtime does not know (it knows "
            f"{', '.join(PRESETS)}); upgrade gamma-edge or export again with --preset auto")


def int8_notes(quantization: dict | None, device: str, cpu: CpuInfo) -> list[str]:
    """One sentence per way an INT8 graph does not fit this CPU (`device` "CPU"; other devices get none)."""
    check_int8_preset(quantization)
    if not quantization or device != "CPU":
        return []
    method = quantization.get("method", "")
    if method == "nncf-ptq":
        if cpu.x86 and not cpu.vnni:
            return ["OpenVINO INT8 is slower than OpenVINO FP32 on a CPU without VNNI (measured 1.25x vs 1.48x "
                    "eager FP32 on AMD EPYC AVX2); here an ONNX Runtime INT8 export is faster "
                    "(gamma-edge export --int8 --int8-method dynamic)"]
        return []
    name = quantization.get("preset")
    if name is None:
        return []
    preset = PRESETS[name]
    here = cpu.kind
    if name == "tensorrt":
        return [f"this INT8 graph was made for TensorRT (s8 activations), not for a CPU; "
                f"for {cpu.model} export with --preset auto"]
    if name == "arm64" and not cpu.arm64 or name in ("avx2", "avx512_vnni") and cpu.arm64:
        return [f"this INT8 graph was made for {preset.target} but runs on {cpu.arch}; export again on this "
                f"machine with --preset auto"]
    if cpu.x86 and not cpu.vnni and not preset.reduce_range and preset.activation_type == "QUInt8":
        return [f"this INT8 graph (preset {name}, full 8-bit weights) was made for VNNI CPUs; on this CPU "
                f"({cpu.model}, no VNNI) its u8 x s8 products can saturate and lose accuracy: export with "
                f"--preset auto here"]
    if name == "avx2" and cpu.vnni:
        return [f"this INT8 graph was made for AVX2 CPUs (7-bit weights); this CPU ({here.name}) runs the "
                f"avx512_vnni preset as fast and more faithfully: export again here with --preset auto"]
    return []
