"""The /predict multipart fast path reads exactly the uploaded file, and declines the rest.

Bodies come from httpx's real multipart encoder (what requests, curl -F and browsers send
looks the same); where the fast path declines, Starlette's general parser takes over.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from starlette.requests import Request

from kws.serving.multipart import boundary_of, file_field


def encoded(files: dict, data: dict | None = None) -> tuple[bytes, str]:
    """Body and Content-Type of a multipart request, as httpx encodes it."""
    request = httpx.Request("POST", "http://kws/predict", files=files, data=data)
    return request.read(), request.headers["content-type"]


def general_parser(body: bytes, content_type: str, name: str) -> bytes | None:
    """What Starlette's form parser (python-multipart) finds in the field, or None."""

    async def parse() -> bytes | None:
        scope = {"type": "http", "method": "POST", "headers": [
            (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())
        ]}  # fmt: skip
        request = Request(scope)
        request._body = body
        upload = (await request.form()).get(name)
        return None if upload is None or isinstance(upload, str) else await upload.read()

    return asyncio.run(parse())


TRICKY_CONTENTS = [
    b"",
    b"RIFF\r\n--\r\n\r\n--",
    b"\r\n\r\n\r\n",
    b"--\r\n",
    b"x" * 70_000,
]


@pytest.mark.parametrize("seed", range(25))
def test_a_file_upload_comes_back_byte_for_byte_as_the_general_parser_reads_it(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    content = rng.integers(0, 256, int(rng.integers(1, 50_000)), dtype=np.uint8).tobytes()
    body, content_type = encoded({"file": ("clip.wav", content, "audio/wav")})
    assert file_field(body, content_type, "file") == content
    assert general_parser(body, content_type, "file") == content


@pytest.mark.parametrize("content", TRICKY_CONTENTS, ids=range(len(TRICKY_CONTENTS)))
def test_line_breaks_and_dashes_inside_the_file_are_content(content: bytes) -> None:
    body, content_type = encoded({"file": ("a.wav", content)})
    assert file_field(body, content_type, "file") == content


def test_the_boundary_of_the_content_type_quoted_or_not() -> None:
    assert boundary_of("multipart/form-data; boundary=abc") == b"abc"
    assert boundary_of('multipart/form-data; charset=utf-8; BOUNDARY="a b"') == b"a b"
    assert boundary_of("multipart/form-data") is None
    assert boundary_of("multipart/form-data; boundary=" + "x" * 71) is None  # RFC 2046: ≤ 70


def declined_bodies() -> dict[str, tuple[bytes, str]]:
    """Requests the fast path leaves to the general parser."""
    one, content_type = encoded({"file": ("a.wav", b"RIFF-one")})
    two_files = encoded({"file": ("a.wav", b"RIFF"), "other": ("b.wav", b"RIFF")})
    with_a_field = encoded({"file": ("a.wav", b"RIFF")}, data={"note": "hi"})
    not_a_file = encoded({"file": (None, b"RIFF")})  # a plain form field, no filename
    other_name = encoded({"audio": ("a.wav", b"RIFF")})
    return {
        "two files": two_files,
        "a file and a field": with_a_field,
        "a field, not a file": not_a_file,
        "another field name": other_name,
        "truncated": (one[: len(one) - 10], content_type),
        "no boundary": (one, "multipart/form-data"),
        "another boundary": (one, "multipart/form-data; boundary=nothere"),
        "transfer-encoded": (
            one.replace(b"Content-Type:", b"Content-Transfer-Encoding: base64\r\nContent-Type:"),
            content_type,
        ),
        "escaped name": (one.replace(b'name="file"', b'name="fi\\"le"'), content_type),
    }


@pytest.mark.parametrize("case", list(declined_bodies()))
def test_anything_but_one_plain_file_part_is_left_to_the_general_parser(case: str) -> None:
    body, content_type = declined_bodies()[case]
    assert file_field(body, content_type, "file") is None
