"""Parameter validation: each method declares a pydantic model whose fields carry the bounds.

Values arrive from the wire as int/float/bool/str; pydantic's lax mode coerces "32" -> 32.
Unknown names are refused so a typo never silently falls back to a default.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from explain.errors import ExplainParameterError

P = TypeVar("P", bound=BaseModel)


class MethodParams(BaseModel):
    """Base of every method's parameter model (unknown names are an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_params(model: type[P], method: str, params: dict[str, Any]) -> P:
    """``model(**params)`` or an :class:`ExplainParameterError` naming each bad field and its bound."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(x) for x in err["loc"]) or "parameters"
            if err["type"] == "extra_forbidden":
                known = ", ".join(sorted(model.model_fields))
                problems.append(f"unknown parameter {name!r} (known: {known})")
            else:
                problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ExplainParameterError(f"{method}: " + "; ".join(problems)) from None


def param_table(model: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description with bounds) rows for docs and ``--help``."""
    rows = []
    for name, info in model.model_fields.items():
        bounds = [f"{k} {getattr(m, k)}" for m in info.metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)]
        desc = (info.description or "") + (f" [{', '.join(bounds)}]" if bounds else "")
        rows.append((name, str(info.annotation), repr(info.default), desc))
    return rows
