"""KServe's DataPlane, reading binary BYTES tensors as bytes (WAV files are not UTF-8)."""

from __future__ import annotations

import struct
from typing import Any

import orjson
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import (
    InferInput,
    InferRequest,
    RequestedOutput,
    deserialize_bytes_tensor,
)

INFERENCE_HEADER = "inference-header-content-length"
_NUMERIC = {"FP32", "FP64", "FP16", "INT16", "INT32"}


class KwsDataPlane(DataPlane):
    """KServe 0.21 decodes binary BYTES inputs as UTF-8 text (and fails on WAV); keep bytes."""

    def decode_inference_request(self, body: Any, headers: dict, model_name: str) -> InferRequest:
        """Binary-extension requests parsed here; JSON requests by KServe."""
        if not isinstance(body, bytes):
            return super().decode_inference_request(body, headers, model_name)
        try:
            return parse_binary_request(body, headers, model_name)
        except InvalidInput:
            raise
        except (KeyError, TypeError, ValueError, IndexError, struct.error) as exc:
            raise InvalidInput(f"malformed binary inference request ({exc})") from exc


def parse_binary_request(body: bytes, headers: dict, model_name: str) -> InferRequest:
    """An Open Inference Protocol request with the binary tensor extension."""
    header = headers.get(INFERENCE_HEADER)
    if header is None:
        raise InvalidInput(f"binary inference request without the {INFERENCE_HEADER!r} header")
    json_length = int(header)
    if not 0 < json_length <= len(body):
        raise InvalidInput(f"{INFERENCE_HEADER} {json_length} does not fit the body")
    try:
        spec = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the JSON header of the request is not JSON ({exc})") from exc
    offset = json_length
    inputs = []
    for item in spec["inputs"]:
        tensor = InferInput(
            name=item["name"],
            shape=item["shape"],
            datatype=item["datatype"],
            parameters=item.get("parameters"),
        )
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is None:
            tensor.data = item["data"]
        else:
            raw = body[offset : offset + int(size)]
            if len(raw) != int(size):
                raise InvalidInput(f"input {tensor.name!r}: binary data is truncated")
            offset += int(size)
            if tensor.datatype == "BYTES":
                tensor.data = list(deserialize_bytes_tensor(raw))
            elif tensor.datatype in _NUMERIC:
                tensor._raw_data = raw  # as_numpy() reads it with np.frombuffer
            else:
                raise InvalidInput(f"input {tensor.name!r}: datatype {tensor.datatype} unsupported")
        inputs.append(tensor)
    outputs = [
        RequestedOutput(name=o["name"], parameters=o.get("parameters"))
        for o in spec.get("outputs") or []
    ] or None
    return InferRequest(
        model_name=model_name,
        request_id=spec.get("id"),
        parameters=spec.get("parameters"),
        infer_inputs=inputs,
        request_outputs=outputs,
    )
