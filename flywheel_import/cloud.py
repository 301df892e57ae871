"""Objects in S3, Google Cloud Storage and Azure Blob Storage as input files.

One library does the talking: obstore (Rust's ``object_store``), imported only once a URL is
given, so a run over local files never pays for it (README, "Choice of cloud storage
library"). Credentials come from each provider's usual chain, never from the mapping file.
Objects are read in ranged requests of :data:`CHUNK` bytes: memory stays bounded, no request
stays open for the hours a slow run may spend on one file, and each carries the listed ETag
(``If-Match``) so an object replaced midway fails loudly instead of mixing two versions.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from .errors import InputError

if TYPE_CHECKING:
    from obstore import GetOptions

SCHEMES = ("s3", "gs", "az", "abfs", "abfss")
CHUNK = 8 << 20
_MAGIC = re.compile(r"[*?\[]")
# Short enough that a wrong endpoint is reported within seconds; an 8 MiB range must arrive
# within the request timeout (about 70 kB/s).
_RETRY = {"max_retries": 5}
_CLIENT = {"connect_timeout": "10s", "timeout": "120s"}
_ENDPOINT_ENV = {
    "s3": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"),
    "gs": ("GOOGLE_BASE_URL",),
    "az": ("AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT"),
}
_INSTALL = "pip install 'flywheel-import[cloud]'"


@dataclass(frozen=True, slots=True)
class CloudObject:
    """One listed object: where it is and the metadata that identifies this version of it."""

    url: str
    key: str
    size: int
    etag: str | None
    last_modified: str  # ISO 8601, UTC
    store: Any = field(default=None, compare=False, hash=False, repr=False)

    def fingerprint(self) -> dict[str, str | int]:
        return {
            "url": self.url,
            "etag": self.etag or "",
            "size": self.size,
            "last_modified": self.last_modified,
        }


def is_url(text: str) -> bool:
    """Is ``text`` an object-store URL this module reads (``s3://``, ``gs://``, ``az://``...)?"""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def split_url(url: str) -> tuple[str, str]:
    """``scheme://bucket/key`` -> (``scheme://bucket``, ``key``), the key taken literally.

    Not ``urlsplit``: ``?`` and ``#`` are glob and key characters here, not a query or a
    fragment, and ``%20`` is three characters of a key, as the providers' own tools read it.
    """
    scheme, _, rest = url.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InputError(f"{url}: no bucket or container in this URL")
    if _MAGIC.search(bucket):
        raise InputError(f"{url}: a bucket or container name cannot be a pattern")
    return f"{scheme.lower()}://{bucket}", key


def has_magic(text: str) -> bool:
    return _MAGIC.search(text) is not None


# --- discovery -------------------------------------------------------------------------------


def expand_url(pattern: str, *, wanted: Callable[[str], bool] | None = None) -> list[CloudObject]:
    """The objects a URL names: one object, every match of a glob, or a folder's files.

    Sorted segment by segment as local paths are. ``wanted`` (a name -> bool) picks the files
    of a folder; a folder or glob that yields nothing is an error naming the URL.
    """
    root, key = split_url(pattern)
    store = make_store(root, shown=pattern)
    if has_magic(key):
        rx = glob_regex(key)
        found = [o for o in _list(store, root, _static_prefix(key), pattern) if rx.fullmatch(o.key)]
        if not found:
            raise InputError(f"{pattern}: no files match this pattern")
        return _sorted(found)
    if key and not key.endswith("/"):
        try:
            return [_head(store, root, key)]
        except FileNotFoundError:
            pass  # perhaps a folder: listed below
        except Exception as e:
            raise describe(e, pattern) from None
    prefix = key.rstrip("/")
    listed = list(_list(store, root, prefix, pattern))
    if not listed and key and not key.endswith("/"):
        raise InputError(f"{pattern}: no such object")
    found = [
        o
        for o in listed
        if not o.key.endswith("/")
        and (wanted is None or wanted(o.key))
        and not any(p.startswith(".") for p in o.key[len(prefix) :].split("/"))
    ]
    if not found:
        raise InputError(f"{pattern}: folder holds no .csv/.tsv/.parquet/.ndjson files")
    return _sorted(found)


def _sorted(objs: list[CloudObject]) -> list[CloudObject]:
    unique = {o.url: o for o in objs}
    return sorted(unique.values(), key=lambda o: PurePosixPath(o.key).parts)


def _static_prefix(key: str) -> str:
    """The folders before the first pattern segment: what to list (listing is by folder)."""
    parts = key.split("/")
    static = []
    for part in parts[:-1]:
        if has_magic(part):
            break
        static.append(part)
    return "/".join(static)


def glob_regex(key: str) -> re.Pattern[str]:
    """A key pattern as a regex with the shell's (and ``glob``'s) rules.

    ``*``, ``?`` and ``[...]`` stay within one ``/`` segment and match no leading dot (hidden
    names are named explicitly); ``**`` as a whole segment spans any number of folders.
    """
    out: list[str] = []
    parts = key.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(r"(?:[^/.][^/]*(?:/[^/.][^/]*)*)?" if last else r"(?:[^/.][^/]*/)*")
            continue
        if has_magic(part) and not part.startswith("."):
            out.append(r"(?!\.)")
        out.append(_segment_regex(part))
        if not last:
            out.append("/")
    return re.compile("".join(out), re.DOTALL)


def _segment_regex(part: str) -> str:
    out: list[str] = []
    i, n = 0, len(part)
    while i < n:
        c = part[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i
            if j < n and part[j] in "!^":
                j += 1
            if j < n and part[j] == "]":
                j += 1
            while j < n and part[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal "[", as fnmatch reads it
                out.append(re.escape(c))
                continue
            body = part[i:j]
            i = j + 1
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            body = re.sub(r"([\\&~|^\[])", r"\\\1", body)  # literal inside a class
            out.append(f"(?!/)[{'^' if negate else ''}{body}]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def _meta(root: str, meta: Any, store: Any) -> CloudObject:
    modified = meta.get("last_modified")
    stamp = (
        modified.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if isinstance(modified, datetime)
        else str(modified or "")
    )
    key = str(meta["path"])
    return CloudObject(f"{root}/{key}", key, int(meta["size"]), meta.get("e_tag"), stamp, store)


def _list(store: Any, root: str, prefix: str, shown: str) -> Iterator[CloudObject]:
    import obstore

    try:
        for page in obstore.list(store, prefix=prefix or None):
            for meta in page:
                yield _meta(root, meta, store)
    except Exception as e:
        raise describe(e, shown) from None


def _head(store: Any, root: str, key: str) -> CloudObject:
    import obstore

    return _meta(root, obstore.head(store, key), store)


# --- stores and credentials ------------------------------------------------------------------


def make_store(root: str, *, shown: str | None = None) -> Any:
    """A store for ``scheme://bucket``, configured from the provider's usual environment;
    errors name ``shown`` (the URL as the user wrote it), else ``root``."""
    shown = shown or root
    try:
        from obstore.store import from_url
    except ImportError:
        raise InputError(f"{shown}: reading object storage needs obstore: {_INSTALL}") from None
    scheme = root.partition("://")[0]
    family = "az" if scheme in ("az", "abfs", "abfss") else scheme
    client: dict[str, Any] = dict(_CLIENT)
    endpoints = [os.environ.get(name, "") for name in _ENDPOINT_ENV.get(family, ())]
    if any(e.lower().startswith("http://") for e in endpoints) or (
        family == "az" and _truthy(os.environ.get("AZURE_STORAGE_USE_EMULATOR"))
    ):
        client["allow_http"] = True  # an endpoint the user set (MinIO, an emulator) in clear
    kwargs: dict[str, Any] = {"client_options": client, "retry_config": _RETRY}
    if family == "s3":
        provider = _aws_chain(shown)
        if provider is not None:
            kwargs["credential_provider"] = provider
    try:
        return from_url(root, **kwargs)
    except Exception as e:
        raise describe(e, shown) from None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _aws_chain(shown: str) -> Any:
    """The AWS SDK's own credential chain (profiles, SSO, credential_process, roles), or None.

    Keys in the environment are read by obstore itself, and so, without boto3, are web
    identity, container and instance roles; everything the SDK reads from ``~/.aws`` needs
    boto3 (the ``cloud`` extra installs it).
    """
    if os.environ.get("AWS_ACCESS_KEY_ID") or _truthy(os.environ.get("AWS_SKIP_SIGNATURE")):
        return None
    try:
        import botocore.exceptions
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        if os.environ.get("AWS_PROFILE"):
            raise InputError(f"{shown}: AWS_PROFILE needs boto3: {_INSTALL}") from None
        return None
    try:
        return Boto3CredentialProvider()
    except ValueError:  # the chain found nothing
        raise InputError(
            f"{shown}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance "
            "role"
        ) from None
    except botocore.exceptions.BotoCoreError as e:
        raise InputError(f"{shown}: AWS credentials: {e}") from None


# --- errors ----------------------------------------------------------------------------------

_XML_CODE = re.compile(r"<Code>([^<]+)</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]+)</Message>")
_JSON_MESSAGE = re.compile(r'"message"\s*:\s*"([^"]+)"')
_STATUS = re.compile(r"status code: (\d{3})")
# A failure while asking an instance-metadata service for a token: no credentials were set.
_METADATA_SERVICE = (
    "latest/api/token",
    "security-credentials",
    "169.254.169.254",
    "metadata.google.internal",
    "/metadata/identity/",
    "IMDS",
)
_REFUSED_KEY = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AuthenticationFailed",
    "InvalidAuthenticationInfo",
)


def describe(error: BaseException, url: str) -> InputError:
    """An object-store failure as one line naming the URL and what to check."""
    text = str(error)
    code = m.group(1) if (m := _XML_CODE.search(text)) else ""
    detail = m.group(1) if (m := _XML_MESSAGE.search(text) or _JSON_MESSAGE.search(text)) else ""
    status = int(m.group(1)) if (m := _STATUS.search(text)) else 0
    kind = type(error).__name__
    said = f" ({code}: {detail})" if code and detail else f" ({detail})" if detail else ""
    if any(hint in text for hint in _METADATA_SERVICE):
        return InputError(
            f"{url}: no credentials found (none in the environment or config "
            "files, and no instance role or managed identity answered)"
        )
    if "Account must be specified" in text:
        return InputError(
            f"{url}: no storage account; set AZURE_STORAGE_ACCOUNT_NAME or write "
            "abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH"
        )
    if code in ("NoSuchBucket", "ContainerNotFound") or "bucket does not exist" in text:
        return InputError(f"{url}: bucket or container not found{said}")
    if kind == "PreconditionError" or status == 412:
        return InputError(f"{url}: the object changed while it was being read; run again")
    if isinstance(error, FileNotFoundError) or status == 404:
        return InputError(f"{url}: no such object")
    if code in _REFUSED_KEY or kind == "UnauthenticatedError" or status == 401:
        return InputError(f"{url}: credentials refused{said}; check the key or token")
    if kind == "PermissionDeniedError" or status == 403:
        return InputError(f"{url}: access denied{said}; check the credentials' permissions")
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed") or status == 301:
        return InputError(f"{url}: the bucket is in another region{said}; set AWS_REGION")
    if "error sending request" in text or "onnect" in text:  # Connect, connection
        host = m.group(0) if (m := re.search(r"https?://[^/\s]+", text)) else "the endpoint"
        return InputError(f"{url}: cannot reach {host} (connection failed)")
    first = text.strip().splitlines()[0] if text.strip() else kind
    return InputError(f"{url}: {first[:300]}")


# --- reading ---------------------------------------------------------------------------------


def _get(obj: CloudObject, start: int, end: int) -> memoryview:
    import obstore

    options: GetOptions = {"range": (start, end)}
    if obj.etag:
        options["if_match"] = obj.etag
    try:
        data = memoryview(obstore.get(obj.store, obj.key, options=options).bytes())
    except Exception as e:
        raise describe(e, obj.url) from None
    if len(data) != end - start:
        raise InputError(
            f"{obj.url}: the object changed while it was being read "
            f"(bytes {start}-{end} came back as {len(data)}); run again"
        )
    return data


class _Sequential(io.RawIOBase):
    """Reads front to back in ranges of ``chunk`` bytes, fetching the next while this one is
    consumed (so the network wait overlaps parsing): at most two ranges in memory."""

    def __init__(self, obj: CloudObject, chunk: int) -> None:
        self._obj = obj
        self._chunk = chunk
        self._offset = 0  # of the next range to fetch
        self._buf = memoryview(b"")
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[memoryview] | None = None

    def readable(self) -> bool:
        return True

    def _fetch(self) -> Future[memoryview] | None:
        if self._offset >= self._obj.size:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="flywheel-object")
        start, self._offset = self._offset, min(self._offset + self._chunk, self._obj.size)
        return self._pool.submit(_get, self._obj, start, self._offset)

    def readinto(self, b: Any) -> int:
        if not self._buf:
            if self._pending is None and self._offset == 0:
                self._pending = self._fetch()
            if self._pending is None:
                return 0
            current, self._pending = self._pending, None
            self._buf = current.result()
            self._pending = self._fetch()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pending = None
        self._buf = memoryview(b"")
        super().close()


class _Random(io.RawIOBase):
    """Seekable reads, each one ranged request (Parquet reads its footer, then columns)."""

    def __init__(self, obj: CloudObject) -> None:
        self._obj = obj
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._obj.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, b: Any) -> int:
        end = min(self._pos + len(b), self._obj.size)
        if end <= self._pos:
            return 0
        data = _get(self._obj, self._pos, end)
        b[: len(data)] = data
        self._pos = end
        return len(data)

    def readall(self) -> bytes:
        out = (
            bytes(_get(self._obj, self._pos, self._obj.size))
            if (self._pos < self._obj.size)
            else b""
        )
        self._pos = max(self._pos, self._obj.size)
        return out


def open_sequential(obj: CloudObject, chunk: int | None = None) -> BinaryIO:
    """The object as a buffered stream, read front to back in ranges of ``chunk`` bytes."""
    return io.BufferedReader(_Sequential(obj, chunk or CHUNK), buffer_size=1 << 20)


def open_random(obj: CloudObject) -> BinaryIO:
    """The object as a seekable file of ranged reads (for Parquet, which reads its footer)."""
    return _Random(obj)  # type: ignore[return-value]
