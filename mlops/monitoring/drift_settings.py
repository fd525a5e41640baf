"""Drift settings as one strict pydantic model: `mlops drift --config`, `mlops monitor --config`
and the monitor flow's `drift_config` parameter (rendered as a form in the Prefect UI).

The effect-size defaults and why they separate material from trivial shifts are in `Thresholds`.
"""

from __future__ import annotations

from typing import Any, Literal

from mlops_pipeline.errors import InvalidInputError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class Thresholds(BaseModel):
    """Effect sizes a significant difference must reach to count as drift (any one suffices).

    Defaults separate material from trivial shifts on large samples: a mean shift of 0.1
    reference SD gives W1/std ~ 0.1 (flagged), 0.02 SD gives ~ 0.02 (quiet), whatever the
    sample size; the p-value gate alone would flag both at 400k rows.
    """

    model_config = _STRICT

    psi: float = Field(0.1, gt=0, description="Population stability index (both kinds).")
    distance: float = Field(
        0.03, gt=0, description="KS D (numeric) or total variation distance (categorical)."
    )
    wasserstein: float = Field(
        0.05, gt=0, description="Numeric: Wasserstein distance W1 in reference standard deviations."
    )
    unseen: float = Field(
        0.01, gt=0, description="Share of current values absent from the reference."
    )
    null_rate: float = Field(
        0.1, gt=0, description="Cohen's h between reference and current null rates."
    )
    invalid: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Share of current values that cannot be cast to the reference kind above "
        "which the column is incompatible.",
    )


class FeatureThresholds(BaseModel):
    """Per-feature overrides of `Thresholds`; unset fields keep the global value."""

    model_config = _STRICT

    psi: float | None = Field(None, gt=0)
    distance: float | None = Field(None, gt=0)
    wasserstein: float | None = Field(None, gt=0)
    unseen: float | None = Field(None, gt=0)
    null_rate: float | None = Field(None, gt=0)
    invalid: float | None = Field(None, ge=0, le=1)


_EXPECTED = {
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "an object ({name: value})",
    "model_type": "an object ({name: value})",
    "model_attributes_type": "an object ({name: value})",
}


class DriftConfig(BaseModel):
    """Drift settings, checked with their types: `mlops drift --config F.json`, `mlops monitor
    --config F.json` and the monitor flow's `drift_config` parameter (a form in the Prefect UI).

    Strict: numbers must be JSON numbers (the string "0.2" is refused, an integer is accepted
    where a number is expected), unknown keys are refused. `features` maps a column name to
    threshold overrides, e.g. {"alpha": 0.01, "features": {"age": {"psi": 0.2}}}.
    """

    model_config = _STRICT

    alpha: float = Field(0.01, gt=0, lt=1, description="Significance level after correction.")
    correction: Literal["bh", "holm"] = Field(
        "holm", description="Multiple-testing correction across all tests."
    )
    min_samples: int = Field(500, ge=1, description="Non-null rows needed on each side.")
    bins: int = Field(10, ge=2, description="Reference-quantile bins for PSI.")
    max_categories: int = Field(50, ge=1, description="Reference categories kept as buckets.")
    max_int_levels: int = Field(
        20, ge=0, description="Integer columns with at most this many levels are categorical."
    )
    thresholds: Thresholds = Field(default_factory=Thresholds)
    features: dict[str, FeatureThresholds] = Field(
        default_factory=dict, description="Column name -> threshold overrides."
    )

    def for_feature(self, name: str) -> Thresholds:
        overrides = self.features.get(name)
        if overrides is None:
            return self.thresholds
        return self.thresholds.model_copy(update=overrides.model_dump(exclude_none=True))

    @classmethod
    def parse(cls, data: Any, source: str = "drift settings") -> DriftConfig:
        """Validate `data` (a dict, or a DriftConfig) or raise InvalidInputError naming the
        setting, the value given and the type expected, on one line."""
        if isinstance(data, cls):
            return data
        try:
            return cls.model_validate(data if data is not None else {})
        except ValidationError as exc:
            raise settings_error(exc, source, cls) from exc

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def settings_error(exc: ValidationError, source: str, model: type[BaseModel]) -> InvalidInputError:
    """One line for a pydantic ValidationError: each bad setting, its value, what was expected."""
    problems = []
    unknown = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            unknown.append(name)
            continue
        expected = _EXPECTED.get(error["type"], error["msg"].removeprefix("Input should be "))
        value = error["input"]
        problems.append(f"'{name}' is {value!r} ({type(value).__name__}), expected {expected}")
    if unknown:
        problems.insert(0, f"unknown setting(s) {unknown}")
    return InvalidInputError(
        f"Invalid {source}: " + "; ".join(problems) + ".",
        hint=f"Settings are {sorted(model.model_fields)}; numbers are JSON numbers, not strings.",
    )
