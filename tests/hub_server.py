"""A Hugging Face Hub on 127.0.0.1 for tests that load or push by repo id, with no network and no patched loader.

The server speaks the part of the Hub's HTTP API that `huggingface_hub` 2.x, `transformers` 5.x and `datasets` 5.x
call (read from their source):

- reading: repo info (`/api/{models,datasets}/ID[/revision/REV]`, with `sha`, `siblings` and the card's metadata),
  tree listings (`recursive`, `expand`), `paths-info` and the last commit (what `HfFileSystem` and `load_dataset`
  list), and `resolve` with the headers `hf_hub_download` reads: `X-Repo-Commit` and `ETag`; weights and data files
  (`LFS_SUFFIXES`) are LFS files, answered as the Hub does with a redirect (`Location`, `X-Linked-Etag`,
  `X-Linked-Size`) to a second origin on 127.0.0.1 standing for the CDN; byte ranges are served;
- writing: `create_repo`, card YAML validation, `preupload` (LFS files "lfs", the rest "regular"), the LFS batch API
  with basic PUT uploads, and the NDJSON `commit` (added, LFS, deleted files and folders), so that `push_to_hub`
  (models, datasets, cards), `HfApi.upload_folder` and `HfApi.create_commit` work end to end. Xet uploads need the
  Hub's storage service, so the fixture sets `HF_HUB_DISABLE_XET=1` and `huggingface_hub` uses the LFS protocol;
- errors as the Hub answers them: 404 with `X-Error-Code` `RepoNotFound`, `RevisionNotFound` or `EntryNotFound`, so
  the libraries raise their own `RepositoryNotFoundError` / `RevisionNotFoundError` / `EntryNotFoundError` (and
  `from_pretrained`'s probes for optional files, e.g. `adapter_config.json`, find nothing, as on the Hub).

Repositories live in memory, public, any token accepted; each `add_repo` or pushed commit is a new commit on `main`,
and every commit stays readable by its sha.

Use the `hub_server` fixture (tests/conftest.py imports it):

    def test_load_by_id(hub_server, tmp_path):
        model.save_pretrained(tmp_path / "vit")
        hub_server.add_repo("org/tiny-vit", tmp_path / "vit")           # a folder, or {path: bytes or str}
        dataset.push_to_hub("org/tiny-data")                             # or hub_server.add_repo(..., "dataset")
        AutoModel.from_pretrained("org/tiny-vit")                        # this process talks to the server
        subprocess.run([sys.executable, "-m", "hf_lfi.cli", ...], env=hub_server.env)   # so does a subprocess
        hub_server.files("org/pushed")                                   # {path: bytes} of what was pushed
        hub_server.requests                                              # [(method, path), ...] it answered

The fixture points this process at the server as `HF_ENDPOINT` would at import time (it sets the copies of the
endpoint that `huggingface_hub`, `datasets` and `transformers` take when imported), gives it a fresh, empty Hugging
Face cache under the test's `tmp_path`, a token (`HF_TOKEN`), and turns the offline settings off; `hub_server.env` is
`os.environ` with the same settings, for a subprocess. `HubServer` also works on its own as a context manager.
"""

import base64
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

TOKEN = "hf_hub_server_test_token"
# files the Hub stores with git LFS (what its default .gitattributes tracks, among others): served by redirect
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".parquet", ".arrow")
DATE = "2025-01-01T00:00:00.000Z"
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
API = re.compile(
    r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+(?:/[^/]+)?)"
    r"(?:/(?P<op>revision|tree|paths-info|preupload|commit|commits)(?:/(?P<rest>.*))?)?$"
)
RESOLVE = re.compile(
    r"^/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
)


def git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    """A repository: its commits (sha -> {path: bytes}) and branches (name -> sha)."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    private: bool = False

    def commit(self, files: dict[str, bytes], branch: str = "main") -> str:
        parent = self.branches.get(branch, "")
        digest = hashlib.sha1(parent.encode() + str(len(self.commits)).encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha1(files[path]).digest())
        sha = digest.hexdigest()
        self.commits[sha] = dict(files)
        self.branches[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        """The commit sha a branch name or a sha names, else None."""
        revision = unquote(revision)
        return self.branches.get(revision) or (revision if revision in self.commits else None)


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class HubServer:
    """The Hub-compatible server: `add_repo` to serve files, `url` / `env` to reach it, `files` to read a repo back."""

    def __init__(self, cache_root: str | os.PathLike | None = None):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.cache_root = Path(cache_root) if cache_root is not None else None
        self.blobs: dict[str, bytes] = {}  # sha256 -> content of the LFS files, as the CDN serves them
        self._lock = threading.Lock()
        # the Hub, and the "CDN" its LFS redirects point at: another origin, so that clients stop at the redirect
        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(self)) for _ in range(2)]
        self.url, self.cdn_url = (f"http://127.0.0.1:{server.server_address[1]}" for server in self._servers)

    def __enter__(self) -> "HubServer":
        for server in self._servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, name="hub-server", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    @property
    def env(self) -> dict[str, str]:
        """`os.environ` plus what points a subprocess at this server: endpoint, token, cache, offline settings off."""
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_XET_CACHE")}
        env.update(HF_ENDPOINT=self.url, HF_TOKEN=TOKEN, HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0")
        env.update(TRANSFORMERS_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
        if self.cache_root is not None:
            env["HF_HOME"] = str(self.cache_root)
        return env

    def add_repo(
        self,
        repo_id: str,
        files: str | os.PathLike | dict[str, bytes | str],
        repo_type: str = "model",
    ) -> str:
        """Serve `files` (a folder, read recursively, or {path in repo: content}) as a new commit on `main` of
        `repo_id`; returns the commit sha."""
        if not isinstance(files, dict):
            root = Path(files)
            files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        files = {path: content.encode() if isinstance(content, str) else content for path, content in files.items()}
        with self._lock:
            repo = self.repos.setdefault((repo_type, repo_id), Repo())
            return self._commit_files(repo, files)

    def _commit_files(self, repo: Repo, files: dict[str, bytes], branch: str = "main") -> str:
        for path, content in files.items():
            if path.endswith(LFS_SUFFIXES):
                self.blobs[hashlib.sha256(content).hexdigest()] = content
        return repo.commit(files, branch)

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """{path: content} of `repo_id` at `revision`."""
        with self._lock:
            repo = self.repos[(repo_type, repo_id)]
            return dict(repo.commits[repo.resolve(revision)])

    # -- the API ---------------------------------------------------------------------------------------------------

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "RepoNotFound", f"Repository {repo_id} not found")
        return repo

    def _commit(self, repo: Repo, revision: str) -> tuple[str, dict[str, bytes]]:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
        return sha, repo.commits[sha]

    @staticmethod
    def _entry(path: str, files: dict[str, bytes], sha: str, expand: bool) -> dict:
        last_commit = {"lastCommit": {"id": sha, "title": "commit", "date": DATE}} if expand else {}
        if path in files:
            content = files[path]
            entry = {"type": "file", "oid": git_blob_sha(content), "size": len(content), "path": path}
            if path.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
            return {**entry, **last_commit}
        tree = hashlib.sha1(("tree " + path + sha).encode()).hexdigest()
        return {"type": "directory", "oid": tree, "size": 0, "path": path, **last_commit}

    @staticmethod
    def _children(files: dict[str, bytes], folder: str, recursive: bool) -> list[str]:
        prefix = f"{folder}/" if folder else ""
        paths = set()
        for path in files:
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts) + 1 if recursive else 2):
                paths.add(prefix + "/".join(parts[:depth]))
        return sorted(paths)

    def _info(self, repo_type: str, repo_id: str, repo: Repo, sha: str, files: dict[str, bytes]) -> dict:
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0] if "/" in repo_id else None,
            "sha": sha,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "lastModified": DATE,
            "createdAt": DATE,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(files)],
        }
        readme = files.get("README.md", b"").decode()
        if readme.startswith("---"):
            info["cardData"] = yaml.safe_load(readme.split("---", 2)[1]) or {}
        return info

    def handle_api(self, method: str, path: str, query: dict, body: bytes) -> tuple[int, dict, bytes]:
        if path == "/api/validate-yaml" and method == "POST":  # what a card's `push_to_hub` asks first
            content = json.loads(body)["content"]
            try:
                if content.startswith("---"):
                    yaml.safe_load(content.split("---", 2)[1])
            except yaml.YAMLError as error:
                raise HubError(400, None, f"Invalid YAML metadata: {error}") from None
            return _json({})
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(json.loads(body))
        match = API.match(path)
        if match is None:
            raise HubError(404, None, f"Not found: {method} {path}")
        repo_type, repo_id, op, rest = match["type"][:-1], match["repo"], match["op"], match["rest"] or ""
        repo = self._repo(repo_type, repo_id)
        if op in (None, "revision"):
            sha, files = self._commit(repo, rest or "main")
            return _json(self._info(repo_type, repo_id, repo, sha, files))
        if op == "commits":
            sha, _ = self._commit(repo, rest or "main")
            return _json([{"id": sha, "title": "commit", "message": "", "authors": [], "date": DATE}])
        revision, _, folder = rest.partition("/")
        if op == "tree":
            sha, files = self._commit(repo, revision)
            folder = unquote(folder).strip("/")
            if folder and folder in files:
                raise HubError(400, None, f"{folder} is a file, not a folder")
            if folder and not any(p.startswith(folder + "/") for p in files):
                raise HubError(404, "EntryNotFound", f"{folder} does not exist on {revision}")
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            expand = query.get("expand", ["false"])[0].lower() in ("1", "true")
            return _json([self._entry(p, files, sha, expand) for p in self._children(files, folder, recursive)])
        if op == "paths-info":
            sha, files = self._commit(repo, revision)
            form = parse_qs(body.decode())
            expand = form.get("expand", ["false"])[0].lower() in ("1", "true")
            folders = {p.rsplit("/", depth)[0] for p in files for depth in range(1, p.count("/") + 1)}
            wanted = [p.strip("/") for p in form.get("paths", [])]
            return _json([self._entry(p, files, sha, expand) for p in wanted if p in files or p in folders])
        if op == "preupload" and method == "POST":
            self._commit(repo, revision)
            wanted = json.loads(body)["files"]
            modes = [{"path": f["path"], "uploadMode": _upload_mode(f["path"]), "shouldIgnore": False} for f in wanted]
            return _json({"files": modes})
        if op == "commit" and method == "POST":
            return self._apply_commit(repo_type, repo_id, repo, unquote(revision), body, query)
        raise HubError(405, None, f"{method} {path} is not supported by this test Hub")

    def _create_repo(self, payload: dict) -> tuple[int, dict, bytes]:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            status, answer = 409, {"error": "You already created this repo", "url": url}
            return status, {"Content-Type": "application/json"}, json.dumps(answer).encode()
        repo = self.repos[(repo_type, repo_id)] = Repo(private=bool(payload.get("private")))
        self._commit_files(repo, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
        return _json({"url": url, "name": repo_id})

    def _apply_commit(
        self, repo_type, repo_id, repo: Repo, branch: str, body: bytes, query
    ) -> tuple[int, dict, bytes]:
        if query.get("create_pr", ["0"])[0] in ("1", "true"):
            raise HubError(400, None, "This test Hub does not open pull requests")
        if branch not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        files = dict(repo.commits[repo.branches[branch]])
        for line in filter(None, body.split(b"\n")):
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                parent = value.get("parentCommit")
                if parent and parent != repo.branches[branch]:
                    raise HubError(412, None, f"Parent commit {parent} is not the head of {branch}")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.blobs:
                    raise HubError(400, None, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = self.blobs[value["oid"]]
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, None, f"Commit operation {key!r} is not supported by this test Hub")
        sha = self._commit_files(repo, files, branch)
        url = f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}/commit/{sha}"
        return _json({"commitUrl": url, "commitOid": sha, "pullRequestUrl": None})

    def _lfs_batch(self, body: bytes) -> tuple[int, dict, bytes]:
        """The LFS batch API: where to PUT each object not stored yet (basic transfer)."""
        request = json.loads(body)
        if request.get("operation") != "upload":
            raise HubError(400, None, "This test Hub takes LFS uploads only")
        objects = []
        for obj in request["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.blobs:
                answer["actions"] = {"upload": {"href": f"{self.cdn_url}/lfs-upload/{obj['oid']}"}}
            objects.append(answer)
        return _json({"transfer": "basic", "objects": objects})

    def handle_file(self, method: str, path: str, headers, body: bytes = b"") -> tuple[int, dict, bytes]:
        if path.endswith(".git/info/lfs/objects/batch") and method == "POST":
            return self._lfs_batch(body)
        if path.startswith("/lfs-upload/") and method == "PUT":
            digest = path[len("/lfs-upload/") :]
            if hashlib.sha256(body).hexdigest() != digest:
                raise HubError(400, None, f"The uploaded content does not hash to {digest}")
            self.blobs[digest] = body
            return 200, {}, b""
        if path.startswith("/lfs/"):  # the "CDN" the LFS redirects point at
            digest = path[len("/lfs/") :]
            if digest not in self.blobs:
                raise HubError(404, None, "No such blob")
            return _content(self.blobs[digest], headers, {"ETag": f'"{digest}"'})
        match = RESOLVE.match(path)
        if match is None:
            raise HubError(404, None, f"Not found: {method} {path}")
        repo_type = (match["type"] or "models")[:-1]
        repo = self._repo(repo_type, match["repo"])
        sha, files = self._commit(repo, match["rev"])
        file_path = unquote(match["path"])
        if file_path not in files:
            raise HubError(404, "EntryNotFound", f"{file_path} does not exist on {unquote(match['rev'])}")
        content = files[file_path]
        commit = {"X-Repo-Commit": sha}
        if file_path.endswith(LFS_SUFFIXES):
            digest = hashlib.sha256(content).hexdigest()
            redirect = {
                **commit,
                "Location": f"{self.cdn_url}/lfs/{digest}",
                "X-Linked-Etag": f'"{digest}"',
                "X-Linked-Size": str(len(content)),
                "ETag": f'"{git_blob_sha(content)}"',
                "Content-Length": "0",
            }
            return 302, redirect, b""
        return _content(content, headers, {**commit, "ETag": f'"{git_blob_sha(content)}"'})


def _upload_mode(path: str) -> str:
    return "lfs" if path.endswith(LFS_SUFFIXES) else "regular"


def _json(value) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(value).encode()


def _content(content: bytes, request_headers, headers: dict) -> tuple[int, dict, bytes]:
    """200 with the whole file, or 206 with the requested byte range."""
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    wanted = request_headers.get("Range")
    if not wanted:
        return 200, headers, content
    start, _, end = wanted.removeprefix("bytes=").partition("-")
    if start:
        first, last = int(start), min(int(end) if end else len(content) - 1, len(content) - 1)
    else:
        first, last = max(len(content) - int(end), 0), len(content) - 1
    if first >= len(content):
        return 416, {"Content-Range": f"bytes */{len(content)}"}, b""
    headers["Content-Range"] = f"bytes {first}-{last}/{len(content)}"
    return 206, headers, content[first : last + 1]


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _answer(self):
            url = urlsplit(self.path)
            body = self._read_body()
            with hub._lock:
                hub.requests.append((self.command, url.path))
                try:
                    if url.path.startswith("/api/"):
                        status, headers, content = hub.handle_api(self.command, url.path, parse_qs(url.query), body)
                    else:
                        status, headers, content = hub.handle_file(self.command, url.path, self.headers, body)
                except HubError as error:
                    status, content = error.status, json.dumps({"error": error.message}).encode()
                    headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
                    if error.code:
                        headers["X-Error-Code"] = error.code
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args):  # quiet: `hub.requests` records what was asked
            pass

    return Handler


@pytest.fixture
def hub_server(tmp_path, monkeypatch):
    """A running `HubServer` that this process and `hub_server.env` subprocesses use (see the module docstring)."""
    import datasets
    import huggingface_hub
    import transformers.utils.hub

    with HubServer(tmp_path / "hf_home") as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        for name in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_XET_CACHE"):
            monkeypatch.delenv(name, raising=False)
        constants = huggingface_hub.constants
        hub_cache = str(server.cache_root / "hub")
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HOME", str(server.cache_root))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", hub_cache)
        monkeypatch.setattr(constants, "HUGGINGFACE_HUB_CACHE", hub_cache)
        monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", server.url)
        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # rebuilt with the endpoint on first use
        config = datasets.config
        datasets_cache = server.cache_root / "datasets"
        monkeypatch.setattr(config, "HF_ENDPOINT", server.url)
        monkeypatch.setattr(config, "HUB_DATASETS_URL", server.url + "/datasets/{repo_id}/resolve/{revision}/{path}")
        monkeypatch.setattr(config, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(config, "HF_DATASETS_OFFLINE", False)
        monkeypatch.setattr(config, "HF_DATASETS_CACHE", datasets_cache)
        monkeypatch.setattr(config, "DOWNLOADED_DATASETS_PATH", datasets_cache / "downloads")
        monkeypatch.setattr(config, "EXTRACTED_DATASETS_PATH", datasets_cache / "downloads" / "extracted")
        yield server
