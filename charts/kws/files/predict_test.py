"""`helm test`: POST a generated WAV to each URL; exit 1 if any answer is not a 2xx prediction.

Standard library only, so any image with python3 runs it (the chart uses the predictor image).
Usage: python3 predict_test.py URL [URL ...]
"""

import io
import json
import math
import os
import struct
import sys
import time
import urllib.error
import urllib.request
import wave


def tone_wav(seconds: float = 1.0, rate: int = 16000, freq: float = 440.0) -> bytes:
    """A mono 16-bit PCM sine tone as WAV bytes."""
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * i / rate)))
        for i in range(int(seconds * rate))
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


def post(url: str, body: bytes, timeout: float) -> tuple[int, str]:
    """Status and body of one POST (connection errors are retried twice)."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "audio/wav"}
    )
    for attempt in range(3):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            if attempt == 2:
                return 0, f"no answer: {exc}"
            time.sleep(2)
    return 0, "no answer"


def main(urls: list[str], timeout: float) -> int:
    """Check every URL; the number of failures is the exit status (capped at 1)."""
    body = tone_wav()
    failures = 0
    for url in urls:
        status, text = post(url, body, timeout)
        ok = 200 <= status < 300
        if ok:
            try:
                label = json.loads(text)["label"]
            except (ValueError, KeyError, TypeError):
                ok, text = False, f"2xx without a label: {text[:200]}"
            else:
                text = f"label {label!r}"
        print(f"{'ok  ' if ok else 'FAIL'} {status} {url}: {text[:300]}", flush=True)
        failures += not ok
    return 1 if failures or not urls else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], float(os.environ.get("TIMEOUT_SECONDS", "30"))))
