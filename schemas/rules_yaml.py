"""Reading a rules file's YAML strictly (a key written twice is an error, not a silent
override) and turning pydantic's errors into lines a marketer can act on."""

from __future__ import annotations

import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from schemas.errors import RulesError
from schemas.rule_values import FieldProblem, did_you_mean


class RulesSyntaxError(RulesError):
    """The rules file cannot be read, or is not YAML; `ecrm rules check` exits 2 for these."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice."""


def _mapping_without_repeats(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a set of fields",
                node.start_mark,
                f'"{key}" is written twice; keep one',
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_repeats,
)


def read_text_file(path: Path, error: type[Exception]) -> str:
    """A rules or programme file's text; `error` (the file kind's syntax error) when it is
    missing or unreadable."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot be read ({exc})") from None


def read_yaml(text: str, source: str) -> Any:
    """The file's data; a RulesSyntaxError naming the line and column when it is not YAML."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise RulesSyntaxError(f"{source}: {where}{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise RulesSyntaxError(f"{source}: not YAML ({exc})") from None


def _bare(annotation: Any) -> Any:
    """The model, dict or list inside Optional[...] and Annotated[...]."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names the model nested at `loc` knows, to suggest the one a typo meant."""
    current: Any = model
    for part in loc:
        current = _bare(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {info.alias or name: info for name, info in current.model_fields.items()}
            if part not in fields:
                return []
            current = fields[part].annotation
        elif get_origin(current) in (dict, list, tuple):
            current = get_args(current)[-1]
        else:
            return []
    current = _bare(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [info.alias or name for name, info in current.model_fields.items()]
    return []


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _said(value: Any) -> str:
    return f'"{value}"' if not isinstance(value, dict | list) else "this"


def _words_for(error: ErrorDetails, model: type[BaseModel]) -> tuple[tuple[int | str, ...], str]:
    """Where the mistake is, and what is wrong, for one pydantic error."""
    loc = tuple(error["loc"])
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    cause = ctx.get("error")
    if isinstance(cause, FieldProblem):
        return loc + cause.path, cause.message
    if isinstance(cause, Exception):
        return loc, str(cause)
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        hint = did_you_mean(str(loc[-1]), known) or (
            f" (known: {', '.join(known)})" if known else ""
        )
        return loc, "unknown field" + hint
    messages = {
        "missing": "required, but missing",
        "bool_parsing": "should be true or false",
        "bool_type": "should be true or false",
        "int_parsing": f"{_said(given)} is not a whole number",
        "int_type": f"{_said(given)} is not a whole number",
        "int_from_float": f"{_said(given)} is not a whole number",
        "greater_than_equal": f"{_said(given)} must be at least {ctx.get('ge')}",
        "greater_than": f"{_said(given)} must be more than {ctx.get('gt')}",
        "dict_type": f"{_said(given)} should be a set of fields (name: value lines)",
        "model_type": f"{_said(given)} should be a set of fields (name: value lines)",
        "model_attributes_type": f"{_said(given)} should be a set of fields (name: value lines)",
        "list_type": f"{_said(given)} should be a list",
        "tuple_type": f"{_said(given)} should be a list",
        "string_type": f"{_said(given)} should be text",
    }
    if kind in messages:
        return loc, messages[kind]
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = did_you_mean(str(given), options)
        return loc, f"{_said(given)} is not one of: {', '.join(options)}{hint}"
    return loc, error["msg"]


def explain(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per mistake of `model`: `field "when.within": "30 minuts" is not a duration`."""
    lines: list[str] = []
    for error in exc.errors():
        loc, message = _words_for(error, model)
        line = f'field "{_path(loc)}": {message}' if loc else message
        if line not in lines:
            lines.append(line)
    return lines


__all__ = ["RulesSyntaxError", "explain", "read_yaml"]
