"""One small Backend interface with an ONNX Runtime and an OpenVINO implementation.

A backend takes a uint8 NHWC BGR batch of crops and returns float32 (N, S) scores,
one column per scene. The scorer never asks which backend it holds. onnxruntime and
openvino are imported only by the backend that needs them.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path
from typing import Protocol

import numpy as np

from contract import hardware
from contract.errors import UserError
from contract.hardware import CpuInfo, PRECISIONS
from contract.manifest import Manifest, choose_graph
from runtime.inference.engine_cache import EngineCache, Loaded, file_identity

BACKENDS = ("auto", "onnxruntime", "openvino")
ENGINE_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino"}     # the graph format each engine runs natively
OPTIMIZED_ONNX = "optimized.onnx"        # ONNX Runtime's optimized graph, in a start-up cache entry
COMPILED_BLOB = "compiled.blob"          # OpenVINO's exported compiled model, in a start-up cache entry
DEVICES = ("auto", "cpu", "cuda", "tensorrt", "gpu", "npu")


class Backend(Protocol):
    notes: list[str]           # warnings worth one line each to the user
    precision: str             # what actually runs, read back from the session / compiled model

    def run(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) BGR crops -> float32 (N, S) scores."""

    def describe(self) -> str:
        """One line saying what actually runs (engine, device / providers, threads, precision)."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_backend(manifest: Manifest, backend: str = "auto", device: str = "auto",
                 threads: int | None = None, precision: str = "auto", cpu: CpuInfo | None = None,
                 cache: Path | None = None) -> Backend:
    """The backend for this model: ONNX Runtime for kind "onnx", OpenVINO for kind
    "openvino" (OpenVINO also reads .onnx files), unless `backend` says otherwise.
    `cpu` (default: the host's, contract.hardware) decides bf16 and the INT8 fit notes; `cache` is the
    start-up cache's folder (default: engine_cache.cache_root())."""
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise UserError(f"device {device!r} is unknown; choose one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, not {threads}")
    if backend == "auto":
        if device in ("gpu", "npu"):
            backend = "openvino"
        elif device in ("cuda", "tensorrt"):
            backend = "onnxruntime"
        elif precision == "bf16":
            backend = "openvino"                     # only OpenVINO computes in bf16; it reads .onnx too
    cpu = cpu or hardware.detect_cpu()
    # a folder with several graphs (export --format both): the engine's own, else the one for this CPU
    manifest = choose_graph(manifest, ENGINE_FORMATS.get(backend), cpu.kind.name, cpu.kind.int8_format)
    if backend == "auto":
        backend = "onnxruntime" if manifest.model_kind == "onnx" else "openvino"
    quantization = manifest.raw.get("quantization") if manifest.precision == "int8" else None
    hardware.check_int8_preset(quantization)        # a preset we do not know: refused before loading
    if backend == "onnxruntime":
        if manifest.model_kind != "onnx":
            raise UserError(
                f"'{manifest.model_file.name}' is an OpenVINO model, which ONNX Runtime cannot run; "
                f"use --backend openvino or an ONNX export")
        hardware.check_onnxruntime_precision(precision)
        loaded: Backend = OnnxRuntimeBackend(manifest, device, threads, precision, cache)
        engine_device = "CPU" if loaded.providers[0] == "CPUExecutionProvider" else "GPU"
    else:
        loaded = OpenVINOBackend(manifest, device, threads, precision, cpu, cache)
        engine_device = loaded.target
    loaded.notes += hardware.int8_notes(quantization, engine_device, cpu)
    return loaded


def _model_identity(manifest: Manifest) -> dict:
    """What a start-up cache entry of this model depends on: its hash from the manifest and its files."""
    model = manifest.raw.get("model") or {}
    files = [manifest.model_file]
    if model.get("weights_file"):
        files.append(manifest.folder / model["weights_file"])
    return {"sha256": model.get("sha256"), "weights_sha256": model.get("weights_sha256"),
            "files": file_identity(*files)}


def _check_output(scores, manifest: Manifest, count: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != (count, len(manifest.scenes)):
        raise UserError(
            f"the model returned scores of shape {scores.shape} for {count} crops, but its manifest lists "
            f"{len(manifest.scenes)} scene(s); the manifest does not belong to this graph, export again")
    return scores


def _run_in_fixed_batches(run_one, crops: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """Feed a graph with a fixed batch size: split, and pad the last chunk by repetition."""
    if batch is None:
        return [run_one(crops)]
    parts = []
    for start in range(0, len(crops), batch):
        chunk = crops[start:start + batch]
        count = len(chunk)
        if count < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - count, axis=0)])
        parts.append(run_one(chunk)[:count])
    return parts


def _library_loads(*names: str) -> bool:
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def cuda_driver_present() -> bool:
    return _library_loads("nvcuda.dll") if sys.platform == "win32" else _library_loads("libcuda.so.1", "libcuda.so")


def tensorrt_present() -> bool:
    if sys.platform == "win32":
        return _library_loads("nvinfer_10.dll", "nvinfer.dll")
    return _library_loads("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so")


class OnnxRuntimeBackend:
    """ONNX Runtime with the best provider: TensorRT, else CUDA on a GPU, else CPU."""

    PROVIDER_NAMES = {"TensorrtExecutionProvider": "TensorRT", "CUDAExecutionProvider": "CUDA",
                      "CPUExecutionProvider": "CPU"}

    def __init__(self, manifest: Manifest, device: str = "auto", threads: int | None = None,
                 precision: str = "auto", cache: Path | None = None):
        import onnxruntime as ort

        self.manifest = manifest
        self.notes: list[str] = []
        if device in ("gpu", "npu"):
            raise UserError(
                f"ONNX Runtime has no '{device}' device here; use --device cuda or tensorrt, "
                f"or --backend openvino for Intel GPU/NPU")
        available = ort.get_available_providers()
        self.threads = threads or available_cores()
        model_precision = manifest.precision
        if precision not in ("auto", model_precision) and not (device == "tensorrt" and precision == "fp16"):
            raise UserError(
                f"this model was exported as {model_precision} and ONNX Runtime runs a graph in the precision "
                f"it was exported in (only TensorRT can add fp16); export a {precision} model or drop --precision")

        wanted = self._providers(device, available, precision, model_precision)
        self.session, self.cache = self._session(ort, wanted, cache)
        self.providers = self.session.get_providers()
        got = self.providers[0]
        requested = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}.get(device)
        if requested and got != requested:
            raise UserError(
                f"--device {device} was asked for but ONNX Runtime could only start {', '.join(self.providers)} "
                f"(no GPU, or CUDA/cuDNN/TensorRT libraries missing); install them or use --device cpu")
        if got == "CUDAExecutionProvider" and model_precision == "int8":
            self.notes.append(
                "INT8 graphs on the CUDA provider fall back to CPU kernels and run slower than FP32; "
                "serve an FP16 export on CUDA, or INT8 only with --device tensorrt")
        if got == "CPUExecutionProvider" and model_precision == "fp16":
            self.notes.append("an FP16 graph runs slowly on a CPU; export FP32 or INT8 for CPU")
        self.precision = model_precision      # the CPU and CUDA providers run the graph's own types
        if got == "TensorrtExecutionProvider":  # TensorRT may build FP16 engines: read back what it was given
            options = self.session.get_provider_options().get(got, {})
            if str(options.get("trt_fp16_enable", "0")).lower() in ("1", "true") and model_precision == "fp32":
                self.precision = "fp16"
        self.input_name, self.output_name = manifest.input_name, manifest.output_name
        names = [i.name for i in self.session.get_inputs()]
        if self.input_name not in names:
            raise UserError(
                f"'{manifest.model_file}' has inputs {names}, not '{self.input_name}' as its manifest says; export again")

    def _options(self, ort, level):
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = level
        options.log_severity_level = 3          # the fallback is reported below, from what the session got
        # Idle intra-op threads sleep instead of spinning: spinning ones take the cores the image decoder
        # needs while it prepares the next batch (benchmarks/bench_runtime.py end-to-end vs backend-only).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    def _session(self, ort, wanted: list, cache: Path | None):
        """The session, on the CPU from the start-up cache (engine_cache.py): the graph as ONNX Runtime
        optimized it last time, loaded with its optimizations off since they are already applied."""
        model_file = self.manifest.model_file

        def build(folder: Path | None):
            options = self._options(ort, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
            if folder is not None:
                options.optimized_model_filepath = str(folder / OPTIMIZED_ONNX)
            try:
                return ort.InferenceSession(str(model_file), sess_options=options, providers=wanted)
            except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
                raise UserError(
                    f"ONNX Runtime could not load '{model_file}' ({str(exc).splitlines()[0][:200]}); "
                    f"export the model again or upgrade onnxruntime") from None

        def use(folder: Path):
            options = self._options(ort, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
            return ort.InferenceSession(str(folder / OPTIMIZED_ONNX), sess_options=options, providers=wanted)

        if wanted != ["CPUExecutionProvider"]:     # GPU providers build their own (TensorRT: its engine cache)
            return build(None), Loaded(None, "off")
        parts = {"version": ort.__version__, "model": _model_identity(self.manifest), "cpu": hardware.detect_cpu().describe(),
                 "optimization": "ORT_ENABLE_ALL", "providers": wanted}
        loaded = EngineCache("onnxruntime", cache).load(parts, build, use)
        return loaded.value, loaded

    def _providers(self, device, available, precision, model_precision) -> list:
        gpu = cuda_driver_present()
        use_trt = "TensorrtExecutionProvider" in available and (
            device == "tensorrt" or (device == "auto" and gpu and tensorrt_present()))
        use_cuda = "CUDAExecutionProvider" in available and (
            device in ("cuda", "tensorrt") or (device == "auto" and gpu))
        providers: list = []
        if use_trt:
            cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gamma-edge" / "tensorrt"
            batch = self.manifest.batch or 32
            size = self.manifest.crop_size
            shape = lambda n: f"{self.manifest.input_name}:{n}x{size}x{size}x3"  # noqa: E731
            trt = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                   "trt_fp16_enable": model_precision == "fp32" and precision in ("auto", "fp16"),
                   "trt_int8_enable": model_precision == "int8"}
            if self.manifest.batch is None:
                trt.update(trt_profile_min_shapes=shape(1), trt_profile_opt_shapes=shape(10),
                           trt_profile_max_shapes=shape(batch))
            providers.append(("TensorrtExecutionProvider", trt))
        if use_cuda:
            providers.append(("CUDAExecutionProvider", {"device_id": 0}))
        if device in ("cuda", "tensorrt") and not providers:
            raise UserError(
                f"--device {device} was asked for but this onnxruntime build has no such provider "
                f"(it offers {', '.join(available)}); install onnxruntime-gpu or use --device cpu")
        providers.append("CPUExecutionProvider")
        return providers

    def run(self, crops: np.ndarray) -> np.ndarray:
        parts = _run_in_fixed_batches(
            lambda chunk: self.session.run([self.output_name], {self.input_name: chunk})[0],
            crops, self.manifest.batch)
        return _check_output(np.concatenate(parts), self.manifest, len(crops))

    def describe(self) -> str:
        device = self.PROVIDER_NAMES.get(self.providers[0], self.providers[0])
        threads = f", {self.threads} threads" if self.providers[0] == "CPUExecutionProvider" else ""
        return (f"ONNX Runtime on {device} (providers: {', '.join(self.providers)}{threads}), "
                f"{self.precision}, model {self.manifest.model_file}")


class OpenVINOBackend:
    """OpenVINO on CPU, or on GPU / NPU where OpenVINO sees them. It reads IR or ONNX."""

    def __init__(self, manifest: Manifest, device: str = "auto", threads: int | None = None,
                 precision: str = "auto", cpu: CpuInfo | None = None, cache: Path | None = None):
        import openvino as ov

        self.manifest = manifest
        self.notes: list[str] = []
        if device in ("cuda", "tensorrt"):
            raise UserError(f"OpenVINO has no '{device}' device; use --backend onnxruntime for NVIDIA GPUs")
        core = ov.Core()
        seen = core.available_devices
        target = {"auto": "CPU", "cpu": "CPU", "gpu": "GPU", "npu": "NPU"}[device]
        if not any(name.split(".")[0] == target for name in seen):
            raise UserError(
                f"OpenVINO sees no {target} here (it sees {', '.join(seen) or 'nothing'}); "
                f"install the {target} driver or use --device cpu")
        if precision == "int8" and manifest.precision != "int8":
            raise UserError(
                f"this model was exported as {manifest.precision}; INT8 needs an INT8 export (export --int8)")
        asked = hardware.openvino_float_precision(manifest.precision, precision, target, cpu or hardware.detect_cpu())
        # NPUs compile static shapes only; elsewhere keep the batch dynamic.
        self.batch = manifest.batch or (8 if target == "NPU" else None)
        self.threads = (threads or available_cores()) if target == "CPU" else None
        self.compiled, self.cache = self._compiled(core, target, asked, cache, cpu or hardware.detect_cpu())
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(manifest.output_name)
        self.target = target
        self.float_precision = openvino_precision(self.compiled) or asked
        if self.float_precision != asked:
            self.notes.append(f"{asked} was asked but OpenVINO compiled the model in {self.float_precision} "
                              f"(its {target} plugin has no native {asked} here); scores are {self.float_precision}")
        self.precision = ("int8" if self.float_precision == "fp32" else f"int8+{self.float_precision}") \
            if manifest.precision == "int8" else self.float_precision

    def _compiled(self, core, target: str, asked: str, cache: Path | None, cpu: CpuInfo):
        """The compiled model; on the CPU from the start-up cache (engine_cache.py): the compiled model
        OpenVINO exported last time, imported instead of compiled."""
        import openvino as ov

        manifest = self.manifest

        def build(folder: Path | None):
            try:
                model = core.read_model(str(manifest.model_file))
            except Exception as exc:  # openvino raises RuntimeError subclasses of its own
                raise UserError(
                    f"OpenVINO could not read '{manifest.model_file}' ({str(exc).splitlines()[0][:200]}); "
                    f"export the model again or upgrade openvino") from None
            size = manifest.crop_size
            model.reshape({model.input(manifest.input_name).any_name: [self.batch or -1, size, size, 3]})
            try:
                compiled = compile_openvino(core, model, target, asked, self.threads)
            except Exception as exc:
                raise UserError(
                    f"OpenVINO could not compile the model for {target} with {asked} precision "
                    f"({str(exc).splitlines()[0][:200]}); try --device cpu or --precision auto") from None
            if folder is not None:
                (folder / COMPILED_BLOB).write_bytes(compiled.export_model().getbuffer())
            return compiled

        def use(folder: Path):
            # Imported from a memory map shared with OpenVINO, not read into Python first: 0.09 s for a
            # 175 MB ViT-B/16 INT8 blob against 0.2 s; the map lives as long as the compiled model.
            with open(folder / COMPILED_BLOB, "rb") as handle:
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
            self._blob = ov.Tensor(np.frombuffer(mapped, dtype=np.uint8), shared_memory=True)
            return core.import_model(self._blob, target, openvino_config(target, asked, self.threads))

        if target != "CPU":
            return build(None), Loaded(None, "off")
        parts = {"version": ov.get_version(), "model": _model_identity(manifest), "cpu": cpu.describe(),
                 "config": openvino_config(target, asked, self.threads), "batch": self.batch}
        loaded = EngineCache("openvino", cache).load(parts, build, use)
        return loaded.value, loaded

    def _infer(self, chunk: np.ndarray) -> np.ndarray:
        self.request.infer({0: chunk})
        return self.request.get_tensor(self.output).data.copy()

    def run(self, crops: np.ndarray) -> np.ndarray:
        parts = _run_in_fixed_batches(self._infer, crops, self.batch)
        return _check_output(np.concatenate(parts), self.manifest, len(crops))

    def describe(self) -> str:
        threads = f", {self.threads} threads" if self.threads else ""
        return (f"OpenVINO on {self.target} (model precision {self.manifest.precision}, "
                f"inference precision {self.float_precision}{threads}), model {self.manifest.model_file}")


def compile_openvino(core, model, target: str = "CPU", precision: str = "fp32", threads: int | None = None):
    """Every OpenVINO compile of this project goes through here, so each one states its inference
    precision: the CPU plugin picks bf16 by itself on AVX512_BF16 / AMX CPUs (and f16 on ARM) unless
    told, which moves FP32 scores by up to 6e-3 (docs/design.md sec. 5.1). `precision` is ours (fp32, bf16,
    fp16); NPUs take no precision hint. LATENCY hint: THROUGHPUT with synchronous infer runs at half speed."""
    return core.compile_model(model, target, openvino_config(target, precision, threads))


def openvino_config(target: str, precision: str, threads: int | None) -> dict:
    """The properties of compile_openvino (and of importing what it compiled, from the start-up cache)."""
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if target != "NPU":
        config["INFERENCE_PRECISION_HINT"] = hardware.OPENVINO_HINTS[precision]
    if threads and target == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def openvino_precision(compiled) -> str | None:
    """The inference precision a compiled model really runs in (our name), read back from OpenVINO."""
    try:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    except Exception:  # a device without the property (NPU)
        return None
    text = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    return hardware.FROM_OPENVINO.get(text, text)
