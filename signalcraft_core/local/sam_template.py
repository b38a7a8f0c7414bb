"""Reads a function's handler and environment out of template.yaml, so `signalcraft local invoke` matches `sam local invoke`.

Only what a local invoke needs is resolved: parameters (defaults or overrides), pseudo parameters
with the values `sam local` uses, and the intrinsic functions that can be evaluated without a
deployed stack. Anything that needs a stack (GetAtt, a resource's Ref, ImportValue) resolves to ""
as `sam local` does.

The SAM CLI's inputs are read here too, with its semantics: `--parameter-overrides` in both of its
syntaxes (:func:`parse_parameter_overrides`), `--env-vars` files (:func:`load_env_vars`, applied to
the variables the template declares only: :meth:`FunctionSpec.with_declared_environment`) and
`samconfig.toml` (:func:`load_samconfig`).
"""

from __future__ import annotations

import base64
import json
import math
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")

# The values `sam local` gives pseudo parameters when no stack exists.
LOCAL_PSEUDO_PARAMETERS: Mapping[str, str] = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "local",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/local/"
    "51af3dc0-da77-11e4-872e-1234567db123",
    "AWS::URLSuffix": "amazonaws.com",
}

# Short tag -> long form key; !GetAtt and !Ref are special-cased in the loader.
_SHORT_TAGS = (
    "Sub", "If", "Join", "Select", "Split", "FindInMap", "Equals", "Not", "And", "Or",
    "ImportValue", "Base64", "GetAZs", "Cidr", "Transform", "Length", "ToJsonString",
)


@dataclass(frozen=True)
class FunctionSpec:
    """What a local invoke needs from one function of the template."""

    logical_id: str
    handler: str  # "module.function", e.g. "handlers.score_upload.handler"
    environment: dict[str, str]
    timeout: int | None
    memory_mb: int | None

    @property
    def module(self) -> str:
        """The importable module of the handler ("handlers.score_upload")."""
        return self.handler.rpartition(".")[0]

    @property
    def function(self) -> str:
        """The callable inside the module ("handler")."""
        return self.handler.rpartition(".")[2]

    def with_environment(self, overrides: Mapping[str, str]) -> FunctionSpec:
        """The same spec with `overrides` (e.g. from --env-vars) winning over the template's values.

        Unlike `sam local`, variables the template does not declare are added too, so a local run
        can set AWS_ENDPOINT_URL for MinIO without editing the template.
        """
        return replace(self, environment={**self.environment, **{k: str(v) for k, v in overrides.items()}})

    def with_declared_environment(self, overrides: Mapping[str, str]) -> tuple[FunctionSpec, list[str]]:
        """`sam local invoke --env-vars` semantics: only variables the template declares for this function change.

        Returns the new spec and the names in `overrides` the template does not declare (ignored, as
        `sam local` ignores them; the caller warns about each).
        """
        declared = {k: str(v) for k, v in overrides.items() if k in self.environment}
        ignored = [k for k in overrides if k not in self.environment]
        return replace(self, environment={**self.environment, **declared}), ignored


class _Unresolvable(Exception):
    """An intrinsic that needs a deployed stack; the whole value becomes ""."""


class _NoValue(Exception):
    """{"Ref": "AWS::NoValue"}: the property or list item is dropped."""


class _Malformed(ValueError):
    """An intrinsic function whose arguments are not of the shape it takes (`!Join x`): a template
    mistake, said as one ValueError instead of the TypeError or AttributeError its code tripped on."""


# ---------------------------------------------------------------- loading


def load_template(path: str | Path) -> dict:
    """Parse a SAM / CloudFormation template (YAML or JSON) with short tags in their long form.

    Its shape is checked here, once, for every part a local invoke reads (see `_check_shape`), so
    what follows can trust `.get` on them; every ValueError names the file.
    """
    data = _yaml_load(_read_text(path), path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a CloudFormation template (top level is not a mapping)")
    _check_shape(data, path)
    return data


def _read_text(path: str | Path) -> str:
    """The file as UTF-8 text; ValueError naming the file for anything else (a binary given by mistake),
    where the bare UnicodeDecodeError says which byte but not of which file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file (byte 0x{exc.object[exc.start]:02x} at offset "
                         f"{exc.start})") from None


#: Template sections a local invoke reads; each, when present, is a mapping of names to mappings.
_SECTIONS = ("Parameters", "Mappings", "Conditions", "Resources", "Globals")


def _check_shape(template: Mapping[str, Any], path: str | Path) -> None:
    """ValueError `path: ...` for a part a local invoke reads that has not the shape CloudFormation gives
    it (`Resources: x`, a resource that is a list, Properties that is a string ...): unchecked, each
    was an AttributeError traceback in whatever read it first. Empty (null) parts count as absent."""
    for section in _SECTIONS:
        value = template.get(section)
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{path}: {section} must be a mapping, not {_kind(value)}")
    for name, parameter in (template.get("Parameters") or {}).items():
        if parameter is not None and not isinstance(parameter, dict):
            raise ValueError(f"{path}: parameter {name} must be a mapping (Type, Default ...), not {_kind(parameter)}")
    for logical_id, resource in (template.get("Resources") or {}).items():
        if str(logical_id).startswith("Fn::ForEach::"):
            continue  # AWS::LanguageExtensions loops are lists by design; they hold no function sam local runs
        if not isinstance(resource, dict):
            raise ValueError(f"{path}: resource {logical_id} must be a mapping (Type, Properties), not {_kind(resource)}")
        if not isinstance(resource.get("Type"), str):
            raise ValueError(f"{path}: resource {logical_id} has no Type (text such as AWS::Serverless::Function)")
        properties = resource.get("Properties")
        if properties is not None and not isinstance(properties, dict):
            raise ValueError(f"{path}: {logical_id}.Properties must be a mapping, not {_kind(properties)}")
        if resource["Type"] in FUNCTION_TYPES:
            for key in ("Environment", "ImageConfig"):
                value = (properties or {}).get(key)
                if value is not None and not isinstance(value, dict):
                    raise ValueError(f"{path}: {logical_id}.Properties.{key} must be a mapping, not {_kind(value)}")
    function_globals = (template.get("Globals") or {}).get("Function")
    if function_globals is not None and not isinstance(function_globals, dict):
        raise ValueError(f"{path}: Globals.Function must be a mapping, not {_kind(function_globals)}")


def _kind(value: Any) -> str:
    """`a list`, `the text 'x'`: what a mis-shaped part is, for the message."""
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    return f"a {type(value).__name__}"


def _yaml_load(text: str, path: str | Path = "template") -> Any:
    """The YAML document; ValueError `path: line N: problem` when it is not YAML (the editor's line, 1-based)."""
    import yaml  # lazy: only `local invoke` and tests need PyYAML

    class CfnLoader(yaml.SafeLoader):
        """SafeLoader that knows CloudFormation tags and keeps dates as strings."""

    def construct_node(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_mapping(node, deep=True)

    def construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        value = construct_node(loader, node)
        if suffix == "Ref":
            return {"Ref": value}
        if suffix == "Condition":
            return {"Condition": value}
        if suffix == "GetAtt":
            if isinstance(value, str):
                resource, _, attribute = value.partition(".")
                value = [resource, attribute]
            return {"Fn::GetAtt": value}
        if suffix in _SHORT_TAGS:
            return {f"Fn::{suffix}": value}
        raise yaml.constructor.ConstructorError(
            None, None, f"unknown CloudFormation tag !{suffix}", node.start_mark
        )

    CfnLoader.add_multi_constructor("!", construct_tag)
    CfnLoader.add_constructor(
        "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node)
    )
    try:
        return yaml.load(text, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
        text = (f"line {mark.line + 1}: " if mark else "") + (problem or str(exc).splitlines()[0])
        context, opened = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and opened:  # where the unclosed bracket or quote began
            text += f"; {context} on line {opened.line + 1}"
        raise ValueError(f"{path}: not valid YAML ({text})") from None


def load_env_vars(path: str | Path, logical_id: str) -> dict[str, str]:
    """Environment overrides for one function from SAM's --env-vars JSON file.

    {"Parameters": {...for every function...}, "ScoreUploadFunction": {...}}: the function's own
    section wins over "Parameters".
    """
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of sections, got {type(data).__name__}")
    merged: dict[str, str] = {}
    for section in ("Parameters", logical_id):
        values = data.get(section, {})
        if not isinstance(values, dict):
            raise ValueError(f"{path}: section {section!r} must be an object of NAME: value")
        for name, value in values.items():
            if isinstance(value, (dict, list)):
                raise ValueError(f"{path}: {section}.{name} must be a string, number or boolean")
            merged[str(name)] = _stringify(value)
    return merged


# ---------------------------------------------------------------- SAM CLI inputs

_OVERRIDE_KEY = re.compile(r"[A-Za-z0-9]+")
_LONG_FORM = re.compile(r"ParameterKey=([^,]*),ParameterValue=(.*)", re.DOTALL)
_OVERRIDE_EXAMPLES = "'Key1=Value1 Key2=\"a value\"' or 'ParameterKey=Key1,ParameterValue=Value1 ParameterKey=...'"


def parse_parameter_overrides(values: Any) -> dict[str, str]:
    """`--parameter-overrides` as the SAM CLI reads it: {name: value}, later pairs winning.

    Accepts both SAM syntaxes, also mixed: ``Key1=Value1 Key2=Value2`` and
    ``ParameterKey=Key1,ParameterValue=Value1 ParameterKey=Key2,ParameterValue=Value2``. Values are
    split and unquoted like a shell does (``Key="a b"``, ``Key='a b'``, ``Key=a\\ b``). `values` is one
    string, or a list of them (several command-line words, a samconfig.toml list), or a mapping
    (samconfig.yaml). Raises ValueError naming the part it cannot read.
    """
    if values is None or values == "":
        return {}
    if isinstance(values, Mapping):
        return {str(k): _stringify_override(v) for k, v in values.items()}
    if isinstance(values, str):
        values = [values]
    result: dict[str, str] = {}
    for value in values:
        if isinstance(value, Mapping):
            result.update(parse_parameter_overrides(value))
            continue
        if not isinstance(value, str):
            raise ValueError(f"parameter override {value!r} is not text")
        try:
            words = shlex.split(value, posix=True)
        except ValueError as exc:  # "No closing quotation"
            raise ValueError(f"parameter overrides {value!r}: {exc}") from None
        for word in words:
            long_form = _LONG_FORM.fullmatch(word)
            if long_form:
                key, val = long_form.groups()
            elif "=" in word and not word.startswith("ParameterKey="):
                key, _, val = word.partition("=")
            else:
                raise ValueError(f"parameter override {word!r} is not Key=Value; write {_OVERRIDE_EXAMPLES}")
            if not _OVERRIDE_KEY.fullmatch(key):
                raise ValueError(f"parameter override {word!r}: {key!r} is not a parameter name")
            result[key] = val
    return result


def _stringify_override(value: Any) -> str:
    if isinstance(value, (list, tuple)):  # as the SAM CLI joins a YAML list
        return ",".join(str(v).strip() for v in value if v not in (None, ""))
    return _stringify(value)


def check_parameter_names(template: Mapping[str, Any], overrides: Mapping[str, str]) -> None:
    """ValueError naming the template's parameters when an override names none of them."""
    known = list(template.get("Parameters") or {})
    unknown = [name for name in overrides if name not in known]
    if unknown:
        names = ", ".join(repr(n) for n in unknown)
        listed = ", ".join(known) if known else "none"
        raise ValueError(f"the template has no parameter {names} (parameters: {listed})")


def check_parameter_values(template: Mapping[str, Any], overrides: Mapping[str, str]) -> None:
    """ValueError naming the first override CloudFormation would refuse: not in AllowedValues, not a
    number for a Number parameter, or outside MinValue / MaxValue.

    A deploy refuses these; a local invoke used to pass them on, to fail later as a traceback
    (LOG_LEVEL=bogus) or not at all (a memory size of "abc").
    """
    parameters = template.get("Parameters") or {}
    for name, value in overrides.items():
        spec = parameters.get(name) or {}
        allowed = spec.get("AllowedValues")
        if isinstance(allowed, list) and value not in [_stringify(v) for v in allowed]:
            raise ValueError(f"parameter {name}: {value!r} is not one of {', '.join(_stringify(v) for v in allowed)}")
        if spec.get("Type") == "Number":
            try:
                number = float(value)
                if not math.isfinite(number):
                    raise ValueError(value)
            except ValueError:
                raise ValueError(f"parameter {name} is a Number: {value!r} is not a number") from None
            for bound, outside in (("MinValue", number.__lt__), ("MaxValue", number.__gt__)):
                if spec.get(bound) is not None and outside(float(spec[bound])):
                    raise ValueError(f"parameter {name}: {value} is outside {spec.get('MinValue', '-inf')}.."
                                     f"{spec.get('MaxValue', 'inf')}")


SAMCONFIG_NAMES = ("samconfig.toml", "samconfig.yaml", "samconfig.yml")


def default_samconfig(template_path: str | Path) -> Path:
    """The config file the SAM CLI reads by default: samconfig.toml (or .yaml/.yml) next to the template."""
    folder = Path(template_path).resolve().parent
    for name in SAMCONFIG_NAMES:
        if (folder / name).is_file():
            return folder / name
    return folder / SAMCONFIG_NAMES[0]


def load_samconfig(path: str | Path, env: str = "default", command: str = "local_invoke") -> dict[str, Any] | None:
    """`[env.global.parameters]` overlaid with `[env.<command>.parameters]`, as the SAM CLI reads them.

    None when `env` is not in the file (the SAM CLI then uses no configuration). Raises ValueError
    when the file cannot be parsed.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            document = yaml.safe_load(text) or {}
        else:
            document = _toml_loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError and yaml.YAMLError are ValueErrors or wrapped below
        raise ValueError(f"{path}: not valid {path.suffix[1:].upper()} ({exc})") from None
    except Exception as exc:  # yaml.YAMLError
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(document, dict) or not isinstance(document.get(env), dict):
        return None
    section = document[env]

    def parameters(name: str) -> dict[str, Any]:
        table = section.get(name)
        params = table.get("parameters") if isinstance(table, dict) else None
        return dict(params) if isinstance(params, dict) else {}

    return {**parameters("global"), **parameters(command)}


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ValueError("reading samconfig.toml needs Python 3.11+ or the tomli package") from None
    return tomllib.loads(text)


# ---------------------------------------------------------------- functions


def function_ids(template: Mapping[str, Any]) -> list[str]:
    """Logical ids of the Lambda functions in the template, in template order."""
    resources = template.get("Resources") or {}
    return [rid for rid, res in resources.items() if isinstance(res, dict) and res.get("Type") in FUNCTION_TYPES]


def function_spec(
    template: Mapping[str, Any],
    logical_id: str,
    parameter_overrides: Mapping[str, str] | None = None,
    *,
    region: str | None = None,
) -> FunctionSpec:
    """Handler, environment, timeout and memory of one function, resolved like `sam local` does.

    `parameter_overrides` must name parameters of the template (ValueError otherwise); `region` is
    what AWS::Region resolves to (`sam local invoke --region`), us-east-1 without one.
    """
    ids = function_ids(template)
    if logical_id not in ids:
        listed = ", ".join(ids) if ids else "none"
        raise ValueError(f"no function {logical_id!r} in the template (functions: {listed})")
    check_parameter_names(template, parameter_overrides or {})
    check_parameter_values(template, parameter_overrides or {})
    resource = template["Resources"][logical_id]
    props: dict[str, Any] = resource.get("Properties") or {}
    is_sam = resource["Type"] == "AWS::Serverless::Function"
    globals_fn: dict[str, Any] = ((template.get("Globals") or {}).get("Function") or {}) if is_sam else {}
    resolver = _Resolver(template, parameter_overrides or {}, region)

    variables = {
        **_env_variables(globals_fn),
        **_env_variables(props),
    }
    environment: dict[str, str] = {}
    for name, raw in variables.items():
        try:
            environment[str(name)] = _stringify(resolver.resolve(raw))
        except _NoValue:
            continue
        except _Unresolvable:
            environment[str(name)] = ""

    return FunctionSpec(
        logical_id=logical_id,
        handler=_handler(logical_id, props, globals_fn, resolver),
        environment=environment,
        timeout=_int_property("Timeout", props, globals_fn, resolver),
        memory_mb=_int_property("MemorySize", props, globals_fn, resolver),
    )


def _env_variables(props: Mapping[str, Any]) -> dict[str, Any]:
    environment = props.get("Environment") or {}
    variables = environment.get("Variables") if isinstance(environment, dict) else None
    return dict(variables) if isinstance(variables, dict) else {}


def _handler(logical_id: str, props: Mapping[str, Any], globals_fn: Mapping[str, Any], resolver: _Resolver) -> str:
    if props.get("PackageType") == "Image":
        command = (props.get("ImageConfig") or {}).get("Command") or []
        raw = command[0] if command else None
        where = "ImageConfig.Command"
    else:
        raw = props.get("Handler", globals_fn.get("Handler"))
        where = "Handler"
    try:
        handler = resolver.resolve(raw) if raw is not None else None
    except (_Unresolvable, _NoValue):
        handler = None
    if not isinstance(handler, str) or "." not in handler:
        raise ValueError(f"{logical_id}: {where} does not name a Python handler (module.function)")
    module, _, func = handler.rpartition(".")
    # Lambda's Python runtime accepts "handlers/score_upload.handler" too.
    return f"{module.replace('/', '.')}.{func}"


def _int_property(
    name: str, props: Mapping[str, Any], globals_fn: Mapping[str, Any], resolver: _Resolver
) -> int | None:
    raw = props.get(name, globals_fn.get(name))
    if raw is None:
        return None
    try:
        return int(str(resolver.resolve(raw)))
    except (_Unresolvable, _NoValue, ValueError):
        return None


def _stringify(value: Any) -> str:
    """Environment values are strings; YAML booleans are spelled as CloudFormation does."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise _Unresolvable(value)
    return str(value)


# ---------------------------------------------------------------- intrinsics

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class _Resolver:
    """Evaluates intrinsic functions against parameters, pseudo parameters, mappings and conditions."""

    def __init__(self, template: Mapping[str, Any], overrides: Mapping[str, str], region: str | None = None) -> None:
        self.parameters: Mapping[str, Any] = template.get("Parameters") or {}
        self.mappings: Mapping[str, Any] = template.get("Mappings") or {}
        self.conditions: Mapping[str, Any] = template.get("Conditions") or {}
        self.overrides = {str(k): v for k, v in overrides.items()}
        self.pseudo = dict(LOCAL_PSEUDO_PARAMETERS)
        if region:
            self.pseudo["AWS::Region"] = region
            self.pseudo["AWS::StackId"] = self.pseudo["AWS::StackId"].replace(":us-east-1:", f":{region}:")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = []
            for item in value:
                try:
                    items.append(self.resolve(item))
                except _NoValue:
                    continue
            return items
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key.startswith("Fn::"):
                method = getattr(self, "fn_" + key[4:].lower(), None)
                if method is None:
                    raise _Unresolvable(key)
                try:
                    return method(arg)
                except (_Unresolvable, _NoValue, _Malformed):
                    raise
                except (TypeError, ValueError, AttributeError, IndexError, KeyError):
                    shown = repr(arg) if len(repr(arg)) <= 80 else repr(arg)[:77] + "..."
                    raise _Malformed(f"{key} cannot take {shown}") from None
        return {k: self.resolve(v) for k, v in value.items()}

    # -- references

    def ref(self, name: Any) -> Any:
        if name == "AWS::NoValue":
            raise _NoValue
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            spec = self.parameters[name] or {}
            value = self.overrides.get(name, spec.get("Default"))
            if value is None:
                raise _Unresolvable(name)
            value = _stringify(value)
            if str(spec.get("Type", "")).startswith(("CommaDelimitedList", "List<")):
                return [part.strip() for part in value.split(",")] if value else []
            return value
        raise _Unresolvable(name)  # a resource, or a name the template does not define

    def condition(self, name: Any) -> bool:
        if name not in self.conditions:
            raise _Unresolvable(name)
        return bool(self.resolve(self.conditions[name]))

    # -- Fn:: functions

    def fn_sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], arg[1] if len(arg) > 1 else {}
        else:
            text, variables = arg, {}
        local = {k: self.resolve(v) for k, v in (variables or {}).items()}

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return _stringify(local[name])
            if "." in name and name not in self.parameters:
                raise _Unresolvable(name)  # ${Resource.Attribute}
            return _stringify(self.ref(name))

        return _SUB_VARIABLE.sub(substitute, str(self.resolve(text)))

    def fn_join(self, arg: Any) -> str:
        delimiter, items = arg
        return str(delimiter).join(_stringify(item) for item in self._list(items))

    def fn_select(self, arg: Any) -> Any:
        index, items = arg
        items = self._list(items)
        try:
            return items[int(self.resolve(index))]
        except (IndexError, ValueError, TypeError) as exc:
            raise _Unresolvable(arg) from exc

    def fn_split(self, arg: Any) -> list[str]:
        delimiter, text = arg
        return str(self.resolve(text)).split(str(delimiter))

    def fn_if(self, arg: Any) -> Any:
        name, when_true, when_false = arg
        return self.resolve(when_true if self.condition(name) else when_false)

    def fn_equals(self, arg: Any) -> bool:
        left, right = (self.resolve(v) for v in arg)
        return _stringify(left) == _stringify(right)

    def fn_not(self, arg: Any) -> bool:
        return not self._truth(arg[0])

    def fn_and(self, arg: Any) -> bool:
        return all(self._truth(item) for item in arg)

    def fn_or(self, arg: Any) -> bool:
        return any(self._truth(item) for item in arg)

    def fn_findinmap(self, arg: Any) -> Any:
        name, first, second = (self.resolve(v) for v in arg[:3])
        try:
            return self.mappings[name][first][second]
        except (KeyError, TypeError) as exc:
            raise _Unresolvable(arg) from exc

    def fn_base64(self, arg: Any) -> str:
        return base64.b64encode(str(self.resolve(arg)).encode("utf-8")).decode("ascii")

    def fn_tojsonstring(self, arg: Any) -> str:
        return json.dumps(self.resolve(arg), separators=(",", ":"))

    def fn_length(self, arg: Any) -> int:
        return len(self._list(arg))

    # -- helpers

    def _list(self, value: Any) -> list[Any]:
        resolved = self.resolve(value)
        if not isinstance(resolved, list):
            raise _Unresolvable(value)
        return resolved

    def _truth(self, value: Any) -> bool:
        if isinstance(value, dict) and set(value) == {"Condition"}:
            return self.condition(value["Condition"])
        return bool(self.resolve(value))
