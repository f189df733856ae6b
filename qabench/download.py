"""Fetching a data source: verified by sha256, written atomically, local copies preferred."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from qabench.data import load_squad
from qabench.errors import InputError
from qabench.io import atomic_path


class Unavailable(InputError):
    """A source that cannot be had here (missing file, failed download); a wrong checksum is not this."""


def content_sha256(path: str | Path) -> str:
    """sha256 of the file's content after gunzip (so a .json.gz mirror matches the .json checksum)."""
    digest = hashlib.sha256()
    path = Path(path)
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(path, f"corrupt gzip data ({err})") from None
    return digest.hexdigest()


def _store(src: Path, out: Path) -> None:
    """Copy ``src`` to ``out`` (always gzip), atomically."""
    with atomic_path(out) as tmp:
        if src.read_bytes()[:2] == b"\x1f\x8b":
            shutil.copyfile(src, tmp)
        else:
            # no file name and no mtime in the gzip header: the same input gives the same bytes
            with open(src, "rb") as f, open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb",
                                                                             fileobj=raw, mtime=0) as g:
                shutil.copyfileobj(f, g)


def _check(path: Path, sha256: str | None, origin: str) -> None:
    if sha256 and content_sha256(path) != sha256.lower():
        raise InputError(origin, f"sha256 mismatch: expected {sha256}, got {content_sha256(path)}; refusing to continue")


def find_local_copy(url: str, mirrors: list[str], sha256: str | None) -> Path | None:
    """A file named like the URL's (plain or .gz) in one of the mirror folders, with the right checksum."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    for folder in mirrors:
        for candidate in (Path(folder) / name, Path(folder) / f"{name}.gz"):
            if not candidate.is_file():
                continue
            try:
                if sha256 is None or content_sha256(candidate) == sha256.lower():
                    return candidate
            except InputError:
                continue  # a damaged mirror copy is skipped like one with the wrong checksum
    return None


def fetch(out: str | Path, *, url: str | None = None, path: str | None = None, sha256: str | None = None,
          mirrors: list[str] | None = None, timeout: float = 60.0) -> str:
    """Put the source at ``out`` (gzip JSON). Returns where it came from.

    A missing file or a failed download raises ``Unavailable``."""
    out = Path(out)
    if path:
        src = Path(path)
        if not src.is_file():
            raise Unavailable(path, "file not found; put the SQuAD file there, or change this source's "
                                   "`path` (or give a `url` with its `sha256`) under data.sources in the config")
        if sha256:
            _check(src, sha256, path)
        else:
            load_squad(src)  # unchecked files are at least SQuAD, so errors name the user's file
        _store(src, out)
        return str(src)
    if not url:
        raise InputError("config", "a data source needs a `url` or a `path`")
    local = find_local_copy(url, mirrors or [], sha256)
    if local is not None:
        _store(local, out)
        return str(local)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".download-") as folder:
        tmp = Path(folder) / "body"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
                shutil.copyfileobj(response, f)
        except (urllib.error.URLError, OSError) as err:
            name = url.rsplit("/", 1)[-1]
            raise Unavailable(url, f"download failed ({getattr(err, 'reason', err)}). Offline? Fetch {name} "
                                   f"elsewhere and either put it (or {name}.gz) in a folder listed under "
                                   f"data.local_mirrors, or give the source a `path:` instead of `url:`") from None
        _check(tmp, sha256, url)
        _store(tmp, out)
    return url


def fetch_first(out: str | Path, candidates: list[dict], mirrors: list[str] | None = None,
                timeout: float = 60.0) -> dict:
    """Fetch the first of ``candidates`` (dicts with name and url or path, and sha256) that can be had.

    A missing file or a failed download falls through to the next candidate; a checksum mismatch
    or a damaged file stops, as with a single source. Returns which one was used and why the
    earlier ones were skipped.
    """
    skipped = []
    for spec in candidates:
        try:
            origin = fetch(out, url=spec.get("url"), path=spec.get("path"), sha256=spec.get("sha256"),
                           mirrors=mirrors, timeout=timeout)
        except Unavailable as err:
            skipped.append({"source": spec["name"], "why": str(err)})
            continue
        return {"source": spec["name"], "origin": origin, "sha256": content_sha256(out), "skipped": skipped}
    tried = "; ".join(f"{s['source']}: {s['why']}" for s in skipped)
    raise InputError("data sources", f"none of {', '.join(c['name'] for c in candidates)} can be had ({tried})")


def check_local_sources(sources: dict, eval_sources: list[str], train_sets: dict[str, list[str]]) -> None:
    """Refuse, before any job runs, local sources that cannot be used: an eval set's `path:` file that is
    missing, a training set (name -> its sources in order) none of whose sources could be had, an
    existing `path:` file whose sha256 is wrong. The caller leaves out what is already fetched."""
    for name in eval_sources:
        _check_path_source(name, sources[name], required=True)
    for train_set, names in train_sets.items():
        if not any([_check_path_source(n, sources[n], required=False) for n in names]):
            where = "data.train" if train_set == "default" else f"data.train_sets.{train_set}"
            raise InputError(where, f"none of its sources ({', '.join(names)}) can be had here: put one of "
                                    "their files in place, or add a source with a `url`")


def _check_path_source(name: str, spec: dict, required: bool) -> bool:
    """Whether the source might be had (a URL might; a path must exist); a wrong checksum is an error."""
    if "path" not in spec:
        return True
    path = Path(spec["path"])
    if not path.is_file():
        if required:
            raise InputError(path, f"data.sources.{name}: file not found; put the SQuAD file there or change its `path`")
        return False
    if spec.get("sha256"):
        _check(path, spec["sha256"], f"{path} (data.sources.{name})")
    return True
