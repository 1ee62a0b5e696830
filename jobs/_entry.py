"""Shared start of the `ray job submit` entrypoints in jobs/: each is the `voxray` CLI command of
the same name, with the same arguments and the same YAML configs.

The job's runtime env (jobs/runtime_env.yaml) ships voxray's code as a py_module to the driver and
every worker; when a script is run by hand from a clone without an installed voxray, the clone's
platform/ folder is used instead.
"""

from __future__ import annotations

import os
import sys


def run(command: str, argv: list[str]) -> int:
    try:
        import voxray  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "platform"))
    import voxray
    from voxray import cli
    from voxray.config import FAMILIES

    if command in ("train", "tune") and (not argv or argv[0] not in FAMILIES):
        argv = ["acoustic", *argv]           # the model family defaults to the acoustic model
    print(f"voxray job: {command} {' '.join(argv)}  (voxray from {os.path.dirname(voxray.__file__)})", flush=True)
    return cli.main([command, *argv])
