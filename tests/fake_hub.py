"""A fake Hugging Face Hub on localhost, so the real huggingface_hub client code runs offline.

It serves the endpoints huggingface_hub 2.4's `snapshot_download` and `HfApi.model_info` use:

    GET  /api/models/{org}/{name}[/revision/{rev}]   repo info (sha = the commit, siblings)
    GET  /api/models/{org}/{name}/tree/{rev}         recursive file listing (sizes, lfs sha256)
    HEAD /{org}/{name}/resolve/{rev}/{file}          X-Repo-Commit, ETag, Content-Length,
                                                      X-Linked-Etag/-Size for LFS-like files
    GET  /{org}/{name}/resolve/{rev}/{file}          the bytes; `Range: bytes=N-` answered with 206

Uploads, as `HfApi.create_repo` and `HfApi.create_commit` (so `upload_folder`) send them:

    POST /api/repos/create                           {name, organization, type, private} → url;
                                                      409 when it exists (exist_ok accepts that)
    POST /api/validate-yaml                          README.md front matter: always valid
    POST /api/models/{org}/{name}/preupload/{rev}    every file "regular" (no LFS/xet round trip)
    POST /api/models/{org}/{name}/commit/{rev}       ndjson header + files (base64) + deletions;
                                                      a new commit on top of the branch's files

`FakeHub.commits_made` lists (repo_id, summary) of every commit pushed. `read_only` makes every
write answer 403, like a token without write access.

Dataset repos are stored under "datasets/org/name" and served at /api/datasets/... and
/datasets/{org}/{name}/resolve/... . Errors carry the `X-Error-Code` header the client maps to exceptions: `RepoNotFound` (404),
`RevisionNotFound` (404), `EntryNotFound` (404), `GatedRepo` (401 without a token, 403 with a
token that was not granted). `drop_after` makes a file's GET close the connection mid-body, once
or always, to test interrupted downloads. Every request is recorded in `FakeHub.requests`.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl")  # served like git-lfs files


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub sends as ETag for a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_tiny_safetensors(path: str | Path, tensors: dict[str, list[float]]) -> Path:
    """A valid float32 safetensors file written by hand (no torch): for tests that need no model."""
    header: dict[str, object] = {}
    body = b""
    for name, values in tensors.items():
        data = struct.pack(f"<{len(values)}f", *values)
        header[name] = {
            "dtype": "F32",
            "shape": [len(values)],
            "data_offsets": [len(body), len(body) + len(data)],
        }
        body += data
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return path


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit → {path: bytes}
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag → commit
    gated: bool = False
    granted_tokens: set[str] = field(default_factory=set)


@dataclass
class Drop:
    after: int  # bytes sent before the connection is closed
    times: int  # how many GETs are cut (a large number = always)


class FakeHub:
    """In-memory repos behind a threaded HTTP server; `url` goes into HF_ENDPOINT."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self.drops: dict[tuple[str, str], Drop] = {}  # (repo_id, file) → Drop
        self._server: ThreadingHTTPServer | None = None
        self.commits_made: list[tuple[str, str]] = []  # (repo_id, commit summary)
        self.created: list[dict[str, Any]] = []  # create_repo payloads
        self.read_only = False

    # -- content --------------------------------------------------------------------------------
    def add_commit(
        self, repo_id: str, files: dict[str, bytes] | str | Path, branch: str = "main"
    ) -> str:
        """Add a commit with exactly `files` (a dict, or every file of a directory) to `branch`."""
        if not isinstance(files, dict):
            root = Path(files)
            files = {
                p.relative_to(root).as_posix(): p.read_bytes()
                for p in sorted(root.rglob("*"))
                if p.is_file()
            }
        repo = self.repos.setdefault(repo_id, FakeRepo())
        digest = hashlib.sha1(repo_id.encode() + repo.refs.get(branch, "").encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
        commit = digest.hexdigest()
        repo.commits[commit] = dict(files)
        repo.refs[branch] = commit
        return commit

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at `revision` (the branch's latest commit by default)."""
        commit = self.resolve(repo_id, revision)
        return dict(self.repos[repo_id].commits[commit]) if commit else {}

    def set_ref(self, repo_id: str, ref: str, commit: str) -> None:
        self.repos[repo_id].refs[ref] = commit

    def resolve(self, repo_id: str, revision: str) -> str | None:
        repo = self.repos[repo_id]
        if revision in repo.commits:
            return revision
        return repo.refs.get(revision)

    # -- server ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "FakeHub not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @contextmanager
    def serving(self) -> Iterator[FakeHub]:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_POST(self) -> None:
        split = urlsplit(self.path)
        self.fake.requests.append((self.command, split.path, dict(self.headers.items())))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.fake.read_only:
            return self._error(403, "Forbidden", "You don't have the rights to write here")
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        if parts == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body or b"{}"))
        if parts == ["api", "validate-yaml"]:
            return self._json({"errors": [], "warnings": []})
        if parts[:1] == ["api"] and parts[1:2] in (["models"], ["datasets"]) and len(parts) == 6:
            prefix = "datasets/" if parts[1] == "datasets" else ""
            repo_id, action, revision = f"{prefix}{parts[2]}/{parts[3]}", parts[4], parts[5]
            if repo_id not in self.fake.repos:
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            if action == "preupload":
                files = json.loads(body)["files"]
                modes = [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for f in files
                ]
                return self._json({"files": modes})
            if action == "commit":
                return self._commit(repo_id, revision, body)
        self._error(404, "EntryNotFound", f"no route POST {split.path}")

    def _create_repo(self, payload: dict[str, Any]) -> None:
        self.fake.created.append(payload)
        prefix = "datasets/" if payload.get("type") == "dataset" else ""
        org = payload.get("organization")
        repo_id = f"{prefix}{org}/{payload['name']}" if org else f"{prefix}{payload['name']}"
        url = f"{self.fake.url}/{repo_id}"
        if repo_id in self.fake.repos:  # the hub's 409 names the repo's url, as create_repo reads
            body = json.dumps({"error": "You already created this model repo", "url": url}).encode()
            self.send_response(409)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.fake.repos[repo_id] = FakeRepo()
        self._json({"url": url, "name": repo_id})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        import base64

        files = self.fake.files(repo_id, revision) if self.fake.repos[repo_id].refs else {}
        summary = ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {k: v for k, v in files.items() if not k.startswith(folder)}
            else:
                return self._error(400, "BadRequest", f"the fake hub cannot take {key!r}")
        commit = self.fake.add_commit(repo_id, files, branch=revision)
        self.fake.commits_made.append((repo_id, summary))
        url = f"{self.fake.url}/{repo_id}/commit/{commit}"
        self._json({"commitUrl": url, "commitOid": commit, "success": True})

    # -- routing --------------------------------------------------------------------------------
    def _dispatch(self, head: bool) -> None:
        split = urlsplit(self.path)
        self.fake.requests.append((self.command, split.path, dict(self.headers.items())))
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        if parts[:1] == ["api"] and parts[1:2] in (["models"], ["datasets"]) and len(parts) >= 4:
            prefix = "datasets/" if parts[1] == "datasets" else ""  # dataset repos: "datasets/o/n"
            repo_id, rest = f"{prefix}{parts[2]}/{parts[3]}", parts[4:]
            if not rest:
                return self._model_info(repo_id, "main", split.query)
            if rest[0] == "revision" and len(rest) == 2:
                return self._model_info(repo_id, rest[1], split.query)
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo_id, rest[1])
        prefix = "datasets/" if parts[0] == "datasets" else ""
        parts = parts[1:] if prefix else parts
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id = f"{prefix}{parts[0]}/{parts[1]}"
            return self._resolve(repo_id, parts[3], "/".join(parts[4:]), head)
        self._error(404, "EntryNotFound", f"no route {split.path}")

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: object) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _lookup(self, repo_id: str, revision: str) -> tuple[FakeRepo, str] | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        commit = self.fake.resolve(repo_id, revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo, commit

    # -- endpoints ------------------------------------------------------------------------------
    def _model_info(self, repo_id: str, revision: str, query: str) -> None:
        found = self._lookup(repo_id, revision)
        if found is None:
            return
        repo, commit = found
        with_blobs = "blobs=True" in query or "blobs=true" in query
        siblings = []
        for path, data in sorted(repo.commits[commit].items()):
            entry: dict[str, object] = {"rfilename": path}
            if with_blobs:
                entry.update(size=len(data), blobId=git_blob_sha1(data))
                if path.endswith(LFS_SUFFIXES):
                    sha = hashlib.sha256(data).hexdigest()
                    entry["lfs"] = {"size": len(data), "sha256": sha, "pointerSize": 134}
            siblings.append(entry)
        gated = "auto" if repo.gated else False
        self._json({"id": repo_id, "sha": commit, "gated": gated, "siblings": siblings})

    def _tree(self, repo_id: str, revision: str) -> None:
        found = self._lookup(repo_id, revision)
        if found is None:
            return
        repo, commit = found
        listing = []
        for path, data in sorted(repo.commits[commit].items()):
            entry: dict[str, object] = {
                "type": "file",
                "path": path,
                "size": len(data),
                "oid": git_blob_sha1(data),
            }
            if path.endswith(LFS_SUFFIXES):
                sha = hashlib.sha256(data).hexdigest()
                entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
            listing.append(entry)
        self._json(listing)

    def _resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        found = self._lookup(repo_id, revision)
        if found is None:
            return
        repo, commit = found
        if repo.gated:
            token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if token not in repo.granted_tokens:
                status = 403 if token else 401
                message = f"Access to model {repo_id} is restricted and you are not in the authorized list."
                return self._error(status, "GatedRepo", message)
        data = repo.commits[commit].get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", f"{filename} not found", commit)
        start = 0
        byte_range = self.headers.get("Range", "")
        if byte_range.startswith("bytes=") and not head:
            start = int(byte_range[len("bytes=") :].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{git_blob_sha1(data)}"')
        if filename.endswith(LFS_SUFFIXES):
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if head:
            return
        drop = self.fake.drops.get((repo_id, filename))
        if drop is not None and drop.times > 0:
            drop.times -= 1
            self.wfile.write(data[start : start + drop.after])
            self.wfile.flush()
            self.close_connection = True  # the client sees fewer bytes than Content-Length
            return
        self.wfile.write(data[start:])


def use_fake_hub(fake: FakeHub, monkeypatch: object, home: str | Path) -> None:
    """Point huggingface_hub at a serving `fake`, with a private HF_HOME and no token or offline flag.

    huggingface_hub reads its environment at import; lossless.hub.repos reads HF_ENDPOINT, HF_HOME and
    HF_HUB_OFFLINE at call time, so setting them here is enough. The token file constant is
    patched so a developer's real token is never sent to the fake server.
    """
    from huggingface_hub import constants

    mp: Any = monkeypatch
    mp.setenv("HF_ENDPOINT", fake.url)
    mp.setenv("HF_HOME", str(home))
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        mp.delenv(name, raising=False)
    mp.setattr(constants, "HF_TOKEN_PATH", str(Path(home) / "token"))
    mp.setattr(constants, "HF_HUB_OFFLINE", False)


def use_fake_hub_for_datasets(
    fake: FakeHub, monkeypatch: object, home: str | Path, *, offline: bool = False
) -> None:
    """`use_fake_hub`, and the `datasets` library pointed at the fake too.

    datasets reads HF_ENDPOINT, HF_HUB_OFFLINE and its cache directory when it is imported, and
    huggingface_hub its hub cache: a command gets them from its environment at start, a test
    that imported them earlier patches the constants. `offline` is HF_HUB_OFFLINE=1 for all.
    """
    import datasets
    from huggingface_hub import constants

    use_fake_hub(fake, monkeypatch, home)
    mp: Any = monkeypatch
    mp.setattr(constants, "HF_HUB_CACHE", str(Path(home) / "hub"))
    template = fake.url + "/{repo_id}/resolve/{revision}/{filename}"
    mp.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    mp.setattr(constants, "HF_HUB_OFFLINE", offline)
    mp.setattr(datasets.config, "HF_ENDPOINT", fake.url)
    url = fake.url + "/datasets/{repo_id}/resolve/{revision}/{path}"
    mp.setattr(datasets.config, "HUB_DATASETS_URL", url)
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", offline)
    mp.setattr(datasets.config, "HF_DATASETS_CACHE", Path(home) / "datasets")
    if offline:
        mp.setenv("HF_HUB_OFFLINE", "1")
