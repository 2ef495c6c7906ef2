"""The API's models: what CreateMission accepts, and what responses show of the domain."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from buddy.domain import lifecycle
from buddy.domain.mission import (
    Cost,
    ExecutionRecord,
    ExecutionStep,
    Intent,
    Mission,
    Progress,
    Status,
    StepDetail,
)
from buddy.schemas import (
    CreateMission,
    ExecuteAccepted,
    ExecutionStepOut,
    MissionOut,
    valid_mission_id,
)

from .fakes import START


def test_defaults() -> None:
    """Only an objective is required; budget defaults to $1 and scope to no domains."""
    request = CreateMission(objective="calculate 1+1")
    assert request.objective == "calculate 1+1"
    assert (request.budget_usd, request.tool, request.inputs) == (1.0, None, {})
    assert request.scope.allowed_domains == []


@pytest.mark.parametrize("objective", ["   ", "\t\n"], ids=["spaces", "tab-newline"])
def test_blank_objective_is_rejected(objective: str) -> None:
    """An objective of only whitespace says nothing and is refused."""
    with pytest.raises(ValidationError, match="the objective is blank"):
        CreateMission(objective=objective)


@pytest.mark.parametrize("length", [1, 2000], ids=["shortest", "longest"])
def test_objective_length_bounds_are_accepted(length: int) -> None:
    """Objectives of 1 to 2000 characters are accepted."""
    assert len(CreateMission(objective="x" * length).objective) == length


@pytest.mark.parametrize("objective", ["", "   ", "x" * 2001], ids=["empty", "blank", "too-long"])
def test_objective_out_of_bounds_is_rejected(objective: str) -> None:
    """An empty, blank or over-long objective is rejected."""
    with pytest.raises(ValidationError, match="objective"):
        CreateMission(objective=objective)


@pytest.mark.parametrize("budget", [0.00005, 5, 100], ids=["tiny", "normal", "max"])
def test_budget_in_range_is_accepted(budget: float) -> None:
    """A budget above 0 and at most 100 dollars is accepted."""
    assert CreateMission(objective="x", budget_usd=budget).budget_usd == budget


@pytest.mark.parametrize(
    "budget",
    [0, -1, 100.01, 101, float("nan"), float("inf"), "lots"],
    ids=["zero", "negative", "just-over", "over", "nan", "inf", "text"],
)
def test_budget_out_of_range_is_rejected(budget: object) -> None:
    """Zero, negative, over-100, NaN, infinite or non-numeric budgets are rejected."""
    with pytest.raises(ValidationError, match="budget_usd"):
        CreateMission(objective="x", budget_usd=budget)


@pytest.mark.parametrize(
    "payload",
    [{"objective": "x", "priority": 1}, {"objective": "x", "scope": {"max_pages": 3}}],
    ids=["top-level", "in-scope"],
)
def test_unknown_fields_are_rejected(payload: dict) -> None:
    """Fields the API does not know are refused rather than ignored."""
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        CreateMission.model_validate(payload)


def test_allowed_domains_are_normalised() -> None:
    """Hostnames are lower-cased, lose a trailing dot and are de-duplicated."""
    request = CreateMission.model_validate(
        {
            "objective": "x",
            "scope": {"allowed_domains": ["Example.COM.", "docs.python.org", "example.com"]},
        }
    )
    assert request.scope.allowed_domains == ["example.com", "docs.python.org"]


@pytest.mark.parametrize(
    "domain",
    ["http://x.com", "a b", "x/y", "", "-bad.com", "x..com", "a" * 64 + ".com"],
    ids=["scheme", "space", "path", "empty", "leading-hyphen", "empty-label", "long-label"],
)
def test_invalid_domains_are_rejected(domain: str) -> None:
    """Anything but a bare hostname is rejected with a hint."""
    with pytest.raises(ValidationError, match="is not a hostname"):
        CreateMission.model_validate({"objective": "x", "scope": {"allowed_domains": [domain]}})


def test_at_most_twenty_domains() -> None:
    """Twenty domains are accepted; twenty-one are rejected."""
    domains = [f"d{n}.example.com" for n in range(21)]
    accepted = CreateMission.model_validate(
        {"objective": "x", "scope": {"allowed_domains": domains[:20]}}
    )
    assert len(accepted.scope.allowed_domains) == 20
    with pytest.raises(ValidationError, match="allowed_domains"):
        CreateMission.model_validate({"objective": "x", "scope": {"allowed_domains": domains}})


@pytest.mark.parametrize("tool", ["", "t" * 65], ids=["empty", "too-long"])
def test_tool_name_length_is_bounded(tool: str) -> None:
    """A tool name must be 1 to 64 characters."""
    with pytest.raises(ValidationError, match="tool"):
        CreateMission(objective="x", tool=tool)


@pytest.mark.parametrize(
    ("mission_id", "valid"),
    [
        ("m_abc-123", True),
        ("x" * 64, True),
        ("", False),
        ("x" * 65, False),
        ("../etc", False),
        ("a b", False),
        ("__x__", False),
        ("____", False),
        ("__x", True),
    ],
    ids=["normal", "longest", "empty", "too-long", "path", "space", "reserved", "under", "x"],
)
def test_valid_mission_id(mission_id: str, valid: bool) -> None:
    """Ids (of missions, schedules, recipes) are 1..64 letters, digits, underscores or
    hyphens, and not one Firestore reserves."""
    assert valid_mission_id(mission_id) is valid


# ---- responses: read from the domain's objects by attribute --------------------------------


def step(detail: StepDetail | None = None) -> ExecutionStep:
    return ExecutionStep(
        "tool_execution", 5, 7, 61, "started", "Running", "2025-01-01T12:00:00Z", detail=detail
    )


def running_mission() -> Mission:
    progress = Progress("m_1", "2025-01-01T12:00:00Z", current_step=step(), progress_percent=61)
    record = ExecutionRecord(
        Status.RUNNING,
        runs=2,
        recoveries=1,
        intent=Intent("calculate", 0.9, "arithmetic"),
        cost_usd=Cost(0.0001),
        progress_tracker=progress,
        outputs={"budget_check": {"estimate": 0.0001}},
    )
    new = lifecycle.proposed("m_1", "alice", "calculate 3+4", ["example.com"], 1.0, None, {}, START)
    return replace(
        new,
        status=Status.RUNNING,
        started_at=START,
        execution_record=record,
        run_id="r_secret",
        lease_expires_at=START,
        event_seq=9,
    )


def test_a_step_without_detail_is_shown_without_a_detail_key() -> None:
    """An ExecutionStep without sub-step detail serialises without a detail key."""
    assert "detail" not in ExecutionStepOut.model_validate(step()).model_dump(mode="json")
    shown = ExecutionStepOut.model_validate(step(StepDetail(3, 5, "pages")))
    assert shown.model_dump(mode="json")["detail"] == {"done": 3, "total": 5, "unit": "pages"}


def test_a_mission_is_shown_by_name_without_what_only_storage_keeps() -> None:
    """A mission reads into its response by attribute; its run id, event seq, recoveries and
    memoized outputs are not echoed."""
    body = MissionOut.model_validate(running_mission()).model_dump(mode="json")
    assert (body["mission_id"], body["status"], body["scope"]) == (
        "m_1",
        "running",
        {"allowed_domains": ["example.com"]},
    )
    assert body["lease_expires_at"] == "2025-01-01T12:00:00Z"
    record = body["execution_record"]
    assert (record["status"], record["runs"], record["intent"]["name"]) == (
        "running",
        2,
        "calculate",
    )
    assert record["cost_usd"] == {"estimated": 0.0001, "actual": None}
    assert record["progress_tracker"]["current_step"]["step_name"] == "tool_execution"
    assert "detail" not in record["progress_tracker"]["current_step"]
    assert not {"run_id", "event_seq"} & set(body)
    assert not {"recoveries", "outputs"} & set(record)


def test_execute_is_answered_with_the_queued_missions_id_and_status() -> None:
    """The queued mission execute returns is answered as its id and "queued" only."""
    queued = replace(running_mission(), status=Status.QUEUED)
    assert ExecuteAccepted.model_validate(queued).model_dump(mode="json") == {
        "mission_id": "m_1",
        "status": "queued",
    }
    with pytest.raises(ValidationError, match="status"):
        ExecuteAccepted.model_validate(running_mission())
