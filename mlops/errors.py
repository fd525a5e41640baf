"""One error hierarchy: each error carries the CLI exit code and the HTTP status it maps to.

Messages are written for the person who has to act on them: they name the field, the value
and what to do next. They never include a payload or a traceback.
"""

from __future__ import annotations

from typing import Any


class MLOpsError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code: int = 1
    http_status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        self.message = message
        self.hint = hint
        self.details = details
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form for `--json` output and HTTP error bodies."""
        return {
            "code": self.code,
            "message": str(self),
            "details": {k: v for k, v in self.details.items() if v is not None},
        }


class InvalidInputError(MLOpsError):
    """The user gave a value we cannot use (bad name, wrong file, schema mismatch)."""

    exit_code = 2
    http_status = 400
    code = "invalid_input"


class NotFoundError(MLOpsError):
    """A model, version, alias, deployment or file does not exist."""

    exit_code = 3
    http_status = 404
    code = "not_found"


class ConflictError(MLOpsError):
    """The request clashes with current state (name taken, port in use)."""

    exit_code = 4
    http_status = 409
    code = "conflict"


class InUseError(ConflictError):
    """A model version is used by an active deployment and cannot be deleted."""

    code = "in_use"


class BackendError(MLOpsError):
    """A backing service (MLflow, Docker, Kubernetes, IoT Hub) failed or is unreachable."""

    exit_code = 5
    http_status = 502
    code = "backend_error"


class BackendUnavailableError(BackendError):
    """A backing service cannot be reached at all."""

    exit_code = 6
    http_status = 503
    code = "backend_unavailable"


class DeploymentError(MLOpsError):
    """A deployment step failed; the previous version keeps serving."""

    exit_code = 7
    http_status = 500
    code = "deployment_failed"


class ValidationFailedError(MLOpsError):
    """Data did not pass validation (Great Expectations) or was unreadable."""

    exit_code = 8
    http_status = 422
    code = "validation_failed"


class AuthError(MLOpsError):
    """A request was not signed or authenticated correctly."""

    exit_code = 9
    http_status = 401
    code = "unauthorized"
