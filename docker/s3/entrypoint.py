"""Start SeaweedFS (`weed mini`: S3 API on 8333) with one S3 identity from the environment.

AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY become the only identity allowed in (an S3
config file written at start, readable by this user only), and the buckets named in
S3_BUCKETS (comma-separated) are created on start if missing. Extra arguments go to weed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DATA_DIR = Path(os.environ.get("S3_DATA_DIR", "/data"))
CONFIG = Path(os.environ.get("S3_CONFIG_FILE", "/tmp/seaweedfs-s3.json"))
MIN_SECRET_LENGTH = 8


def identity_config(access_key: str, secret_key: str) -> dict[str, object]:
    """SeaweedFS's S3 identity file: one admin identity (read, write, list, buckets)."""
    return {
        "identities": [
            {
                "name": "kws",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


def main() -> None:
    """Write the identity file, then become weed."""
    access_key = os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not access_key or len(secret_key) < MIN_SECRET_LENGTH:
        sys.exit(
            "error: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            f"(at least {MIN_SECRET_LENGTH} characters): the store accepts no anonymous access"
        )
    CONFIG.unlink(missing_ok=True)
    fd = os.open(CONFIG, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(identity_config(access_key, secret_key), out)
    buckets = os.environ.get("S3_BUCKETS", "")
    weed = [
        "weed",
        "mini",
        f"-dir={DATA_DIR}",
        "-ip=127.0.0.1",  # every component runs in this container
        "-ip.bind=0.0.0.0",
        f"-s3.config={CONFIG}",
        "-master.telemetry=false",  # offline, and nothing leaves the stack
        "-webdav=false",
        "-admin.ui=false",
        *([f"-bucket={buckets}"] if buckets else []),
        *sys.argv[1:],
    ]
    sys.stdout.flush()
    os.execvp(weed[0], weed)


if __name__ == "__main__":
    main()
