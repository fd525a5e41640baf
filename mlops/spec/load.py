"""Read a deployment spec file, with every error pointing at its file, line and field.

PyYAML composes the document into nodes that carry their line (`Node.start_mark`); the loader
keeps a map from each field path (`("capture", "sample_rate")`) to the line of its value and of
its key, and turns each pydantic error into one line such as

    deploy.yaml:12: capture.sample_rate: 1.5 is not <= 1; use a value between 0 and 1
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mlops_pipeline.errors import InvalidInputError, MLOpsError
from mlops_pipeline.spec import model
from mlops_pipeline.spec.model import DeploymentSpec, split_located
from pydantic import BaseModel, ValidationError

Path_ = tuple[str | int, ...]

#: what to write instead of a value that does not match a field's pattern
PATTERN_ADVICE = {
    model.NAME_PATTERN: "use lowercase letters, digits and '-' (at most 63, e.g. iris-prod)",
    model.MODEL_URI_PATTERN: "use models:/NAME/VERSION or models:/NAME@ALIAS",
    model.QUANTITY_PATTERN: "use a Kubernetes quantity such as 250m, 1, 512Mi or 2Gi",
    model.ENV_NAME_PATTERN: "use an environment variable name (letters, digits, _)",
    model.CRON_PATTERN: "use 5 cron fields, MINUTE HOUR DAY MONTH WEEKDAY, e.g. '0 * * * *'",
}


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec, the file it came from and the line of every field in it."""

    spec: DeploymentSpec
    path: Path
    lines: dict[Path_, int] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """Relative paths in the spec (scoring_code, capture.uri) are relative to this."""
        return self.path.parent

    def line_of(self, dotted: str) -> int:
        """The line of field `a.b.c` (or of its nearest parent written in the file); 1 if none."""
        parts: list[str | int] = [int(p) if p.isdigit() else p for p in dotted.split(".") if p]
        while parts:
            if tuple(parts) in self.lines:
                return self.lines[tuple(parts)]
            parts.pop()
        return 1

    def error(
        self, dotted: str, problem: str, error: type[MLOpsError] = InvalidInputError
    ) -> MLOpsError:
        """An error of ERROR's type pointing at `file:line: field: problem`."""
        return error(
            f"{self.path.name}:{self.line_of(dotted)}: {dotted}: {problem}",
            field=dotted,
            file=str(self.path),
            line=self.line_of(dotted),
        )


def load_spec(path: str | Path) -> LoadedSpec:
    """Read and validate the spec file at PATH.

    Raises:
        NotFoundError: no such file (exit 3).
        InvalidInputError: the file is not YAML, not a mapping, has a duplicate key, or does not
            validate; the message has one `file:line: field: problem` line per error (exit 2).
    """
    from mlops_pipeline.errors import NotFoundError

    path = Path(path).expanduser().resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NotFoundError(f"Spec file {path} does not exist.", path=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"Spec file {path} cannot be read: {exc}.", path=str(path)) from exc
    return parse_spec(text, path)


def parse_spec(text: str, path: Path) -> LoadedSpec:
    """Validate spec TEXT read from PATH (which errors name); see `load_spec`."""
    data, lines = _compose(text, path)
    try:
        spec = DeploymentSpec.model_validate(data)
    except ValidationError as exc:
        problems = sorted(
            (_describe(error, lines) for error in exc.errors()), key=lambda p: (p[0], p[1])
        )
        raise InvalidInputError(
            "\n".join(f"{path.name}:{line}: {where}: {what}" for line, where, what in problems),
            file=str(path),
            line=problems[0][0],
            field=problems[0][1],
        ) from exc
    return LoadedSpec(spec, path, lines)


def _compose(text: str, path: Path) -> tuple[Any, dict[Path_, int]]:
    """The document's data and the 1-based line of every field path (value lines; a key's own
    line under `path + ("<key>",)`)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise InvalidInputError(f"{path.name}:1: the spec file is empty.", file=str(path))
        lines: dict[Path_, int] = {}
        _walk(node, (), lines, path)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = " ".join(filter(None, (exc.context, exc.problem)))
        raise InvalidInputError(
            f"{path.name}:{line}: not valid YAML: {problem}", file=str(path), line=line
        ) from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"{path.name}:{node.start_mark.line + 1}: the spec must be a mapping (name: ..., "
            "model: ...), not a {type(data).__name__}.",
            file=str(path),
        )
    lines.setdefault((), 1)
    return data, lines


def _walk(node: yaml.Node, at: Path_, lines: dict[Path_, int], path: Path) -> None:
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise InvalidInputError(
                    f"{path.name}:{line}: {_dotted((*at, key))}: duplicate key; keep one.",
                    file=str(path),
                    line=line,
                )
            seen.add(key)
            lines[(*at, key, "<key>")] = key_node.start_mark.line + 1
            _walk(value_node, (*at, key), lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*at, index), lines, path)


def _dotted(parts: Path_) -> str:
    return ".".join(str(p) for p in parts) or "(top)"


def _describe(error: Any, lines: dict[Path_, int]) -> tuple[int, str, str]:
    """(line, field, problem) of one pydantic error."""
    loc = _field_path(tuple(error["loc"]), lines)
    kind = error["type"]
    if kind == "value_error":
        where, message = split_located(str(error["ctx"]["error"]))
        if where is not None:  # a model validator's error names its field: point at its key
            loc = tuple(int(p) if p.isdigit() else p for p in where.split("."))
            return lines.get((*loc, "<key>"), _line(loc, lines)), _dotted(loc), message
        return _line(loc, lines), _dotted(loc), message
    if kind == "extra_forbidden":
        parent, name = loc[:-1], str(loc[-1])
        known = _known_fields(parent)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known fields: {', '.join(known)}"
        line = lines.get((*loc, "<key>"), _line(loc, lines))
        return line, _dotted(loc), f"unknown field; {hint}"
    if kind == "missing":
        return _line(loc[:-1], lines), _dotted(loc), "is required; add it"
    return _line(loc, lines), _dotted(loc), _value_problem(error, loc)


def _field_path(loc: Path_, lines: dict[Path_, int]) -> Path_:
    """LOC without the union/tag parts pydantic inserts (`function-after[...]`, `str`)."""
    kept: list[str | int] = []
    for part in loc:
        candidate = (*kept, part)
        if candidate in lines or isinstance(part, int) or not _is_tag(part):
            kept.append(part)
    return tuple(kept)


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "none"})


def _line(loc: Path_, lines: dict[Path_, int]) -> int:
    parts = list(loc)
    while parts and tuple(parts) not in lines:
        parts.pop()
    return lines.get(tuple(parts), 1)


def _value_problem(error: Any, loc: Path_) -> str:
    """`1.5 is not <= 1; use a value between 0 and 1`, and the like."""
    value, ctx, kind = error.get("input"), error.get("ctx") or {}, error["type"]
    shown = repr(value) if isinstance(value, str) else str(value)
    bounds = _bounds(loc)
    advice = f"; use a value {bounds}" if bounds else ""
    for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if name in ctx and kind.startswith(("greater", "less")):
            return f"{shown} is not {symbol} {ctx[name]:g}{advice}"
    if kind == "literal_error":
        return f"{shown} is not one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        advice = PATTERN_ADVICE.get(ctx.get("pattern"), f"match {ctx.get('pattern')}")
        return f"{shown} is not valid here; {advice}"
    if kind in {"too_short", "too_long"}:
        return error["msg"].replace("List", "the list").replace("Value", "the value")
    expected = error["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
    return f"{shown} is not {expected}" if error["msg"].startswith("Input should") else expected


def _bounds(loc: Path_) -> str | None:
    """`between 0 and 1`, `>= 1`, ... from the constraints of the field at LOC."""
    info = _field_info(loc)
    if info is None:
        return None
    found: dict[str, Any] = {}
    for meta in info.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if getattr(meta, name, None) is not None:
                found[name] = getattr(meta, name)
    low = found.get("ge", found.get("gt"))
    high = found.get("le", found.get("lt"))
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    if low is not None:
        return f"{'>=' if 'ge' in found else '>'} {low:g}"
    if high is not None:
        return f"{'<=' if 'le' in found else '<'} {high:g}"
    return None


def _field_info(loc: Path_) -> Any:
    """The pydantic FieldInfo at LOC, following nested models (None when it cannot be found)."""
    model: Any = DeploymentSpec
    info = None
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        model = _model_in(info.annotation)
    return info


def _model_in(annotation: Any) -> Any:
    """The BaseModel class inside ANNOTATION (`X | None`, `list[X]`), else ANNOTATION."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


def _known_fields(parent: Path_) -> list[str]:
    info = _field_info(parent) if parent else None
    model = _model_in(info.annotation) if info is not None else DeploymentSpec
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def dump_spec(spec: DeploymentSpec) -> str:
    """SPEC as YAML text, in field order; unset fields left out."""
    return yaml.safe_dump(spec.to_yaml_dict(), sort_keys=False)
