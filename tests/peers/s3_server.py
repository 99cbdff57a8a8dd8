"""A real S3-protocol server on 127.0.0.1 (moto's server mode), for backup destination tests."""

from __future__ import annotations

import logging
from typing import Any

from moto.server import ThreadedMotoServer

logging.getLogger("werkzeug").setLevel(logging.ERROR)

ACCESS_KEY = "memvault-test"
SECRET_KEY = "memvault-test-secret"


class S3Server:
    """`with S3Server() as s3:` serves S3 at s3.url; `s3.stop()` simulates an outage."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""
        self.port = 0

    def start(self) -> S3Server:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.port = port
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def settings_overrides(self) -> dict[str, Any]:
        return {"s3_endpoint_url": self.url, "s3_access_key_id": ACCESS_KEY,
                "s3_secret_access_key": SECRET_KEY}

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
