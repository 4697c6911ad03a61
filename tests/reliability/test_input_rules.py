"""The pure rules that keep hostile input out: strict JSON, body limits per route, cron
schedules. (The same rules over HTTP: test_hostile_bodies.py.)"""

from __future__ import annotations

import pytest

from gristmill_platform.deployments.schedule import validate_schedule
from gristmill_platform.errors import BadRequest
from gristmill_platform.http.bodies import MAX_FORM_BODY, MAX_SMALL_BODY
from gristmill_platform.http.limits import MAX_ENDPOINT_MULTIPART_BODY, body_limit
from gristmill_platform.steps.spec import check_value
from gristmill_platform.strict_json import MAX_JSON_DEPTH, JsonRefused, strict_loads


@pytest.mark.parametrize("document", ["NaN", "[Infinity]", '{"a": -Infinity}', "1e999",
                                      "[-1e400]", '{"x": [1, 2, NaN]}'])
def test_non_finite_numbers_are_refused(document: str) -> None:
    with pytest.raises(JsonRefused):
        strict_loads(document)


def test_finite_numbers_and_large_integers_pass() -> None:
    assert strict_loads('{"a": 1.5e308, "b": -0.0, "c": 12345678901234567890}') == {
        "a": 1.5e308, "b": -0.0, "c": 12345678901234567890}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 900, 5_000, 100_000])
def test_deep_nesting_is_refused_without_recursion_error(depth: int) -> None:
    for document in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        with pytest.raises(JsonRefused, match="nests deeper"):
            strict_loads(document.encode())


def test_nesting_up_to_the_limit_passes() -> None:
    document = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert strict_loads(document) is not None
    # many brackets side by side are not depth
    assert len(strict_loads("[" + ",".join(["[]"] * 5_000) + "]")) == 5_000


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_number_input_must_be_finite(value: float) -> None:
    with pytest.raises(BadRequest, match="finite"):
        check_value(value, "number", "input 'n'")


@pytest.mark.parametrize(
    ("method", "path", "content_type", "limit"),
    [
        ("POST", "/endpoints/echo", "application/json", MAX_SMALL_BODY),
        ("POST", "/endpoints/echo", "", MAX_SMALL_BODY),
        ("POST", "/endpoints/echo", "multipart/form-data; boundary=x",
         MAX_ENDPOINT_MULTIPART_BODY),
        ("POST", "/api/v1/steps", "multipart/form-data; boundary=x", MAX_FORM_BODY),
        ("POST", "/api/v1/pipelines", "application/x-www-form-urlencoded", MAX_FORM_BODY),
        ("PUT", "/api/v1/metrics/single-value/m", "application/json", MAX_SMALL_BODY),
        ("POST", "/api/v1/endpoints", "application/json", MAX_SMALL_BODY),
        ("POST", "/api/v1/pipelines/p/run", "multipart/form-data; boundary=x", None),
        ("PUT", "/presigned/data-store/part", "", None),
        ("PUT", "/api/v1/runtime/executions/e1/outputs/doc", "", None),
        ("GET", "/api/v1/steps", "", None),
    ],
)
def test_body_limit_per_route(method: str, path: str, content_type: str,
                              limit: int | None) -> None:
    assert body_limit(method, path, content_type) == limit


@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [
        ("0 0 31 2 *", "never fires"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("1-0 * * * *", "minute range '1-0' runs backwards"),
        ("0 23-1 * * *", "hour range"),
        ("0 0 * dec-jan *", "month range"),
        ("0 0 * * fri-mon", "day-of-week range"),
        ("0 0 * * 5-1/2", "day-of-week range"),
        ("61 * * * *", "Invalid schedule"),
    ],
)
def test_impossible_or_inverted_schedules_are_refused(schedule: str, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment.replace("(", r"\(")):
        validate_schedule(schedule)


@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [
        # croniter takes any step: */99999999999999999999 fired hourly, described as
        # "Every 99999999999999999999 minutes"
        ("*/99999999999999999999 * * * *",
         "the minute step '99999999999999999999' in '*/99999999999999999999'"),
        ("*/60 * * * *", "minute step '60'"),
        ("5-10/60 * * * *", "minute step '60' in '5-10/60'"),
        ("0,15/61 * * * *", "minute step '61' in '15/61'"),
        ("0 */24 * * *", "hour step '24'"),
        ("0 0 */31 * *", "day-of-month step '31'"),
        ("0 0 * */12 *", "month step '12'"),
        ("0 0 * jan/12 *", "month step '12'"),
        ("0 0 * * */7", "day-of-week step '7'"),
        ("0 0 * * mon/99", "day-of-week step '99'"),
        ("*/" + "9" * 5000 + " * * * *", "Invalid schedule"),
        ("*/00060 * * * *", "minute step '00060'"),
    ],
)
def test_a_step_beyond_its_field_is_refused(schedule: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as refused:
        validate_schedule(schedule)
    assert fragment in refused.value.message


@pytest.mark.parametrize(("field", "largest"), [(0, 59), (1, 23), (2, 30), (3, 11), (4, 6)])
def test_a_step_is_from_1_to_its_field_span(field: int, largest: int) -> None:
    def schedule(step: str) -> str:
        fields = ["0", "0", "*", "*", "*"]
        fields[field] = f"*/{step}"
        return " ".join(fields)

    assert validate_schedule(schedule(str(largest))) == schedule(str(largest))
    assert validate_schedule(schedule("1")) == schedule("1")
    with pytest.raises(BadRequest, match=f"from 1 to {largest}"):
        validate_schedule(schedule(str(largest + 1)))


@pytest.mark.parametrize("schedule", ["0 0 29 2 *", "0 0 31 2 1", "0 0 * * mon-fri",
                                      "*/15 9-17 * * 1-5", "0 0 L * *", "0   3 * * *",
                                      "*/59 */23 */30 */11 */6", "0/30 * * * *",
                                      "0 0 * * sun/2", "*/05 * * * *", "*/0005 * * * *"])
def test_possible_schedules_pass(schedule: str) -> None:
    assert validate_schedule(schedule) == " ".join(schedule.split())
