"""Fetching a data source: checksums, local mirrors, offline failures, atomic output."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from qabench.download import content_sha256, fetch, fetch_first, find_local_copy
from qabench.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "workflow_scripts" / "download.py"
DEV_TINY = REPO / "tests" / "data" / "dev-tiny.json.gz"
BODY = gzip.decompress(DEV_TINY.read_bytes())
SHA = hashlib.sha256(BODY).hexdigest()
WRONG_SHA = "0" * 64
CLOSED_URL = "http://127.0.0.1:9/dev-v2.0.json"  # the discard port: nothing listens there


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("fetch tried the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def src_json(tmp_path) -> Path:
    path = tmp_path / "src" / "dev-v2.0.json"
    path.parent.mkdir()
    path.write_bytes(BODY)
    return path


@pytest.fixture
def out_dir(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _assert_empty(folder: Path) -> None:
    assert not folder.exists() or list(folder.iterdir()) == [], list(folder.iterdir())


def _gunzip(path: Path) -> bytes:
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b", "output is not gzip"
    return gzip.decompress(raw)


# ---------------------------------------------------------------- local paths


def test_content_sha256_ignores_gzip(src_json):
    assert content_sha256(src_json) == SHA
    assert content_sha256(DEV_TINY) == SHA


def test_fetch_local_json_is_stored_as_gzip(src_json, out_dir):
    out = out_dir / "dev.json.gz"
    assert fetch(out, path=str(src_json), sha256=SHA) == str(src_json)
    assert _gunzip(out) == BODY
    assert sorted(p.name for p in out_dir.iterdir()) == ["dev.json.gz"]


def test_fetch_local_gz_without_checksum(out_dir):
    out = out_dir / "dev.json.gz"
    fetch(out, path=str(DEV_TINY))
    assert _gunzip(out) == BODY


def test_fetch_accepts_upper_case_checksum(src_json, out_dir):
    fetch(out_dir / "dev.json.gz", path=str(src_json), sha256=SHA.upper())
    assert _gunzip(out_dir / "dev.json.gz") == BODY


def test_sha256_mismatch_refuses_and_writes_nothing(src_json, out_dir):
    with pytest.raises(InputError, match="sha256 mismatch") as info:
        fetch(out_dir / "dev.json.gz", path=str(src_json), sha256=WRONG_SHA)
    assert str(src_json) in str(info.value) and SHA in str(info.value)
    _assert_empty(out_dir)


def test_sha256_mismatch_keeps_an_earlier_output(src_json, out_dir):
    out = out_dir / "dev.json.gz"
    out.write_bytes(b"earlier")
    with pytest.raises(InputError, match="sha256 mismatch"):
        fetch(out, path=str(src_json), sha256=WRONG_SHA)
    assert out.read_bytes() == b"earlier"
    assert [p.name for p in out_dir.iterdir()] == ["dev.json.gz"]


def test_missing_local_path(tmp_path, out_dir):
    with pytest.raises(InputError, match="file not found"):
        fetch(out_dir / "dev.json.gz", path=str(tmp_path / "nope.json"))
    _assert_empty(out_dir)


# ---------------------------------------------------------------- mirrors


@pytest.mark.parametrize("name", ["dev-v2.0.json", "dev-v2.0.json.gz"])
def test_url_found_in_a_mirror_needs_no_network(tmp_path, out_dir, no_network, name):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / name).write_bytes(gzip.compress(BODY) if name.endswith(".gz") else BODY)
    out = out_dir / "dev.json.gz"
    origin = fetch(out, url=CLOSED_URL, sha256=SHA, mirrors=[str(tmp_path / "empty"), str(mirror)])
    assert origin == str(mirror / name)
    assert _gunzip(out) == BODY


def test_mirror_with_wrong_checksum_is_ignored(tmp_path, out_dir, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dev-v2.0.json").write_bytes(BODY.replace(b"Normans", b"Vikings"))
    assert find_local_copy(CLOSED_URL, [str(bad)], SHA) is None
    calls = []

    def offline(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(InputError, match="download failed"):
        fetch(out_dir / "dev.json.gz", url=CLOSED_URL, sha256=SHA, mirrors=[str(bad)])
    assert calls == [CLOSED_URL]  # it fell through to the network instead of using the bad copy
    _assert_empty(out_dir)
    # a good copy in a later mirror is found past the bad one
    good = tmp_path / "good"
    good.mkdir()
    (good / "dev-v2.0.json.gz").write_bytes(DEV_TINY.read_bytes())
    assert fetch(out_dir / "dev.json.gz", url=CLOSED_URL, sha256=SHA,
                 mirrors=[str(bad), str(good)]) == str(good / "dev-v2.0.json.gz")
    assert calls == [CLOSED_URL]
    assert _gunzip(out_dir / "dev.json.gz") == BODY


def test_corrupt_gzip_in_a_mirror_is_ignored(tmp_path, out_dir, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "dev-v2.0.json.gz").write_bytes(DEV_TINY.read_bytes()[:40])

    def offline(url, timeout=None):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    try:
        fetch(out_dir / "dev.json.gz", url=CLOSED_URL, sha256=SHA, mirrors=[str(mirror)])
    except InputError as err:
        assert "download failed" in str(err)
    except Exception as err:  # noqa: BLE001 - what the bug raises today
        raise AssertionError(f"{type(err).__name__}: {err}") from None
    _assert_empty(out_dir)


def test_corrupt_gzip_path_with_checksum_is_an_input_error(tmp_path, out_dir):
    corrupt = tmp_path / "dev.json.gz"
    corrupt.write_bytes(DEV_TINY.read_bytes()[:40])
    try:
        fetch(out_dir / "dev.json.gz", path=str(corrupt), sha256=SHA)
    except InputError:
        pass
    except Exception as err:  # noqa: BLE001
        raise AssertionError(f"{type(err).__name__}: {err}") from None
    else:
        raise AssertionError("a corrupt file was accepted")
    _assert_empty(out_dir)


# ---------------------------------------------------------------- the network


def test_unreachable_url_says_what_to_do_offline(tmp_path):
    out_dir = tmp_path / "out"
    with pytest.raises(InputError) as info:
        fetch(out_dir / "dev.json.gz", url=CLOSED_URL, sha256=SHA, mirrors=[str(tmp_path / "none")], timeout=3)
    message = str(info.value)
    assert message.startswith(CLOSED_URL)
    assert "download failed" in message and "local_mirrors" in message and "path" in message
    assert "dev-v2.0.json" in message and "\n" not in message
    _assert_empty(out_dir)  # no output, no .download-* folder


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "dev-v2.0.json").write_bytes(BODY)
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_from_a_local_server(server, out_dir):
    url = f"{server}/dev-v2.0.json"
    assert fetch(out_dir / "dev.json.gz", url=url, sha256=SHA, timeout=10) == url
    assert _gunzip(out_dir / "dev.json.gz") == BODY
    assert [p.name for p in out_dir.iterdir()] == ["dev.json.gz"]


def test_downloaded_file_with_wrong_checksum_is_refused(server, out_dir):
    with pytest.raises(InputError, match="sha256 mismatch"):
        fetch(out_dir / "dev.json.gz", url=f"{server}/dev-v2.0.json", sha256=WRONG_SHA, timeout=10)
    _assert_empty(out_dir)


def test_http_error_is_an_input_error(server, out_dir):
    with pytest.raises(InputError, match="download failed"):
        fetch(out_dir / "dev.json.gz", url=f"{server}/missing.json", sha256=SHA, timeout=10)
    _assert_empty(out_dir)


def test_no_url_and_no_path():
    with pytest.raises(InputError, match="needs a `url` or a `path`"):
        fetch("unused.json.gz")


# ---------------------------------------------------------------- the command line


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_mismatch_exits_2_with_one_line(src_json, out_dir):
    proc = _run("--path", src_json, "--sha256", WRONG_SHA, "--out", out_dir / "dev.json.gz")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "sha256 mismatch" in lines[0] and str(src_json) in lines[0]
    assert "Traceback" not in proc.stderr
    _assert_empty(out_dir)


def test_cli_good_path(src_json, out_dir):
    proc = _run("--path", src_json, "--sha256", SHA, "--out", out_dir / "dev.json.gz")
    assert proc.returncode == 0, proc.stderr
    assert _gunzip(out_dir / "dev.json.gz") == BODY



# ---------------------------------------------------------------- the first source that can be had


def test_first_of_falls_through_a_missing_file_and_an_offline_url(tmp_path, src_json, out_dir, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    candidates = [{"name": "official", "url": CLOSED_URL, "sha256": SHA},
                  {"name": "absent", "path": str(tmp_path / "no-such.json")},
                  {"name": "local", "path": str(src_json), "sha256": SHA}]
    record = fetch_first(out_dir / "train.json.gz", candidates, mirrors=[str(tmp_path / "none")])
    assert record["source"] == "local" and record["origin"] == str(src_json) and record["sha256"] == SHA
    assert [s["source"] for s in record["skipped"]] == ["official", "absent"]
    assert "download failed" in record["skipped"][0]["why"] and "file not found" in record["skipped"][1]["why"]
    assert _gunzip(out_dir / "train.json.gz") == BODY


def test_first_of_takes_the_first_when_it_is_there(tmp_path, src_json, out_dir, no_network):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "dev-v2.0.json.gz").write_bytes(DEV_TINY.read_bytes())
    candidates = [{"name": "official", "url": CLOSED_URL, "sha256": SHA},
                  {"name": "local", "path": str(src_json), "sha256": SHA}]
    record = fetch_first(out_dir / "train.json.gz", candidates, mirrors=[str(mirror)])
    assert record["source"] == "official" and record["skipped"] == []


def test_first_of_stops_at_a_checksum_mismatch(src_json, out_dir, no_network):
    candidates = [{"name": "wrong", "path": str(src_json), "sha256": WRONG_SHA},
                  {"name": "fine", "path": str(DEV_TINY), "sha256": SHA}]
    with pytest.raises(InputError, match="sha256 mismatch"):
        fetch_first(out_dir / "train.json.gz", candidates)
    _assert_empty(out_dir)


def test_first_of_with_nothing_to_have_names_every_source(tmp_path, out_dir):
    candidates = [{"name": "a", "path": str(tmp_path / "a.json")}, {"name": "b", "path": str(tmp_path / "b.json")}]
    with pytest.raises(InputError, match="none of a, b can be had") as info:
        fetch_first(out_dir / "train.json.gz", candidates)
    assert "\n" not in str(info.value)
    _assert_empty(out_dir)


def test_cli_first_of_records_the_source(tmp_path, src_json, out_dir):
    sources = [{"name": "absent", "path": str(tmp_path / "nope.json")},
               {"name": "here", "path": str(src_json), "sha256": SHA, "description": "a local copy"}]
    result = _run("--first-of", json.dumps(sources), "--out", out_dir / "t.json.gz",
                  "--provenance-out", out_dir / "t.source.json")
    assert result.returncode == 0, result.stderr
    record = json.loads((out_dir / "t.source.json").read_text())
    assert record["source"] == "here" and record["description"] == "a local copy"
    assert record["skipped"][0]["source"] == "absent"
    assert "source absent skipped" in result.stderr and "a local copy" in result.stderr


def test_a_path_without_checksum_must_be_squad(tmp_path, out_dir):
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(InputError) as info:
        fetch(out_dir / "x.json.gz", path=str(bad))
    assert str(info.value).startswith(str(bad))
    _assert_empty(out_dir)


def test_stored_gzip_is_byte_identical_between_runs(src_json, tmp_path):
    first, second = tmp_path / "a" / "x.json.gz", tmp_path / "b" / "y.json.gz"
    fetch(first, path=str(src_json))
    fetch(second, path=str(src_json))
    assert first.read_bytes() == second.read_bytes()
    assert src_json.name.encode() not in first.read_bytes()[:64] and b".tmp" not in first.read_bytes()[:64]
