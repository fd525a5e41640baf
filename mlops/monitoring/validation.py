"""Great Expectations 1.x validation: every GX call in the project lives in this module.

`build_expectation_suite` turns a reference profile (monitoring/profile.py) into a suite stored
with the model version at registration; `validate_frame` runs a stored suite on captured data
with an ephemeral context, builds Data Docs HTML and returns a `ValidationResult` with the
failure rate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.monitoring.drift import json_safe
from mlops_pipeline.monitoring.profile import ColumnKind, cast_to_kind, profile_kinds
from mlops_pipeline.monitoring.results import (
    ExpectationFailure,
    QuarantinedFile,
    ValidationResult,
)

# Dtype names GX compares a column's pandas dtype against; validate_frame turns nullable
# extension dtypes into these numpy ones first (GX 1.x mis-handles extension dtypes).
NUMERIC_DTYPES = [f"{kind}{bits}" for kind in ("int", "uint") for bits in (8, 16, 32, 64)] + [
    "float16",
    "float32",
    "float64",
]
DOCS_SITE = "mlops"


def _allowed_null_rate(null_rate: float, tolerance: float) -> float:
    # absolute slack plus half the reference rate, so sparse columns get proportionate room
    return min(1.0, null_rate + tolerance + 0.5 * null_rate)


def _column_expectations(
    name: str,
    column: dict[str, Any],
    *,
    null_tolerance: float,
    range_tolerance: float,
    outlier_tolerance: float,
    category_tolerance: float,
) -> list[gxe.Expectation]:
    kind = column["kind"]
    expectations: list[gxe.Expectation] = [gxe.ExpectColumnToExist(column=name)]
    allowed_nulls = _allowed_null_rate(column["null_rate"], null_tolerance)
    if allowed_nulls < 1.0:
        expectations.append(
            gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=round(1.0 - allowed_nulls, 6))
        )
    if kind == "numeric":
        expectations.append(
            gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=NUMERIC_DTYPES)
        )
        if column.get("min") is not None:
            low, high = column["min"], column["max"]
            pad = range_tolerance * (high - low) or range_tolerance * max(abs(low), 1.0)
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=name,
                    min_value=low - pad,
                    max_value=high + pad,
                    mostly=1.0 - outlier_tolerance,
                )
            )
    elif kind == "boolean":
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=name, value_set=[True, False], mostly=1.0 - outlier_tolerance
            )
        )
    elif kind == "categorical":
        # no type expectation: a non-string value is simply not in the category set
        mostly = 1.0 - column.get("other_rate", 0.0) - category_tolerance
        if column.get("categories") and mostly > 0:
            expectations.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=name, value_set=sorted(column["categories"]), mostly=round(mostly, 6)
                )
            )
    return expectations


def build_expectation_suite(
    profile: dict[str, Any],
    name: str,
    *,
    columns: list[str] | None = None,
    min_rows: int = 1,
    null_tolerance: float = 0.02,
    range_tolerance: float = 0.1,
    outlier_tolerance: float = 0.01,
    category_tolerance: float = 0.01,
) -> dict[str, Any]:
    """Build a GX 1.x expectation suite (as its JSON dict) from a reference profile.

    Per column: it exists; numeric columns have a numeric dtype; its null
    rate stays below the reference rate plus `null_tolerance` plus half the reference rate;
    numeric values stay (for a `1 - outlier_tolerance` share) within the reference range widened
    by `range_tolerance` of its span on each side; categorical values are in the reference set
    (allowing the capped-off share plus `category_tolerance`). The table has at least `min_rows`
    rows and contains every profiled column (extra columns such as capture metadata are fine).
    """
    profiled = profile.get("columns") or {}
    wanted = list(profiled) if columns is None else columns
    missing = [c for c in wanted if c not in profiled]
    if missing:
        raise InvalidInputError(
            f"Columns {missing} are not in the reference profile.",
            hint=f"Profiled columns are {sorted(profiled)}.",
        )
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
        gxe.ExpectTableColumnsToMatchSet(column_set=wanted, exact_match=False),
    ]
    for column in wanted:
        expectations += _column_expectations(
            column,
            profiled[column],
            null_tolerance=null_tolerance,
            range_tolerance=range_tolerance,
            outlier_tolerance=outlier_tolerance,
            category_tolerance=category_tolerance,
        )
    suite = gx.ExpectationSuite(
        name=name,
        expectations=expectations,
        meta={"mlops.profile_rows": profile.get("n_rows"), "mlops.source": "profile"},
    )
    return suite.to_json_dict()


def _ephemeral_context(docs_dir: Path | None) -> Any:
    sites = {}
    if docs_dir is not None:
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites=sites,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _frame_for_gx(df: pd.DataFrame, suite: gx.ExpectationSuite) -> pd.DataFrame:
    """Give GX numpy dtypes for nullable numbers/booleans: it mis-types those extension dtypes
    (string columns are fine as they are and converting them costs seconds per million rows)."""
    columns = {e.column for e in suite.expectations if getattr(e, "column", None) in df.columns}
    converted = {}
    for name in columns:
        dtype = df[name].dtype
        if not isinstance(dtype, pd.api.extensions.ExtensionDtype):
            continue
        if pd.api.types.is_bool_dtype(dtype):
            converted[name] = df[name].astype(object).where(df[name].notna(), None)
        elif pd.api.types.is_numeric_dtype(dtype):
            converted[name] = df[name].to_numpy(dtype="float64", na_value=math.nan)
    return df.assign(**converted) if converted else df


def _failure(result: Any) -> ExpectationFailure:
    config = result.expectation_config
    details = result.result or {}
    exception = (result.exception_info or {}).get("exception_message")
    return ExpectationFailure(
        expectation=config.type,
        column=config.kwargs.get("column"),
        observed=json_safe(details.get("observed_value")),
        unexpected_percent=details.get("unexpected_percent"),
        partial_unexpected=list(
            dict.fromkeys(str(v) for v in details.get("partial_unexpected_list") or [])
        )[:5],
        error=exception,
    )


def validate_frame(
    df: pd.DataFrame, suite: dict[str, Any], docs_dir: Path | None = None
) -> ValidationResult:
    """Validate `df` against a suite dict (GX 1.x JSON); build Data Docs into `docs_dir`.

    Returns:
        success, evaluated/failed expectation counts, failure_rate (0..1), one
        `ExpectationFailure` each, the Data Docs index.html path (or None) and the full GX
        result as JSON in `result`.

    Raises:
        InvalidInputError: `suite` is not a GX 1.x expectation suite.
    """
    try:
        expectation_suite = gx.ExpectationSuite(**suite)
    except Exception as exc:
        raise InvalidInputError(
            f"The stored expectation suite '{suite.get('name')}' is not a GX 1.x suite: {exc}",
            hint="Rebuild it with monitoring.validation.build_expectation_suite.",
        ) from exc
    if docs_dir is not None:
        docs_dir = Path(docs_dir).resolve()
        docs_dir.mkdir(parents=True, exist_ok=True)
    context = _ephemeral_context(docs_dir)
    expectation_suite = context.suites.add(expectation_suite)
    batch_definition = (
        context.data_sources.add_pandas("captured")
        .add_dataframe_asset("window")
        .add_batch_definition_whole_dataframe("whole")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="monitor", data=batch_definition, suite=expectation_suite)
    )
    actions = [UpdateDataDocsAction(name="data-docs", site_names=[DOCS_SITE])] if docs_dir else []
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="monitor",
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "BASIC"},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": _frame_for_gx(df, expectation_suite)})
    result = next(iter(outcome.run_results.values()))
    evaluated = len(result.results)
    failures = [_failure(r) for r in result.results if not r.success]
    index = docs_dir / "index.html" if docs_dir is not None else None
    return ValidationResult(
        success=bool(result.success),
        evaluated=evaluated,
        failed=len(failures),
        failure_rate=len(failures) / evaluated if evaluated else 0.0,
        failures=failures,
        data_docs=str(index) if index is not None and index.exists() else None,
        result=json_safe(result.describe_dict()),
    )


def restrict_suite(suite: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """The suite limited to `columns` (e.g. drop a label column the reference data carried)."""
    keep = set(columns)
    expectations = []
    for expectation in suite.get("expectations", []):
        kwargs = expectation.get("kwargs", {})
        if "column" in kwargs and kwargs["column"] not in keep:
            continue
        if "column_set" in kwargs:
            kwargs = kwargs | {"column_set": [c for c in kwargs["column_set"] if c in keep]}
        expectations.append(expectation | {"kwargs": kwargs})
    return suite | {"expectations": expectations}


def validate_captures(
    scored: pd.DataFrame,
    features: list[str],
    suite: dict[str, Any],
    quarantined: list[QuarantinedFile] | list[dict[str, str]],
    docs_dir: Path,
    profile: dict[str, Any] | None = None,
) -> ValidationResult:
    """Validate a window's scored rows with the version's suite (limited to the model's
    features); quarantined capture files count as validation failures too.

    Each feature is first cast to the kind the reference `profile` recorded (`cast_to_kind`),
    so a float 1.0 passes where the reference held the integer 1; a value that cannot be cast
    is reported as a failure of its own ("cast_to_reference_kind") and left out of the rest.
    Data Docs go to `docs_dir`. Raises InvalidInputError when `suite` is not a GX 1.x suite.
    """
    files = [QuarantinedFile.coerce(q) for q in quarantined]
    if scored.empty:
        return ValidationResult(
            success=not files, failure_rate=1.0 if files else 0.0, quarantined=files
        )
    frame, cast_failures = cast_features(scored[features], profile_kinds(profile, scored[features]))
    validation = validate_frame(frame, restrict_suite(suite, features), docs_dir)
    evaluated = validation.evaluated + len(features)
    failed = validation.failed + len(cast_failures)
    return validation.model_copy(
        update={
            "evaluated": evaluated,
            "failed": failed,
            "failures": cast_failures + validation.failures,
            "failure_rate": failed / evaluated,
            "success": validation.success and not cast_failures and not files,
            "quarantined": files,
        }
    )


def cast_features(
    frame: pd.DataFrame, kinds: dict[str, ColumnKind]
) -> tuple[pd.DataFrame, list[ExpectationFailure]]:
    """`frame` with every column cast to its recorded kind, and one failure per column holding
    values that cannot be cast (their share and a few examples)."""
    cast_columns = {}
    failures = []
    for name in frame.columns:
        cast = cast_to_kind(frame[name], kinds[name])
        values = cast.values
        if kinds[name].kind == "boolean":  # GX checks membership in {True, False} on objects
            values = values.astype(object).where(values.notna(), None)
        cast_columns[name] = values
        n_invalid = int(cast.invalid.sum())
        if n_invalid:
            failures.append(
                ExpectationFailure(
                    expectation="cast_to_reference_kind",
                    column=name,
                    observed=f"{n_invalid} value(s) are not {kinds[name].kind}",
                    unexpected_percent=100.0 * n_invalid / len(frame),
                    partial_unexpected=cast.invalid_examples(frame[name], limit=5),
                )
            )
    return frame.assign(**cast_columns), failures
