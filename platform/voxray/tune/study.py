"""Where a sweep's Optuna study lives, so that optuna-dashboard can open it and a resumed sweep
goes on with it.

A local SWEEP_URI holds the study's SQLite file itself (``SWEEP/optuna.db``). SQLite cannot live
on S3: for an ``s3://`` sweep the driver keeps the file on its own disk, at a path named after
the sweep, and the searcher copies it into every one of Tune's experiment checkpoints. Tune
uploads that copy together with the searcher's own state, so ``SWEEP_URI/optuna.db`` follows
the sweep while it runs and always matches the searcher state next to it; resuming (on this
machine or another) starts from that copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
from contextlib import closing
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from voxray import uri

STUDY = "voxray"
FILE = "optuna.db"


def study_file(sweep: str) -> str:
    """The SQLite file the driver writes the study to."""
    if not uri.is_remote(sweep):
        return os.path.join(sweep, FILE)
    # The searcher's pickled state names this path, so it must be the same for every driver of
    # the sweep: named after the sweep, not a fresh temporary folder.
    digest = hashlib.sha1(sweep.rstrip("/").encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), "voxray-optuna", digest, FILE)


def open_study_file(sweep: str, resuming: bool) -> str:
    """Prepare the study's file for this driver and return its path. For a remote sweep the local
    file is replaced by the copy saved with the searcher state (when resuming) or removed (a new
    sweep must not start from an older sweep's trials at the same URI)."""
    path = study_file(sweep)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if uri.is_remote(sweep):
        if os.path.exists(path):
            os.remove(path)
        saved = uri.join(sweep, FILE)
        if resuming and uri.exists(saved):
            with open(path, "wb") as handle:
                handle.write(uri.read_bytes(saved))
    return path


def snapshot(source: str, target: str) -> None:
    """A consistent copy of the SQLite file ``source`` at ``target``, replaced in one step."""
    partial = f"{source}.snapshot"
    with closing(sqlite3.connect(source)) as live, closing(sqlite3.connect(partial)) as copy:
        live.backup(copy)
    shutil.move(partial, target)


class StudySearch(OptunaSearch):
    """Ray's OptunaSearch on an SQLite study; with ``copy_to_checkpoints`` (a remote sweep) it also
    copies the study into each experiment checkpoint Tune writes and uploads."""

    def __init__(self, *, path: str, copy_to_checkpoints: bool, **kwargs: Any):
        import optuna

        super().__init__(storage=optuna.storages.RDBStorage(f"sqlite:///{path}"), study_name=STUDY, **kwargs)
        self._study_path = path
        self._copy_to_checkpoints = copy_to_checkpoints

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        super().save_to_dir(checkpoint_dir, session_str)
        if self._copy_to_checkpoints and os.path.exists(self._study_path):
            snapshot(self._study_path, os.path.join(checkpoint_dir, FILE))

