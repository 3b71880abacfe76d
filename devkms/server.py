"""HTTP front of the KMS stand-in: the AWS JSON 1.1 protocol over HTTP/1.1.

What botocore sends for a KMS call (and what this server requires):

- ``POST /`` with ``Content-Type: application/x-amz-json-1.1``;
- ``X-Amz-Target: TrentService.<Operation>``;
- a SigV4 ``Authorization`` header, ``AWS4-HMAC-SHA256 Credential=<key id>/<date>/
  <region>/kms/aws4_request, SignedHeaders=…, Signature=<64 hex>``, and an
  ``X-Amz-Date``. Credentials are dummies here: the shape is required, the
  signature is not verified (the stand-in authorises by attestation only);
- a JSON object body, blobs in base64.

Errors go back as AWS does: HTTP 400 (500 for our own faults) with
``{"__type": "<ErrorCode>", "message": "…"}`` and an ``x-amzn-RequestId``.
The server binds 127.0.0.1 (or another loopback address) and logs the
operation, status and duration, never a body.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from devkms.service import KmsFault, KmsService

__all__ = [
    # Functions
    "make_server",
    "serve_in_background",
    # Types
    "KmsHttpServer",
    # Constants
    "CONTENT_TYPE",
    "TARGET_PREFIX",
]

CONTENT_TYPE: Final = "application/x-amz-json-1.1"
TARGET_PREFIX: Final = "TrentService."
_MAX_BODY: Final = 1024 * 1024  # an attestation document is at most 256 KiB before base64
_SIGV4_AUTHORIZATION: Final = re.compile(
    r"AWS4-HMAC-SHA256 "
    r"Credential=[^/\s,]+/\d{8}/[a-z0-9-]+/kms/aws4_request,\s*"
    r"SignedHeaders=[a-z0-9-]+(;[a-z0-9-]+)*,\s*"
    r"Signature=[0-9a-f]{64}"
)
_AMZ_DATE: Final = re.compile(r"\d{8}T\d{6}Z")

_log = logging.getLogger("devkms.http")


class KmsHttpServer(ThreadingHTTPServer):
    """A threading HTTP server that carries a :class:`KmsService`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: KmsService) -> None:
        self.service = service
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: KmsHttpServer
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    # Headers and body go out in two writes; with Nagle on, the body waits
    # for the client's delayed ACK (~40 ms per request on Linux).
    disable_nagle_algorithm = True
    server_version = "devkms"
    sys_version = ""

    def do_POST(self) -> None:
        started = time.perf_counter()
        operation = "-"
        try:
            body = self._read_body()
            operation = self._operation()
            self._check_signature_shape()
            request = self._decode(body)
            status, response = 200, self.server.service.handle(operation, request)
        except KmsFault as fault:
            status = fault.status
            response = {"__type": fault.error_type, "message": str(fault)}
        except Exception:
            _log.exception("internal error in %s", operation)
            status = 500
            response = {"__type": "KMSInternalException", "message": "internal error"}
        self._send(status, response)
        _log.info("%s %d %.1fms", operation, status, (time.perf_counter() - started) * 1000)

    def do_GET(self) -> None:
        self._reject_method()

    def do_PUT(self) -> None:
        self._reject_method()

    def _reject_method(self) -> None:
        self.close_connection = True
        self._send(405, {"__type": "UnknownOperationException", "message": "use POST"})

    def _read_body(self) -> bytes:
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self.close_connection = True
            raise KmsFault("SerializationException", "Content-Length is required")
        length = int(length_header)
        if length > _MAX_BODY:
            self.close_connection = True
            raise KmsFault("ValidationException", "request body too large")
        return self.rfile.read(length)

    def _operation(self) -> str:
        if self.path != "/":
            raise KmsFault("UnknownOperationException", "POST to /")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != CONTENT_TYPE:
            raise KmsFault("SerializationException", f"Content-Type must be {CONTENT_TYPE}")
        target = self.headers.get("X-Amz-Target") or ""
        if not target.startswith(TARGET_PREFIX):
            raise KmsFault("UnknownOperationException", "X-Amz-Target must be TrentService.*")
        return target.removeprefix(TARGET_PREFIX)

    def _check_signature_shape(self) -> None:
        authorization = self.headers.get("Authorization")
        if not authorization:
            raise KmsFault("MissingAuthenticationTokenException", "Missing Authentication Token")
        if not _SIGV4_AUTHORIZATION.fullmatch(authorization.strip()):
            raise KmsFault(
                "IncompleteSignatureException", "Authorization is not a SigV4 header for kms"
            )
        if not _AMZ_DATE.fullmatch(self.headers.get("X-Amz-Date") or ""):
            raise KmsFault("IncompleteSignatureException", "X-Amz-Date is missing or malformed")

    @staticmethod
    def _decode(body: bytes) -> dict[str, object]:
        try:
            request = json.loads(body or b"{}")
        except ValueError as e:
            raise KmsFault("SerializationException", "the body is not JSON") from e
        if not isinstance(request, dict):
            raise KmsFault("SerializationException", "the body is not a JSON object")
        return request

    def _send(self, status: int, response: dict[str, object]) -> None:
        payload = json.dumps(response).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        # http.server would print request lines to stderr; we log in do_POST.
        pass


def make_server(
    service: KmsService, host: str = "127.0.0.1", port: int = 0
) -> tuple[KmsHttpServer, int]:
    """Bind the stand-in (not yet serving).

    Arguments:
        service: the operations to serve.
        host: a loopback address to bind.
        port: the port, 0 for any free one.

    Returns:
        ``(server, bound_port)``; call ``serve_forever()`` and, to stop,
        ``shutdown()`` then ``server_close()``.
    """
    server = KmsHttpServer((host, port), service)
    return server, server.server_address[1]


def serve_in_background(server: KmsHttpServer) -> threading.Thread:
    """Run ``server.serve_forever()`` in a daemon thread and return the thread."""
    thread = threading.Thread(target=server.serve_forever, name="devkms", daemon=True)
    thread.start()
    return thread
