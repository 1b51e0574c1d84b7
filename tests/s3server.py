"""A real S3 API on 127.0.0.1 for tests: moto's server mode (a threaded HTTP server speaking the S3 protocol).

Use the ``s3`` fixture (``from tests.s3server import s3, s3_endpoint  # noqa: F401``): it yields an
:class:`S3` with a fresh bucket per test and sets the AWS environment variables (dummy credentials, the
endpoint) that boto3, s3fs and DVC's S3 remote read, so code under test needs no test-only arguments.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

moto_server = pytest.importorskip("moto.server", reason="moto[server] is a test extra (make test installs it)")

#: Dummy credentials: moto accepts any; real ones must never be needed by a test.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
_BUCKETS = itertools.count()


@dataclass(frozen=True)
class S3:
    """One test's view of the server: ``endpoint`` (``http://127.0.0.1:<port>``) and its own ``bucket``."""

    endpoint: str
    bucket: str

    def url(self, *parts: str) -> str:
        """``s3://<bucket>/<parts...>``."""
        return "/".join([f"s3://{self.bucket}", *parts])

    def client(self):
        """A boto3 S3 client on the server."""
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One moto S3 server for the test session, on a free port of 127.0.0.1."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket on the session's server, with the environment pointing boto3/s3fs/DVC at it."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # boto3 >= 1.28 and s3fs honour it
    bucket = S3(s3_endpoint, f"mmdata-test-{next(_BUCKETS)}")
    bucket.client().create_bucket(Bucket=bucket.bucket)
    return bucket
