"""One file field out of a buffered multipart/form-data body, without a streaming parser.

/predict takes one small upload (≤ 1 MB, already read whole by the body-size limit), and
Starlette's general form parser (python-multipart, a spooled temporary file per upload)
cost a tenth of a request's non-model time. This reads the common case straight from the
bytes; anything it does not recognise returns None, and the caller falls back to the
general parser, so no valid request is refused here.
"""

from __future__ import annotations

CRLF = b"\r\n"
HEADER_END = b"\r\n\r\n"


def boundary_of(content_type: str) -> bytes | None:
    """The boundary parameter of a multipart Content-Type header, or None."""
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value.encode("latin-1") if 0 < len(value) <= 70 else None
    return None


def file_field(body: bytes, content_type: str, name: str) -> bytes | None:
    """The content of the file uploaded as form field `name`, when that file is the body's
    only part; None for anything else (other or more parts, encodings, malformed bodies)."""
    boundary = boundary_of(content_type)
    if boundary is None:
        return None
    parts = (CRLF + body).split(CRLF + b"--" + boundary)
    if len(parts) != 3 or not parts[2].startswith(b"--"):
        return None  # not exactly one part, or no closing delimiter (truncated)
    part = parts[1]
    line_end = part.find(CRLF)
    if line_end < 0 or part[:line_end].strip(b" \t"):
        return None  # a delimiter must end its line (transport padding aside)
    headers, separator, content = part[line_end + 2 :].partition(HEADER_END)
    if not separator or headers.startswith(CRLF) or _file_field_name(headers) != name:
        return None
    return content


def _file_field_name(headers: bytes) -> str | None:
    """The field name of a file part's headers; None if not a plainly named file upload."""
    field = None
    for line in headers.split(CRLF):
        key, colon, value = line.partition(b":")
        if not colon:
            return None
        key = key.strip().lower()
        if key == b"content-transfer-encoding":
            return None
        if key == b"content-disposition":
            field = _disposition_file_name(value.decode("latin-1"))
            if field is None:
                return None
    return field


def _disposition_file_name(value: str) -> str | None:
    """The name of a `form-data` Content-Disposition with a filename (plain quoting only)."""
    kind, *parameters = value.split(";")
    if kind.strip().lower() != "form-data":
        return None
    options: dict[str, str] = {}
    for parameter in parameters:
        key, _, raw = parameter.strip().partition("=")
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
        options.setdefault(key.strip().lower(), raw)
    field = options.get("name")
    if field is None or "filename" not in options or any(c in field for c in '"\\%'):
        return None  # not a file, or a name escaped or encoded: the general parser's rules
    return field
