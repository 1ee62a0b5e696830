"""Local paths and ``s3://`` URIs everywhere a path is taken (fsspec; s3fs for S3).

S3 credentials and endpoints come from the standard AWS variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, ...); ``storage_env`` forwards them to Ray tasks so that workers started
before the variables were set still see the same bucket.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any, Iterator

import fsspec
from fsspec.core import url_to_fs

_FORWARDED_ENV_PREFIXES = ("AWS_", "FSSPEC_", "VOXRAY_")


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


def read_bytes(path: str) -> bytes:
    fs, inner = filesystem(path)
    return fs.cat_file(inner)


def read_text(path: str, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def write_bytes(path: str, data: bytes) -> None:
    fs, inner = filesystem(path)
    if not is_remote(path):
        fs.makedirs(os.path.dirname(inner), exist_ok=True)
    with fs.open(inner, "wb") as handle:
        handle.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def exists(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.exists(inner)


def isdir(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.isdir(inner)


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


def remove_tree(path: str) -> None:
    fs, inner = filesystem(path)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)
    fs.invalidate_cache()


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
