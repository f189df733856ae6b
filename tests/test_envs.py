"""Conda envs per rule group: pins agree with pyproject.toml, and every rule declares its env."""

import re
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import REPO

ENVS = sorted((REPO / "envs").glob("*.yaml"))


def pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {Requirement(s).name: Requirement(s) for s in specs}


def pip_lines(env_file) -> list[str]:
    dependencies = yaml.safe_load(env_file.read_text())["dependencies"]
    pip = next(d["pip"] for d in dependencies if isinstance(d, dict) and "pip" in d)
    return [line for line in pip if not line.startswith("-e")]


def test_the_rule_groups_have_their_envs():
    assert {p.stem for p in ENVS} >= {"data", "torch", "quant", "mamba", "report"}


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_env_pins_agree_with_pyproject(env_file):
    known = pyproject_requirements()
    for line in pip_lines(env_file):
        requirement = Requirement(line)
        assert requirement.name in known, f"{env_file.name}: {requirement.name} is not in pyproject.toml"
        assert requirement.specifier == known[requirement.name].specifier, (
            f"{env_file.name}: {line} but pyproject.toml has {known[requirement.name]}")
    assert "-e .." in yaml.safe_load(env_file.read_text())["dependencies"][-1]["pip"]  # qabench itself


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_env_python_is_one_pyproject_allows(env_file):
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    python = next(d for d in yaml.safe_load(env_file.read_text())["dependencies"]
                  if isinstance(d, str) and d.startswith("python="))
    assert Requirement(f"python{requires}").specifier.contains(python.split("=")[1] + ".0")


def test_every_rule_declares_a_conda_env():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        blocks = re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M)
        for block in blocks:
            name = re.match(r"rule (\w+):", block)
            if name and "input:" in block and "shell:" in block:
                assert re.search(r"^\s+conda:\s*\n\s+(\"\.\./envs/\w+\.yaml\"|model_env)", block, re.M), \
                    f"{smk.name}: rule {name.group(1)} has no conda env"


def test_model_jobs_get_the_env_their_model_needs():
    common = (REPO / "rules" / "common.smk").read_text()
    namespace = {"MODELS": {"m": {"family": "mamba"}, "e": {"family": "encoder"}}}
    exec(common[common.index("def model_env"):], namespace)

    class Wildcards:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    model_env = namespace["model_env"]
    assert model_env(Wildcards(model="m", variant="int8")) == "../envs/mamba.yaml"
    assert model_env(Wildcards(model="e")) == "../envs/torch.yaml"
    assert model_env(Wildcards(model="e", variant="base")) == "../envs/torch.yaml"
    assert model_env(Wildcards(model="e", variant="qlora")) == "../envs/quant.yaml"
    for path in {"../envs/mamba.yaml", "../envs/torch.yaml", "../envs/quant.yaml"}:
        assert (REPO / "rules" / path).resolve().is_file()
