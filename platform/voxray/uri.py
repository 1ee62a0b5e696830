"""Local paths and ``s3://`` URIs everywhere a path is taken (fsspec; s3fs for S3).

S3 credentials and endpoints come from the standard AWS variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, ...); ``storage_env`` forwards them to Ray tasks so that workers started
before the variables were set still see the same bucket.

Transient S3 errors (503 SlowDown, throttling, a dropped connection) are retried with backoff:
botocore's ``standard`` retry mode, ``AWS_MAX_ATTEMPTS`` attempts per request (voxray's default
RETRY_DEFAULTS unless the variables are set), under s3fs's own retries of dropped connections and
SlowDown. One policy for every reader and writer: the store's reads and writes (Ray Data), the
run's checkpoints (Ray Train) and the files voxray reads and writes itself all go through s3fs. An
error that outlasts the retries names the URI (``StorageError``).
"""

from __future__ import annotations

import os
import posixpath
from typing import Any, Iterator

import fsspec
from fsspec.core import url_to_fs

_FORWARDED_ENV_PREFIXES = ("AWS_", "FSSPEC_", "VOXRAY_")
# botocore's own variables; set here unless the user set them, and forwarded to every Ray task.
# standard mode: exponential backoff with jitter (up to 20 s) on 5xx, throttling and connection errors.
RETRY_DEFAULTS = {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "8"}
for _key, _value in RETRY_DEFAULTS.items():
    os.environ.setdefault(_key, _value)


class StorageError(OSError):
    """A storage operation on a URI failed after its retries; the message names the URI."""


def _named(operation):
    """``operation(path, ...)`` with a remote failure other than a missing file raised as a
    StorageError naming ``path`` and the retry policy it outlasted."""
    import functools

    @functools.wraps(operation)
    def wrapper(path, *args, **kwargs):
        try:
            return operation(path, *args, **kwargs)
        except (FileNotFoundError, StorageError):
            raise
        except Exception as exc:
            if not is_remote(os.fspath(path)) or isinstance(exc, (ValueError, TypeError)):
                raise
            raise StorageError(f"{path}: storage kept failing after {os.environ.get('AWS_MAX_ATTEMPTS')} attempts "
                               f"per request ({os.environ.get('AWS_RETRY_MODE')} retries with backoff; "
                               f"AWS_MAX_ATTEMPTS, AWS_RETRY_MODE): {type(exc).__name__}: {exc}") from exc

    return wrapper


def is_remote(path: str) -> bool:
    path = os.fspath(path)
    return "://" in path and not path.startswith("file://")


def filesystem(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``path`` and the path inside it."""
    return url_to_fs(os.fspath(path))


def join(base: str, *parts: str) -> str:
    base = os.fspath(base)
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


def absolute(path: str) -> str:
    """A URI as is; a local path made absolute (Ray workers run in another directory)."""
    return path if is_remote(path) else os.path.abspath(os.fspath(path))


def parent(path: str) -> str:
    if is_remote(path):
        protocol, _, rest = path.partition("://")
        return f"{protocol}://{posixpath.dirname(rest.rstrip('/'))}"
    return os.path.dirname(os.path.abspath(path))


def resolve(path: str, base_dir: str) -> str:
    """``path`` as is when absolute or a URI, else relative to ``base_dir``."""
    if "://" in path or os.path.isabs(path):
        return path
    return join(base_dir, path)


def unstrip(reference: str, fs_path: str) -> str:
    """Turn a path returned by ``fs.find``/``fs.ls`` back into a URI like ``reference``."""
    if is_remote(reference):
        protocol = reference.split("://", 1)[0]
        return f"{protocol}://{fs_path.lstrip('/')}" if "://" not in fs_path else fs_path
    return fs_path


@_named
def read_bytes(path: str) -> bytes:
    fs, inner = filesystem(path)
    return fs.cat_file(inner)


def read_text(path: str, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


@_named
def write_bytes(path: str, data: bytes) -> None:
    fs, inner = filesystem(path)
    if not is_remote(path):
        fs.makedirs(os.path.dirname(inner), exist_ok=True)
    with fs.open(inner, "wb") as handle:
        handle.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@_named
def exists(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.exists(inner)


@_named
def isdir(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.isdir(inner)


@_named
def find(path: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """All files under ``path`` (recursively), as URIs like ``path``, sorted."""
    fs, inner = filesystem(path)
    fs.invalidate_cache()
    found = fs.find(inner)
    if suffixes:
        found = [f for f in found if f.lower().endswith(suffixes)]
    return sorted(unstrip(path, f) for f in found)


def is_empty_dir(path: str) -> bool:
    return not exists(path) or not find(path)


@_named
def remove_tree(path: str) -> None:
    fs, inner = filesystem(path)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)
    fs.invalidate_cache()


@_named
def makedirs(path: str) -> None:
    fs, inner = filesystem(path)
    fs.makedirs(inner, exist_ok=True)


def iter_lines(path: str) -> Iterator[str]:
    """Lines of a text file without their line ends, streamed (manifests can be large)."""
    fs, inner = filesystem(path)
    with fs.open(inner, "rb") as handle:
        for raw in handle:
            yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def storage_env() -> dict[str, str]:
    """The storage variables of this process, to hand to Ray tasks (runtime_env env_vars)."""
    return {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV_PREFIXES)}


def pyarrow_filesystem(path: str):
    """A pyarrow filesystem for Ray (Data reads, Train storage) that goes through fsspec, so that
    s3:// honours the same AWS_* variables everywhere; None when local.

    Ray Train's controller and Ray Data's planning tasks run in processes that never saw this
    process's environment (a cluster started earlier, a job submitted to a shared one), so the
    S3 endpoint and credentials set here as variables travel inside the filesystem object;
    without such variables s3fs finds credentials on each node itself (instance role)."""
    if not is_remote(path):
        return None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    protocol = path.split("://", 1)[0]
    if protocol in ("s3", "s3a"):
        env = os.environ
        options: dict[str, Any] = {}
        if env.get("AWS_ACCESS_KEY_ID"):
            options.update(key=env["AWS_ACCESS_KEY_ID"], secret=env.get("AWS_SECRET_ACCESS_KEY"),
                           token=env.get("AWS_SESSION_TOKEN"))
        if env.get("AWS_ENDPOINT_URL"):
            options["endpoint_url"] = env["AWS_ENDPOINT_URL"]
        options["config_kwargs"] = {"retries": {"mode": env["AWS_RETRY_MODE"],     # the processes this goes to
                                                "max_attempts": int(env["AWS_MAX_ATTEMPTS"])}}   # lack the env
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region:
            options["client_kwargs"] = {"region_name": region}
        return PyFileSystem(FSSpecHandler(fsspec.filesystem("s3", skip_instance_cache=True, **options)))
    return PyFileSystem(FSSpecHandler(filesystem(path)[0]))


def ray_storage(path: str) -> tuple[str, str, object]:
    """(storage_path, name, storage_filesystem) for Ray Train's and Tune's ``RunConfig``: the
    folder ``path`` is ``storage_path/name`` on that filesystem."""
    inner = (filesystem(path)[1] if is_remote(path) else path).rstrip("/")
    return os.path.dirname(inner), os.path.basename(inner), pyarrow_filesystem(path)
