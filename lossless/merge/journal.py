"""The journal that lets a killed merge resume: which finished shards of the output dir hold.

After each shard is complete and renamed into place, a line `{file, sha256}` is appended (and
fsynced) to `lossless-journal.jsonl`, whose first line names the plan (`plan_digest`). A rerun
into the same dir re-hashes the journalled shards, keeps the leading ones that still match, and
recomputes from the first that does not. The shards themselves are not fsynced: the re-hash is
what makes a journal line trustworthy, so a shard a power cut left short or empty is recomputed
like a corrupted one, and a killed process loses nothing (its writes are in the page cache).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lossless.merge.jobs import MergePlan
from lossless.tensors.writer import ShardSpec, sha256_file

JOURNAL = "lossless-journal.jsonl"


def plan_digest(plan: MergePlan, shards: list[ShardSpec], seed: int | None) -> str:
    """Identifies what the output dir's shards hold, so a resume never mixes two plans."""
    digest = hashlib.sha256(repr((seed or 0, [s.header for s in shards])).encode())
    for job in plan.jobs:
        params = (sorted(job.params.items()), [sorted(p.items()) for p in job.model_params])
        digest.update(repr((job.output, job.method, job.sources, job.base, params)).encode())
        digest.update(repr((job.compute_dtype, job.out_dtype)).encode())
    return digest.hexdigest()


def resume(out_dir: Path, shards: list[ShardSpec], digest: str) -> list[dict[str, str]]:
    """The journal entries of the leading shards whose files still hash as recorded; every
    other shard file (and partial file) is deleted and the journal rewritten to match."""
    journal = out_dir / JOURNAL
    recorded: dict[str, str] = {}
    if journal.is_file():
        lines = journal.read_text().splitlines()
        try:
            head = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            head = {}
        if head.get("plan") == digest:
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                    recorded[str(entry["file"])] = str(entry["sha256"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    break  # a line cut short by a kill
    done: list[dict[str, str]] = []
    for shard in shards:
        path = out_dir / shard.file
        sha = recorded.get(shard.file)
        if sha is None or not path.is_file() or sha256_file(path) != sha:
            break
        done.append({"file": shard.file, "sha256": sha})
    keep = {entry["file"] for entry in done}
    for shard in shards:
        if shard.file not in keep:
            (out_dir / shard.file).unlink(missing_ok=True)
        (out_dir / (shard.file + ".partial")).unlink(missing_ok=True)
    lines = [json.dumps({"plan": digest})] + [json.dumps(e) for e in done]
    journal.write_text("".join(line + "\n" for line in lines))
    return done


def append_journal(out_dir: Path, entry: dict[str, str]) -> None:
    with (out_dir / JOURNAL).open("a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
