"""What docs/reliability.md promises: outputs get the umask's permissions; a job stops when its Snakemake
is killed and leaves neither an output nor a temporary behind; after kill -9 (of Snakemake alone or of the
whole process group) one command line recovers, resuming training, with the predictions an uninterrupted
run gives."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from qabench.errors import InputError
from qabench.io import atomic_dir, atomic_path, exclusive, write_json

TARGET = "results/predictions/tinybert/base/dev/predictions.json"
OUTPUTS = [f"results/predictions/tinybert/base/dev/{name}" for name in ("predictions.json", "na_probs.json")]


# ------------------------------------------------------------------------------------------ permissions


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                        (0o077, 0o600, 0o700)])
def test_outputs_get_the_permissions_the_umask_gives(umask, tmp_path, mask, file_mode, dir_mode):
    """mkstemp/mkdtemp make 0600/0700 whatever the umask; the outputs must be readable as a plain
    open()/mkdir() would make them (a model directory others on a shared file system load)."""
    umask(mask)
    write_json(tmp_path / "metrics.json", {"f1": 1.0})
    with atomic_path(tmp_path / "table.parquet") as tmp:
        tmp.write_bytes(b"x")
    with atomic_dir(tmp_path / "model") as tmp:
        write_json(tmp / "qabench.json", {})
        (tmp / "weights.safetensors").write_bytes(b"x")
        (tmp / "sub").mkdir()
    for path in (tmp_path / "metrics.json", tmp_path / "table.parquet", tmp_path / "model" / "qabench.json",
                 tmp_path / "model" / "weights.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == file_mode, path
    for path in (tmp_path / "model", tmp_path / "model" / "sub"):
        assert stat.S_IMODE(path.stat().st_mode) == dir_mode, path


def test_a_saved_model_directory_is_readable_by_the_group_under_umask_002(umask, trained_encoder, tmp_path):
    """The whole directory the train rule writes, through qabench.model_dir.write."""
    from qabench import model_dir
    from qabench.models import encoder
    from qabench.model_dir import load_model

    umask(0o002)
    model, tokenizer, settings = load_model(trained_encoder[0])
    model_dir.write(tmp_path / "copy", lambda d: encoder.FAMILY.save(model, tokenizer, d), settings, {})
    paths = [tmp_path / "copy", *(tmp_path / "copy").rglob("*")]
    assert len(paths) > 3
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == (0o775 if path.is_dir() else 0o664), path


# ------------------------------------------------------------------------------------------ kill -9 pieces


def test_temporaries_a_killed_writer_left_are_removed_by_the_next_write(tmp_path):
    (tmp_path / ".model.ab12cd_3").mkdir()
    (tmp_path / ".model.ab12cd_3" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".metrics.json.x1y2z3w4.tmp").write_text("{")
    (tmp_path / ".model.keep").mkdir()  # not a name the atomic writers make: left alone
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "x").write_text("x")
    write_json(tmp_path / "metrics.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.keep", "metrics.json", "model"]


def test_a_second_writer_of_the_same_resume_state_waits_for_the_first(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from qabench.io import exclusive
        with exclusive({str(tmp_path)!r}):
            print("held", flush=True)
            time.sleep(3)
        """)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(InputError, match="another process has been using it"):
        with exclusive(tmp_path, wait_s=0.5):
            pass
    t0 = time.monotonic()
    with exclusive(tmp_path, wait_s=60):  # granted as soon as the holder exits
        waited = time.monotonic() - t0
    holder.wait()
    assert 0.5 < waited < 30


def _fake_snakemake(tmp_path: Path, job: str) -> Path:
    """An executable named snakemake that runs ``job`` as a child through a shell, as Snakemake does."""
    script = tmp_path / "snakemake"
    script.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                      f"sys.exit(subprocess.call(['/bin/bash', '-c', {job!r}]))\n")
    script.chmod(0o755)
    return script


def test_a_job_stops_when_its_snakemake_is_killed_and_writes_nothing(tmp_path):
    """kill -9 of Snakemake alone: its job notices within a second, is interrupted (its atomic write is
    undone, its temporary removed) and exits; the output never appears."""
    out = tmp_path / "out" / "result.json"
    (tmp_path / "job.py").write_text(textwrap.dedent(f"""
        import time
        from qabench.io import atomic_path, stop_with_snakemake
        assert stop_with_snakemake(poll_s=0.2) is not None
        with atomic_path({str(out)!r}) as tmp:
            open({str(tmp_path / "started")!r}, "w").close()
            time.sleep(60)
            tmp.write_text("done")
        """))
    job = f"set -e\n{sys.executable} {tmp_path / 'job.py'} {out}\n"
    fake = subprocess.Popen([str(_fake_snakemake(tmp_path, job))], cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "started").exists()
        job_pids = _pids_with(str(out))
        assert job_pids
        os.kill(fake.pid, signal.SIGKILL)  # Snakemake alone: its job is orphaned
        fake.wait()
        deadline = time.monotonic() + 20
        while _pids_with(str(out)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pids_with(str(out)), "the orphaned job is still running"
        assert not out.exists() and list(out.parent.iterdir()) == []  # no output, no temporary
    finally:
        _kill_group(fake.pid)


def test_not_under_snakemake_there_is_nothing_to_watch():
    from qabench.io import stop_with_snakemake

    assert stop_with_snakemake() is None


# ------------------------------------------------------------------------------------------ the pipeline


def _pids_with(text: str) -> list[int]:
    """Processes (other than this one) whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _pids_in(workdir: Path) -> list[int]:
    """Processes working in ``workdir`` (Snakemake runs its jobs there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(workdir.resolve()):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _kill_group(pid: int) -> None:
    """What is left of a process group this test started (its leader's pid is the group id)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def path_without_this_venv() -> str:
    venv_bin = os.path.dirname(sys.executable)
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)


def snakemake_args(workdir: Path) -> list[str]:
    """The arguments of the run (the same for the run, --unlock and the recovery)."""
    return ["--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
            str(REPO / "configs" / "smoke.yaml"), str(workdir / "longer.yaml")]


def start(workdir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", *extra, *snakemake_args(workdir),
                             "--", TARGET], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PATH": path_without_this_venv()})


def recover(workdir: Path) -> subprocess.CompletedProcess:
    """docs/reliability.md's recovery line, after any kill:
    snakemake --unlock ARGS && snakemake --cores N --rerun-incomplete ARGS -- TARGETS"""
    args = " ".join(f"'{a}'" for a in snakemake_args(workdir))
    line = (f"{sys.executable} -m snakemake --unlock {args} && "
            f"{sys.executable} -m snakemake --cores 2 --rerun-incomplete {args} -- {TARGET}")
    return subprocess.run(["/bin/bash", "-c", line], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PATH": path_without_this_venv()})


def new_workdir(path: Path) -> Path:
    """A scratch workspace whose tinybert trains long enough (about 150 steps, a checkpoint every 5)
    to be killed in the middle, and for a job of a killed Snakemake to notice before it ends."""
    path.mkdir()
    (path / "longer.yaml").write_text(yaml.safe_dump({"models": {"tinybert": {"train": {
        "epochs": 8, "save_every_steps": 5}}}}))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same target, never interrupted."""
    workdir = new_workdir(tmp_path_factory.mktemp("recovery") / "reference")
    run = start(workdir)
    assert run.wait(timeout=1200) == 0
    return workdir


def _kill_mid_training(workdir: Path, whole_group: bool) -> str:
    """Start the run, kill it once training has written a checkpoint; the killed job's log."""
    checkpoint = workdir / "results" / ".train_state" / "tinybert" / "base" / "checkpoint.pt"
    run = start(workdir)
    try:
        deadline = time.monotonic() + 600
        while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpoint.exists(), "training ended or failed before its first checkpoint"
        if whole_group:
            os.killpg(run.pid, signal.SIGKILL)
        else:
            os.kill(run.pid, signal.SIGKILL)  # Snakemake alone; its training job lives on for now
        run.wait()
        deadline = time.monotonic() + 30
        while _pids_in(workdir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pids_in(workdir), "a job of the killed Snakemake is still running"
    finally:
        _kill_group(run.pid)
    assert not (workdir / "results" / "models" / "tinybert" / "base").exists()  # no half-written model
    assert not list((workdir / "results" / "models" / "tinybert").glob(".base.*"))  # no temporary left
    assert checkpoint.exists()  # what the rerun resumes from
    assert (workdir / ".snakemake" / "locks").is_dir() and any((workdir / ".snakemake" / "locks").iterdir())
    return (workdir / "logs" / "train" / "tinybert" / "base.log").read_text()


@pytest.mark.parametrize("whole_group", [False, True], ids=["snakemake-alone", "process-group"])
def test_one_command_line_recovers_from_kill_9(reference, tmp_path, whole_group):
    workdir = new_workdir(tmp_path / "killed")
    killed_log = _kill_mid_training(workdir, whole_group)
    if not whole_group:
        assert "Snakemake (pid" in killed_log and "is gone: stopping this job" in killed_log
    result = recover(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from step" in (workdir / "logs" / "train" / "tinybert" / "base.log").read_text()
    assert not (workdir / "results" / ".train_state" / "tinybert" / "base").exists()
    for relative in OUTPUTS:
        assert (workdir / relative).read_bytes() == (reference / relative).read_bytes(), relative
    again = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--dry-run",
                            *snakemake_args(workdir), "--", TARGET], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PATH": path_without_this_venv()})
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
