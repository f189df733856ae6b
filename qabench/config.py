"""Loading and validating an experiment config: JSON schema, defaults, cross-references."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import jsonschema
import yaml

from qabench import compression, models
from qabench.errors import InputError
from qabench.names import NAME
from qabench.windows import WindowSpec
from qabench.io import first_line

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


def _with_defaults(validator_class):
    """``validator_class`` that fills in the schema's defaults and whose integers are ints only: YAML's
    ``8.0`` is a float, which the modules (``isinstance(x, int)``) and TrainSettings refuse."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    integers = validator_class.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
    return jsonschema.validators.extend(validator_class, {"properties": set_defaults}, type_checker=integers)


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "top level"


TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
              "object": "a mapping", "array": "a list", "null": "null"}
BOUNDS = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "above", "exclusiveMaximum": "below"}


def _show(value: object, limit: int = 60) -> str:
    """``value`` as the config would write it (null, true, "text"), cut to ``limit`` characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _plain(value: object) -> str:
    return value if isinstance(value, str) else _show(value)


def _unknown_keys(error: jsonschema.ValidationError, config: dict) -> str:
    """``where: unknown lora option 'rnak' (known: rank, alpha, ...)``: what the key is, and which are known."""
    path = tuple(error.absolute_path)
    known = list(error.schema.get("properties", {}))
    what = "key"
    if len(path) == 2 and path[0] == "compression":
        what, known = f"{error.instance.get('method')} option", [k for k in known if k != "method"]
    elif len(path) == 3 and path[0] == "models" and path[2] == "options":
        what = f"{config['models'][path[1]].get('family')} option"
    elif path[-1:] == ("train",):
        what = "training setting"
    unknown = [k for k in error.instance if k not in error.schema.get("properties", {})]
    listed = f"known: {', '.join(known)}" if known else error.schema.get("description", "known: none")
    return (f"{_where(error)}: unknown {what}{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))} ({listed})")


def _explain(error: jsonschema.ValidationError, config: dict) -> str:
    where = _where(error)
    if isinstance(error.schema, dict) and "errorMessage" in error.schema:
        return f"{where}: {error.schema['errorMessage']} (got {_show(error.instance)})"
    if error.validator == "additionalProperties" and error.validator_value is False \
            and isinstance(error.instance, dict):
        return _unknown_keys(error, config)
    if error.validator == "enum":
        return f"{where}: must be one of {', '.join(map(_plain, error.validator_value))}, not {_show(error.instance)}"
    if error.validator == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"{where}: must be {' or '.join(TYPE_NAMES.get(t, t) for t in types)}, not {_show(error.instance)}"
    if error.validator in BOUNDS:
        return f"{where}: must be {BOUNDS[error.validator]} {_show(error.validator_value)}, not {_show(error.instance)}"
    if error.validator == "oneOf" and error.context:
        best = min(error.context, key=lambda e: len(e.message))
        return f"{where}: {best.message}"
    return f"{where}: {error.message}"


def _resolve(path: str, base_dir: str | Path | None) -> str:
    return str(Path(base_dir) / path) if base_dir and not Path(path).is_absolute() else path


def _check_sources(config: dict, source: str) -> None:
    """Say which of url/sha256/path is wrong before the schema's less specific oneOf message."""
    data = config.get("data") if isinstance(config, dict) else None
    sources = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(sources, dict):
        return
    for name, spec in sources.items():
        if not isinstance(spec, dict):
            continue
        if "url" in spec and "path" in spec:
            raise InputError(source, f"data.sources.{name}: give either `url` (with `sha256`) or `path`, not both")
        if "url" in spec and "sha256" not in spec:
            raise InputError(source, f"data.sources.{name}: a `url` source needs its `sha256`")
        if "url" not in spec and "path" not in spec:
            raise InputError(source, f"data.sources.{name}: needs a `url` (with `sha256`) or a `path`")


def schema() -> dict:
    """The config schema with its family and method lists taken from the registries: each family's
    ``options`` checked by definitions/family_options_FAMILY, each method's by method_options_METHOD
    (a registered family without a definition there gets its options checked when its jobs run)."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    definitions = schema["definitions"]
    model = schema["properties"]["models"]["additionalProperties"]
    model["properties"]["family"]["enum"] = list(models.FAMILIES)
    model["allOf"] = [{"if": {"properties": {"family": {"const": name}}, "required": ["family"]},
                       "then": {"properties": {"options": {"$ref": f"#/definitions/family_options_{name}"}}}}
                      for name in models.FAMILIES if f"family_options_{name}" in definitions]
    variant = schema["properties"]["compression"]["additionalProperties"]
    variant["properties"]["method"]["enum"] = list(compression.METHODS)
    variant["allOf"] = [{"if": {"properties": {"method": {"const": name}}, "required": ["method"]},
                         "then": {"$ref": f"#/definitions/method_options_{name}"}}
                        for name in compression.METHODS if f"method_options_{name}" in definitions]
    return schema


def validate(config: dict, source: str = "config", base_dir: str | Path | None = None) -> dict:
    """Check ``config`` against the schema and its cross-references; fill defaults; return it.

    Relative data paths (``path:``, ``local_mirrors``) are resolved against ``base_dir``.
    """
    _check_sources(config, source)
    _fill_methods(config, source)
    validator = _with_defaults(jsonschema.Draft7Validator)(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: len(list(e.absolute_path)))
    if errors:
        raise InputError(source, _explain(errors[0], config))
    sources = config["data"]["sources"]
    train = config["data"]["train"]
    train.setdefault("holdout_articles", 0)
    _check_train_set("data.train", train, sources, source)
    _check_names(config, source)
    for name, override in config["data"]["train_sets"].items():
        _check_train_set(f"data.train_sets.{name}", override, sources, source)
    for name, eval_set in config["data"]["eval_sets"].items():
        if eval_set["source"] not in sources:
            raise InputError(source, f"data.eval_sets.{name}.source: '{eval_set['source']}' is not one of data.sources")
    for spec in sources.values():
        if "path" in spec:
            spec["path"] = _resolve(spec["path"], base_dir)
    config["data"]["local_mirrors"] = [_resolve(m, base_dir) for m in config["data"]["local_mirrors"]]
    efficiency = config["efficiency"]
    efficiency.setdefault("eval_set", next(iter(config["data"]["eval_sets"])))
    if efficiency["eval_set"] not in config["data"]["eval_sets"]:
        raise InputError(source, f"efficiency.eval_set: '{efficiency['eval_set']}' is not one of data.eval_sets")
    for name in config["learning_curves"]["eval_sets"]:
        if name not in config["data"]["eval_sets"]:
            raise InputError(source, f"learning_curves.eval_sets: '{name}' is not one of data.eval_sets")
    tok = config["tokenize"]
    WindowSpec(tok["max_length"], tok["stride"], tok["max_question_tokens"]).validate(f"{source}: tokenize")
    for name, spec in config["models"].items():
        if spec["train_set"] != "default" and spec["train_set"] not in config["data"]["train_sets"]:
            raise InputError(source, f"models.{name}.train_set: '{spec['train_set']}' is not 'default' or one of "
                                     f"data.train_sets ({', '.join(config['data']['train_sets']) or 'none configured'})")
        gpus, batch_size = spec["train"]["gpus"], spec["train"]["batch_size"]
        if gpus > batch_size:
            raise InputError(source, f"models.{name}.train.gpus: {gpus} GPUs share each batch, so batch_size "
                                     f"must be at least {gpus} (it is {batch_size})")
    _check_variants(config, source)
    _check_warm_starts(config, source)
    _check_continued_models(config, source)
    return config


def continued_from(config: dict, model: str) -> str | None:
    """The base directory of another of this config's models (``results/models/M/base``) that
    ``model``'s checkpoint names, so it trains further from it; None when its checkpoint is anything else."""
    other = _trained_further_from(config, model)
    return None if other is None else f"results/models/{other}/base"


def _trained_further_from(config: dict, model: str) -> str | None:
    """The name of the model whose base ``model``'s checkpoint names, or None (see ``continued_from``)."""
    spec = config["models"][model]["checkpoint"]
    if not isinstance(spec, str):
        return None
    parts = Path(os.path.normpath(spec)).parts
    if len(parts) != 4 or parts[:2] != ("results", "models") or parts[2] not in config["models"] or parts[3] != "base":
        return None
    return parts[2]


def first_checkpoint(config: dict, model: str) -> str | dict:
    """The checkpoint ``model``'s line of training began from: its own, or, where it trains further from
    another model, that model's (and so on). Its tokenizer is the one each of them saved."""
    while (other := _trained_further_from(config, model)) is not None:
        model = other
    return config["models"][model]["checkpoint"]


def _check_continued_models(config: dict, source: str) -> None:
    for model, spec in config["models"].items():
        start = continued_from(config, model)
        if start is None:
            continue
        line = [model]
        while (step := _trained_further_from(config, line[-1])) is not None:
            line.append(step)
            if line[-1] in line[:-1]:
                raise InputError(source, f"models.{model}.checkpoint: {start} leads to a circle of models training "
                                         f"further from each other ({' -> '.join(line)})")
        if "continue" not in models.capabilities(spec["family"]):
            able = [f for f in models.FAMILIES if "continue" in models.capabilities(f)]
            raise InputError(source, f"models.{model}.checkpoint: the {spec['family']} family cannot train further "
                                     f"from a model it trained (families that can: {', '.join(able)})")
        other = line[1]
        other_family = config["models"][other]["family"]
        if other_family != spec["family"]:
            raise InputError(source, f"models.{model}.checkpoint: {start} is a model of family {other_family}, "
                                     f"{model} of family {spec['family']}")


def _check_warm_starts(config: dict, source: str) -> None:
    for model, spec in config["models"].items():
        if isinstance(spec["checkpoint"], dict) and "warm_start" in spec["checkpoint"] \
                and "warm_start" not in models.capabilities(spec["family"]):
            able = [f for f in models.FAMILIES if "warm_start" in models.capabilities(f)]
            raise InputError(source, f"models.{model}.checkpoint: warm_start builds an encoder-decoder, which the "
                                     f"{spec['family']} family does not take (families that do: {', '.join(able)})")


RESERVED = {"data.train_sets": "default", "compression": "base"}


def _check_names(config: dict, source: str) -> None:
    data = config["data"]
    for key, names in (("data.sources", data["sources"]), ("data.train_sets", data["train_sets"]),
                       ("data.eval_sets", data["eval_sets"]), ("models", config["models"]),
                       ("compression", config["compression"])):
        for name in names:
            _check_name(key, name, source)


def _check_name(key: str, name: str, source: str) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name) or name == RESERVED.get(key):
        reserved = f", not '{RESERVED[key]}'" if key in RESERVED else ""
        raise InputError(source, f"{key}: name '{name}' must be ASCII letters, digits, _ and - "
                                 f"(not first){reserved}")


def _check_train_set(where: str, spec: dict, sources: dict, config_source: str) -> None:
    for name in spec.get("sources", []):
        if name not in sources:
            raise InputError(config_source, f"{where}.sources: '{name}' is not one of data.sources ({', '.join(sources)})")
    for key in ("negatives", "holdout_negatives"):
        recipe = spec.get(key) or {}
        if recipe.get("share") and not any(recipe.get("kinds", {}).values()):
            raise InputError(config_source, f"{where}.{key}: share {recipe['share']} needs `kinds` with a weight "
                                            "above 0 (or share 0 for no synthetic negatives)")


def train_set(config: dict, name: str) -> dict:
    """The settings of a validated config's training set `name`: data.train, with the keys of
    data.train_sets[name] replacing its own."""
    train = config["data"]["train"]
    return dict(train) if name == "default" else {**train, **config["data"]["train_sets"][name]}


def _fill_methods(config: dict, source: str) -> None:
    """A variant's ``method`` defaults to its name; filled in before the schema, which picks the
    method's options by it."""
    variants = config.get("compression") if isinstance(config, dict) else None
    if not isinstance(variants, dict):
        return
    for name, options in variants.items():
        _check_name("compression", name, source)
        if isinstance(options, dict) and "method" not in options:
            if name not in compression.METHODS:
                raise InputError(source, f"compression.{name}: give `method` (one of {', '.join(compression.METHODS)})")
            options["method"] = name


def _check_variants(config: dict, source: str) -> None:
    """Every variant a model asks for is configured, applies to its family (with its options), and has a
    usable name. The options themselves were checked by the schema."""
    variants = config["compression"]
    for model, spec in config["models"].items():
        family = spec["family"]
        for variant in spec["variants"]:
            if variant not in variants:
                raise InputError(source, f"models.{model}.variants: '{variant}' is not configured under compression")
            options = variants[variant]
            method = options["method"]
            if not compression.applies(method, family):
                raise InputError(source, f"models.{model}.variants: {method} does not apply to the {family} "
                                         f"family (it applies to {', '.join(compression.families(method))})")
            # the same refusals as qabench/compression/int8.py's make and qlora.py's resolve_options
            able = models.capabilities(family)
            if method == "int8" and options.get("backend") == "inductor" and "export" not in able:
                raise InputError(source, f"models.{model}.variants: {variant}: the inductor int8 backend exports "
                                         f"encoders only, not the {family} family (use the dynamic backend)")
            if method == "qlora" and str(options.get("device", "cpu")).startswith("cuda") and "spans" not in able:
                on_cuda = [f for f in compression.families(method) if "spans" in models.capabilities(f)]
                raise InputError(source, f"models.{model}.variants: {variant}: qlora on cuda applies to the "
                                         f"{', '.join(on_cuda)} families only, not {family}")


def read(path: str | Path):
    """A config file's contents, not validated (an overlay alone is not a whole config)."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise InputError(path, f"cannot read config ({first_line(err)})") from None


def load(path: str | Path) -> dict:
    return validate(read(path), str(path))
