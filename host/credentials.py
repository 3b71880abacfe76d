"""The AWS credentials the host hands the enclave for its KMS requests (docs/architecture.md).

The enclave image holds no AWS credentials (it is public and measured). On
Nitro the enclave signs its KMS requests with the parent instance role's
temporary credentials, which the host fetches from the EC2 instance metadata
service (IMDSv2) and hands in with ``Enclave.SetCredentials``, again before
they expire (``host.enclave_link``). In development they may come from the
environment or a file. They give the host nothing it lacks: KMS releases data
keys only to an attested enclave (the key policy's ``Recipient`` conditions).
Still, they are never logged, printed or put into an error message.

Sources (``--kms-credentials`` of ``shardkeep-host``, :func:`source_from_spec`):

- ``env``: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optional
  ``AWS_SESSION_TOKEN`` and ``AWS_CREDENTIAL_EXPIRATION`` (ISO 8601), the
  variables botocore reads;
- ``file:PATH``: JSON in the ``credential_process`` shape (``Version`` 1,
  ``AccessKeyId``, ``SecretAccessKey``, optional ``SessionToken`` and
  ``Expiration``), read again at every fetch so an outside rotation applies;
- ``imds`` (or ``imds:URL`` for another endpoint, e.g. a test server): IMDSv2
  (EC2 User Guide, "Use the Instance Metadata Service to access instance
  metadata" and "Retrieve security credentials from instance metadata"):
  ``PUT /latest/api/token`` for a session token, then
  ``GET /latest/meta-data/iam/security-credentials/`` for the role name and
  ``GET .../security-credentials/<role>`` for the credentials.

:class:`CredentialKeeper` decides when to fetch again: shortly before the
delivered credentials expire, or every few minutes for credentials without
an expiry.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

__all__ = [
    # Functions
    "parse_expiration",
    "source_from_spec",
    # Exceptions
    "CredentialsError",
    # Types
    "AwsCredentials",
    "CredentialKeeper",
    "CredentialSource",
    "EnvironmentCredentials",
    "FileCredentials",
    "ImdsCredentials",
    # Constants
    "IMDS_ENDPOINT",
]

IMDS_ENDPOINT: Final = "http://169.254.169.254"
_IMDS_TOKEN_PATH: Final = "/latest/api/token"
_IMDS_ROLE_PATH: Final = "/latest/meta-data/iam/security-credentials/"
_IMDS_TTL_HEADER: Final = "X-aws-ec2-metadata-token-ttl-seconds"
_IMDS_TOKEN_HEADER: Final = "X-aws-ec2-metadata-token"
_IMDS_TOKEN_TTL_S: Final = 21600  # the longest IMDS allows (6 h)
_IMDS_TOKEN_SLACK_S: Final = 60.0  # renew the session token this long before it lapses
_MAX_RESPONSE_BYTES: Final = 64 * 1024
_MAX_FILE_BYTES: Final = 64 * 1024


class CredentialsError(Exception):
    """Credentials could not be obtained; the message never carries credential values."""


@dataclass(frozen=True)
class AwsCredentials:
    """One set of AWS credentials. Prints as ``<redacted>`` (with its expiry).

    Attributes:
        access_key_id: the access key id.
        secret_access_key: the secret key.
        session_token: the STS session token of temporary credentials, or None.
        expires_at: when they expire (Unix seconds), or None if unknown.
    """

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    expires_at: float | None = None

    def __post_init__(self) -> None:
        for name in ("access_key_id", "secret_access_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise CredentialsError(f"{name} must be a non-empty string")
        if self.session_token is not None and (
            not isinstance(self.session_token, str) or not self.session_token
        ):
            raise CredentialsError("session_token must be None or a non-empty string")

    def __repr__(self) -> str:
        return f"AwsCredentials(<redacted>, expires_at={self.expires_at!r})"


class CredentialSource(Protocol):
    """Where credentials come from; ``fetch`` blocks (run it in a thread)."""

    @property
    def kind(self) -> str:
        """A short name for logs: ``env``, ``file`` or ``imds``."""
        ...

    def fetch(self) -> AwsCredentials:
        """Current credentials.

        Raises:
            CredentialsError: none available.
        """
        ...


def parse_expiration(text: object) -> float:
    """An ISO 8601 timestamp with a time zone (``2026-01-01T12:00:00Z``) as Unix seconds.

    Arguments:
        text: the timestamp (as IMDS, STS and ``credential_process`` write it).

    Returns:
        Unix seconds.

    Raises:
        CredentialsError: not such a timestamp.
    """
    if not isinstance(text, str):
        raise CredentialsError("Expiration must be a string")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise CredentialsError("Expiration is not an ISO 8601 timestamp") from e
    if moment.tzinfo is None:
        raise CredentialsError("Expiration has no time zone")
    return moment.timestamp()


def _optional_string(value: object, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CredentialsError(f"{name} must be a string")
    return value


def _required_string(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise CredentialsError(f"{name} is missing")
    return value


class EnvironmentCredentials:
    """Credentials from environment variables (development; read at every fetch)."""

    kind: Final = "env"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Arguments:
        environ: the variables (``os.environ`` if None).
        """
        self._environ = os.environ if environ is None else environ

    def fetch(self) -> AwsCredentials:
        """The credentials in ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (and
        ``AWS_SESSION_TOKEN``, ``AWS_CREDENTIAL_EXPIRATION``).

        Raises:
            CredentialsError: a variable is missing or malformed.
        """
        env = self._environ
        expiration = env.get("AWS_CREDENTIAL_EXPIRATION")
        return AwsCredentials(
            _required_string(env, "AWS_ACCESS_KEY_ID"),
            _required_string(env, "AWS_SECRET_ACCESS_KEY"),
            _optional_string(env.get("AWS_SESSION_TOKEN"), "AWS_SESSION_TOKEN"),
            parse_expiration(expiration) if expiration else None,
        )


class FileCredentials:
    """Credentials from a JSON file in the ``credential_process`` shape (read at every fetch)."""

    kind: Final = "file"

    def __init__(self, path: Path) -> None:
        """Arguments:
        path: the file (keep it readable by the host's user only).
        """
        self._path = path

    def fetch(self) -> AwsCredentials:
        """The file's credentials.

        Raises:
            CredentialsError: unreadable, not JSON, or missing fields.
        """
        try:
            with self._path.open("rb") as f:
                data = f.read(_MAX_FILE_BYTES + 1)
        except OSError as e:
            raise CredentialsError(f"cannot read {self._path}: {e.strerror}") from e
        if len(data) > _MAX_FILE_BYTES:
            raise CredentialsError(f"{self._path} is larger than {_MAX_FILE_BYTES} bytes")
        try:
            fields = json.loads(data)
        except ValueError:
            # No detail and no chained cause: either could quote the file's content.
            raise CredentialsError(f"{self._path} is not JSON") from None
        if not isinstance(fields, dict) or fields.get("Version", 1) != 1:
            raise CredentialsError(f"{self._path} is not a Version 1 credentials object")
        expiration = fields.get("Expiration")
        return AwsCredentials(
            _required_string(fields, "AccessKeyId"),
            _required_string(fields, "SecretAccessKey"),
            _optional_string(fields.get("SessionToken"), "SessionToken"),
            parse_expiration(expiration) if expiration else None,
        )


class _ImdsStatus(CredentialsError):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class ImdsCredentials:
    """The instance role's credentials from the EC2 instance metadata service, IMDSv2.

    Only IMDSv2 (session-token) requests are made; launch the parents with
    IMDSv2 required (deploy/README.md §4). Proxies from the environment are
    ignored: metadata requests must never leave the instance. Not thread-safe
    (it caches the session token): one fetch at a time, as ``EnclaveLink`` does.
    """

    kind: Final = "imds"

    def __init__(
        self,
        endpoint: str = IMDS_ENDPOINT,
        *,
        role: str | None = None,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Arguments:
        endpoint: the metadata service's base URL (a local server in tests).
        role: the role name; None asks IMDS for the instance profile's role.
        timeout_s: per-request timeout.
        clock: the current time in Unix seconds.
        """
        if not endpoint.startswith("http://"):
            raise CredentialsError("the IMDS endpoint must be an http:// URL")
        self._endpoint = endpoint.rstrip("/")
        self._role = role
        self._timeout_s = timeout_s
        self._clock = clock
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._token: str | None = None
        self._token_expires = 0.0

    def _request(self, method: str, path: str, headers: Mapping[str, str]) -> bytes:
        request = urllib.request.Request(
            self._endpoint + path, method=method, headers=dict(headers)
        )
        try:
            with self._opener.open(request, timeout=self._timeout_s) as response:
                body: bytes = response.read(_MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as e:
            e.close()
            raise _ImdsStatus(e.code, f"IMDS {method} {path}: HTTP {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            raise CredentialsError(f"IMDS {method} {path}: unreachable ({e})") from e
        if len(body) > _MAX_RESPONSE_BYTES:
            raise CredentialsError(f"IMDS {method} {path}: response too large")
        return body

    def _session_token(self) -> str:
        now = self._clock()
        if self._token is None or now >= self._token_expires:
            body = self._request(
                "PUT", _IMDS_TOKEN_PATH, {_IMDS_TTL_HEADER: str(_IMDS_TOKEN_TTL_S)}
            )
            token = body.decode("ascii", "replace").strip()
            if not token:
                raise CredentialsError("IMDS returned an empty session token")
            self._token = token
            self._token_expires = now + _IMDS_TOKEN_TTL_S - _IMDS_TOKEN_SLACK_S
        return self._token

    def _get(self, path: str) -> bytes:
        try:
            return self._request("GET", path, {_IMDS_TOKEN_HEADER: self._session_token()})
        except _ImdsStatus as e:
            if e.status != 401:
                raise
            # The session token lapsed or IMDS restarted: one retry with a new one.
            self._token = None
            return self._request("GET", path, {_IMDS_TOKEN_HEADER: self._session_token()})

    def fetch(self) -> AwsCredentials:
        """The instance role's current temporary credentials.

        Raises:
            CredentialsError: IMDS unreachable, no instance profile, or a
                malformed answer.
        """
        role = self._role
        if role is None:
            listing = self._get(_IMDS_ROLE_PATH).decode("utf-8", "replace").split()
            if not listing:
                raise CredentialsError("the instance has no IAM role (instance profile)")
            role = listing[0]
        if not role or "/" in role:
            raise CredentialsError("IMDS returned an invalid role name")
        body = self._get(_IMDS_ROLE_PATH + urllib.parse.quote(role))
        try:
            fields = json.loads(body)
        except ValueError:
            raise CredentialsError("IMDS credentials are not JSON") from None
        if not isinstance(fields, dict):
            raise CredentialsError("IMDS credentials are not a JSON object")
        if fields.get("Code") != "Success":
            code = fields.get("Code")
            raise CredentialsError(f"IMDS credentials status is {code!r}, not 'Success'")
        return AwsCredentials(
            _required_string(fields, "AccessKeyId"),
            _required_string(fields, "SecretAccessKey"),
            _required_string(fields, "Token"),
            parse_expiration(fields.get("Expiration")),
        )


def source_from_spec(spec: str) -> CredentialSource | None:
    """The source a ``--kms-credentials`` value names.

    Arguments:
        spec: ``none``, ``env``, ``file:PATH``, ``imds`` or ``imds:http://HOST:PORT``.

    Returns:
        The source, or None for ``none`` (the enclave uses its own
        development credentials, or has none).

    Raises:
        CredentialsError: an unknown spec.
    """
    if spec == "none":
        return None
    if spec == "env":
        return EnvironmentCredentials()
    if spec.startswith("file:") and len(spec) > len("file:"):
        return FileCredentials(Path(spec.removeprefix("file:")))
    if spec == "imds":
        return ImdsCredentials()
    if spec.startswith("imds:http://"):
        return ImdsCredentials(spec.removeprefix("imds:"))
    raise CredentialsError("use none, env, file:PATH, imds or imds:http://HOST:PORT")


class CredentialKeeper:
    """When to fetch and hand over credentials again (the refresh policy, no I/O of its own).

    Fetch again when none were delivered yet (or the enclave lost them:
    :meth:`forget`), when the delivered ones expire within ``margin_s``, or,
    for credentials without an expiry, ``recheck_s`` after the last delivery.
    Inside the margin, fetch at most every ``min_interval_s`` (IMDS serves new
    credentials some minutes before the old ones expire, not necessarily
    ``margin_s`` before).
    """

    def __init__(
        self,
        source: CredentialSource,
        *,
        margin_s: float = 900.0,
        recheck_s: float = 900.0,
        min_interval_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Arguments:
        source: where credentials come from.
        margin_s: refresh this long before expiry; longer than the longest
            ceremony, so none runs out of credentials midway.
        recheck_s: re-read credentials without an expiry this often.
        min_interval_s: the shortest time between two fetches inside the margin.
        clock: the current time in Unix seconds.
        """
        self.source = source
        self._margin_s = margin_s
        self._recheck_s = recheck_s
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._delivered_at: float | None = None
        self._expires_at: float | None = None

    @property
    def expires_at(self) -> float | None:
        """The delivered credentials' expiry (Unix seconds), None if unknown or none."""
        return self._expires_at

    def due(self) -> bool:
        """Whether to fetch and deliver credentials now."""
        now = self._clock()
        delivered = self._delivered_at
        if delivered is None:
            return True
        if self._expires_at is None:
            return now >= delivered + self._recheck_s
        if now >= self._expires_at:
            return True
        return now >= self._expires_at - self._margin_s and now >= delivered + self._min_interval_s

    def delivered(self, credentials: AwsCredentials) -> None:
        """Record that ``credentials`` reached the enclave."""
        self._delivered_at = self._clock()
        self._expires_at = credentials.expires_at

    def forget(self) -> None:
        """The enclave lost its credentials (it restarted): deliver again."""
        self._delivered_at = None
        self._expires_at = None
