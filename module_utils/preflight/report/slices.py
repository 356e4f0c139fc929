"""One run in slices: AWX job slicing or `--limit` partitions that share a run id write into one run directory.

Each slice's report play writes its own hosts' documents; before it writes, it folds in the host documents
the other slices already wrote there (merge), recomputes the fleet outliers over every host of the run and
renders the run's summary, Prometheus and JUnit files over all of them. Slices take turns on a lock on the
run directory, so whichever slice writes last leaves the summary of the whole run (the same outliers
and counts as one unsliced run), whether the slices finished together or hours apart.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..core.catalog import HOST_DOCUMENT_SCHEMA_VERSION
from . import fleet
from .files import host_file_stem


@contextmanager
def run_dir_lock(run_dir: str) -> Iterator[None]:
    """Hold the run directory's slice lock: an advisory flock on the directory itself (no file of its own in
    the run; released when the process ends, however it ends)."""
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def written_documents(run_dir: str, skip_hosts: set[str]) -> list[dict]:
    """The host documents already in `run_dir` (other slices'), except those of `skip_hosts`.

    Only a file named as its host's document is taken (<stem>.json with the stem of the host it names)."""
    docs = []
    for name in sorted(os.listdir(run_dir)):
        if name.startswith(".") or not name.endswith(".json") or name == "summary.json":
            continue
        try:
            with open(os.path.join(run_dir, name), encoding="utf-8") as handle:
                doc = json.load(handle)
        except (OSError, ValueError):
            continue
        if (
            isinstance(doc, dict)
            and doc.get("schema_version") == HOST_DOCUMENT_SCHEMA_VERSION
            and isinstance(doc.get("host"), str)
            and doc["host"] not in skip_hosts
            and name == f"{host_file_stem(doc['host'])}.json"
        ):
            docs.append(doc)
    return docs


def rescore(docs: list[dict], score: float, min_relative: float) -> set[str]:
    """Recompute every host's fleet outliers over `docs` (in place); returns the hosts whose outliers changed."""
    found = fleet.outliers(docs, score, min_relative)
    changed = set()
    for doc in docs:
        new = found.get(doc["host"], [])
        if doc.get("outliers") != new:
            changed.add(doc["host"])
        doc["outliers"] = new
    return changed


def merge(run: dict, run_dir: str, render: Callable) -> dict:
    """`run` (pipeline.build_run's result for this slice) with the other slices' documents folded in.

    A host in this slice wins over an earlier document of the same host. Returns `run` itself when the run
    directory holds no other host; otherwise a new run whose outputs are the run's files over every host and
    the host files of this slice's hosts and of the hosts whose outliers changed. `render` is
    pipeline.render_run."""
    own = {d["host"] for d in run["docs"]}
    others = written_documents(run_dir, own)
    if not others:
        return run
    docs = sorted(copy.deepcopy(run["docs"]) + others, key=lambda d: d["host"])
    changed = rescore(docs, *run["outlier_limits"])
    summary, outputs = render(docs, run["run_id"], run["time"], run["timestamp"], hosts=own | changed)
    return {**run, "docs": docs, "summary": summary, "outputs": outputs}
