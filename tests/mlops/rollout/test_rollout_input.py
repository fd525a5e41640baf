"""Rollout input checked before anything starts (canary steps, the shadow's metric), and the
shadow's explanation when nothing could be paired."""

from __future__ import annotations

import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.flows.redeploy import LIVE_GATE_STEPS
from mlops_pipeline.flows.rollout import nothing_paired
from mlops_pipeline.rollout.canary import parse_steps
from mlops_pipeline.rollout.results import ShadowComparison
from mlops_pipeline.rollout.shadow import compare_captures, parse_metric


@pytest.mark.parametrize("steps", ["100", "100.0", [100.0]])
def test_steps_without_one_below_100_are_refused_saying_why(steps) -> None:
    # at 100 % the champion serves nothing: no figures to judge the challenger against
    with pytest.raises(InvalidInputError) as raised:
        parse_steps(steps)
    error = raised.value
    assert error.exit_code == 2 and error.details == {"field": "steps", "value": str(steps)}
    assert "needs a step below 100" in str(error) and "the champion serves nothing" in str(error)
    assert "--steps 10,50,100" in str(error) and "\n" not in str(error)


@pytest.mark.parametrize(("steps", "parsed"), [("99,100", [99.0, 100.0]), ("1,100", [1.0, 100.0])])
def test_one_step_below_100_is_enough(steps: str, parsed: list[float]) -> None:
    assert parse_steps(steps) == parsed


def test_the_redeploy_live_canary_gate_has_a_step_below_100() -> None:
    assert min(parse_steps(LIVE_GATE_STEPS)) < 100


@pytest.mark.parametrize(
    ("given", "name"),
    [(None, None), ("F1", "f1"), ("rmse", "rmse"), ("balanced-accuracy", "balanced_accuracy")],
)
def test_a_shadow_metric_is_canonical(given: str | None, name: str | None) -> None:
    assert parse_metric(given) == name


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("nosuchmetric", "is not a metric"),
        ("roc_auc", "needs probabilities, which captures lack"),
        ("log-loss", "needs probabilities, which captures lack"),
    ],
)
def test_a_shadow_metric_that_cannot_be_computed_is_refused(given: str, why: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_metric(given)
    error = raised.value
    assert error.exit_code == 2 and error.details == {"field": "metric", "value": given}
    assert str(error).startswith(f"--metric {given!r} {why}; a shadow can compare accuracy,")
    assert "roc_auc" not in str(error).split(";")[1]  # only the usable ones are offered


def test_compare_captures_refuses_a_probability_metric_the_same_way() -> None:
    import pandas as pd

    rows = pd.DataFrame(
        {
            "_request_id": ["a"],
            "_row": [0],
            "_status": [200],
            "_latency_ms": [1.0],
            "prediction": [1],
        }
    )
    feedback = pd.DataFrame({"_request_id": ["a"], "_row": [0], "label": [1]})
    with pytest.raises(InvalidInputError) as raised:
        compare_captures(rows, rows, feedback, "roc_auc")
    assert raised.value.details["field"] == "metric"


def _comparison(**figures: int) -> ShadowComparison:
    base = {"champion_rows": 0, "challenger_rows": 0, "paired_rows": 0, "kind": "none"}
    return ShadowComparison(**(base | figures))


@pytest.mark.parametrize(
    ("figures", "says"),
    [
        (
            {},
            "the challenger captured no mirrored request in the window (send live traffic "
            "during the shadow, or lengthen OPTION)",
        ),
        (
            {"challenger_requests": 7, "champion_requests": 7, "champion_rows": 7},
            "the challenger answered all 7 mirrored requests with errors in the window",
        ),
        (
            {"challenger_requests": 7, "challenger_rows": 7},
            "the champion's captures hold none of the 7 mirrored requests in the window",
        ),
        (
            {"challenger_requests": 7, "challenger_rows": 7, "champion_requests": 7},
            "the champion answered the 7 mirrored requests only with errors",
        ),
        (
            {
                "challenger_requests": 7,
                "challenger_rows": 7,
                "champion_requests": 7,
                "champion_rows": 7,
            },
            "share no prediction column or row",
        ),
    ],
)
def test_nothing_paired_says_what_happened(figures: dict, says: str) -> None:
    message = nothing_paired(_comparison(**figures), "OPTION")
    assert message.startswith("nothing to compare: ") and says in message


@pytest.mark.parametrize("option", ["--duration", "--bake-seconds"])
def test_nothing_paired_names_the_option_of_the_command_that_ran(option: str) -> None:
    assert f"lengthen {option})" in nothing_paired(_comparison(), option)
    # traffic that reached the challenger is not a matter of traffic or length
    failed = nothing_paired(_comparison(challenger_requests=3), option)
    assert option not in failed and "send live traffic" not in failed
