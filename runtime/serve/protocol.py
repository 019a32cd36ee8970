"""The Open Inference Protocol (KServe v2, as Triton and OpenVINO Model Server speak it) over HTTP:
inference requests read and responses written, without any web framework, so `gamma-edge serve` and
the Ray Serve deployment share it.

A request is a JSON header, optionally followed by the binary extension's raw tensor bytes
(`Inference-Header-Content-Length` gives the header's length; each binary input says its
`binary_data_size`). BYTES tensors in binary form are elements each prefixed by a 4-byte little-endian
length, which is how clients send encoded JPEG / PNG files (OpenVINO Model Server's binary inputs).
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from contract.errors import UserError

HEADER_LENGTH = "Inference-Header-Content-Length"
# The protocol's datatype names -> numpy (BYTES: a list of bytes objects).
DATATYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": object,
}
# Nested JSON input data is bounded too: beyond this many elements a tensor belongs in binary form.
MAX_JSON_ELEMENTS = 64 * 224 * 224 * 3


class RequestRefused(UserError):
    """A request the server answers with `status` and this one sentence (the server keeps serving)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: object                     # numpy array; a list of bytes for BYTES


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    binary_outputs: dict[str, bool]  # output name -> send in binary; empty: all, per `binary_default`
    binary_default: bool = False
    parameters: dict = field(default_factory=dict)


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent, with gzip / deflate undone (tritonclient's request compression), never past `limit`."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise RequestRefused(415, f"Content-Encoding '{encoding}' is not supported; send gzip, deflate or none")
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise RequestRefused(400, f"the {encoding} request body is corrupt") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise RequestRefused(413, f"the request body inflates past the limit of {limit} bytes")
    return data


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """An inference request (JSON, or JSON + binary tensors), checked; RequestRefused(400) otherwise."""
    if header_length is None:
        header, binary = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise RequestRefused(400, f"{HEADER_LENGTH} must be a number of bytes, not {header_length!r}") from None
        if not 0 < length <= len(body):
            raise RequestRefused(400, f"{HEADER_LENGTH} {length} does not fit the {len(body)}-byte body")
        header, binary = body[:length], memoryview(body)[length:]
    try:
        document = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestRefused(400, f"the inference request is not valid JSON ({exc}); "
                                  f"binary tensors need the {HEADER_LENGTH} header") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise RequestRefused(400, "the inference request needs a non-empty 'inputs' list")
    inputs, offset = [], 0
    for entry in document["inputs"]:
        tensor, used = _read_input(entry, binary, offset)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise RequestRefused(400, f"the body holds {len(binary) - offset} bytes that no input's "
                                  f"binary_data_size claims")
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestRefused(400, "the request's 'parameters' must be an object")
    outputs = {}
    for output in document.get("outputs") or []:
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise RequestRefused(400, "each requested output needs a 'name'")
        outputs[output["name"]] = bool((output.get("parameters") or {}).get("binary_data", False))
    request_id = document.get("id")
    return InferRequest(None if request_id is None else str(request_id), inputs, outputs,
                        bool(parameters.get("binary_data_output", False)), parameters)


def _read_input(entry, binary: memoryview | bytes, offset: int) -> tuple[Tensor, int]:
    """One input of the request and the binary bytes it used."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise RequestRefused(400, "each input needs a 'name', a 'datatype' and a 'shape'")
    name, datatype, shape = entry["name"], entry.get("datatype"), entry.get("shape")
    if datatype not in DATATYPES:
        raise RequestRefused(400, f"input '{name}' has datatype {datatype!r}, which the protocol does not know")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise RequestRefused(400, f"input '{name}' needs a 'shape': a list of non-negative integers")
    count = math.prod(shape)
    size = (entry.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise RequestRefused(400, f"input '{name}' claims {size} binary bytes that the body does not hold")
        raw = binary[offset:offset + size]
        data = _bytes_elements(name, raw, count) if datatype == "BYTES" else _fixed_elements(name, datatype, raw, count)
        return Tensor(name, datatype, shape, data), size
    if "data" not in entry:
        raise RequestRefused(400, f"input '{name}' has neither 'data' nor a binary_data_size")
    return Tensor(name, datatype, shape, _json_elements(name, datatype, entry["data"], count)), 0


def _fixed_elements(name: str, datatype: str, raw, count: int) -> np.ndarray:
    dtype = np.dtype(DATATYPES[datatype])
    if len(raw) != count * dtype.itemsize:
        raise RequestRefused(400, f"input '{name}' is {len(raw)} bytes, but its shape and {datatype} need "
                                  f"{count * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype)


def _bytes_elements(name: str, raw, count: int) -> list[bytes]:
    """BYTES in binary form: each element a 4-byte little-endian length, then that many bytes."""
    elements, position = [], 0
    while position < len(raw):
        if position + 4 > len(raw):
            raise RequestRefused(400, f"input '{name}' ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", raw, position)
        position += 4
        if position + length > len(raw):
            raise RequestRefused(400, f"input '{name}' declares a {length}-byte element that the body does not hold")
        elements.append(bytes(raw[position:position + length]))
        position += length
    if len(elements) != count:
        raise RequestRefused(400, f"input '{name}' holds {len(elements)} elements, but its shape says {count}")
    return elements


def _json_elements(name: str, datatype: str, data, count: int):
    if count > MAX_JSON_ELEMENTS:
        raise RequestRefused(413, f"input '{name}' has {count} elements; send tensors this large in binary form "
                                  f"({HEADER_LENGTH})")
    if datatype == "BYTES":
        flat = list(_flatten(data))
        if not all(isinstance(item, str) for item in flat):
            raise RequestRefused(400, f"BYTES input '{name}' in JSON must be strings")
        elements = [item.encode("utf-8") for item in flat]
    else:
        try:
            values = np.asarray(data, dtype=np.float64 if datatype.startswith("FP") else np.int64).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise RequestRefused(400, f"input '{name}' data is not a flat or nested list of numbers") from None
        dtype = np.dtype(DATATYPES[datatype])
        if dtype.kind in "iu":
            limits = np.iinfo(dtype)
            if values.size and (values.min() < limits.min or values.max() > limits.max):
                raise RequestRefused(400, f"input '{name}' holds values outside the {datatype} range "
                                          f"{limits.min}..{limits.max}")
        elements = values.astype(dtype)
    if len(elements) != count:
        raise RequestRefused(400, f"input '{name}' holds {len(elements)} values, but its shape says {count}")
    return elements


def _flatten(data):
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def infer_response(model: str, version: str, request: InferRequest, outputs: dict[str, np.ndarray],
                   parameters: dict | None = None) -> tuple[bytes, dict[str, str]]:
    """(body, headers): the outputs asked for (all when none were), each in JSON or binary as asked."""
    wanted = request.binary_outputs or {name: request.binary_default for name in outputs}
    unknown = [name for name in wanted if name not in outputs]
    if unknown:
        raise RequestRefused(400, f"output '{unknown[0]}' is not an output of model '{model}'; "
                                  f"it has {', '.join(outputs)}")
    entries, binary = [], []
    for name, as_binary in wanted.items():
        array = outputs[name]
        entry = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if as_binary:
            raw = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    document = {"model_name": model, "model_version": version, "outputs": entries}
    if request.id is not None:
        document["id"] = request.id
    if parameters:
        document["parameters"] = parameters
    header = json.dumps(document).encode()
    if not binary:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(binary), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def datatype_of(array: np.ndarray) -> str:
    for name, dtype in DATATYPES.items():
        if dtype is not object and array.dtype == np.dtype(dtype):
            return name
    raise TypeError(f"no protocol datatype for {array.dtype}")


def error_body(message: str) -> bytes:
    """The protocol's error answer (Triton's): {"error": "one sentence"}."""
    return json.dumps({"error": message}).encode()
