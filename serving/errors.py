"""Client-facing errors of the scoring service, rendered as {"error": {code, message, details}}.

serving/ cannot import mlops.errors (it ships alone in images), so it has this small mirror.
Messages name the field or column and the expected type, never the submitted value.
"""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    """An error answered with `status` and a JSON body; never carries a payload or trace."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def bad_input(code: str, message: str, **details: Any) -> ServingError:
    return ServingError(400, code, message, **details)
