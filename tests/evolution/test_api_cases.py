"""Eval cases, runs made into cases, expected answers in feedback and version lineage over
HTTP and through the CLI (real Postgres; these routes need no Temporal)."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from api.cli import evolution as cli_evolution
from api.cli import runs as cli_runs
from api.cli.main import cli
from api.client import ColonyClient
from api.main import create_app
from core import tenants
from core.db import Pool
from core.evolution.cases import split_of
from core.evolution.from_runs import expected_check
from core.runs import agents
from core.runs import store as runs
from core.runs.payloads import AgentSpec, RunProgress
from core.settings import Settings
from tests.api.test_api import assert_error
from tests.conftest import make_settings
from tests.support.api import in_process_api

ONE, TWO = "ev-one", "ev-two"
SPEC = AgentSpec(instructions="Compute.", model="openai/m")
NUMERIC = {"kind": "numeric", "value": 391}

Api = Callable[[str], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    out = {}
    async with pool.connection() as conn:
        for tenant in (ONE, TWO):
            await tenants.ensure_tenant(conn, tenant, tenant)
            _, out[tenant] = await tenants.create_api_key(conn, tenant, "k", role="member")
        await agents.create_version(conn, ONE, "calc", SPEC)
        await agents.create_version(conn, ONE, "clerk", SPEC)
        await agents.create_version(conn, TWO, "other", SPEC)
    return out


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return make_settings(DATABASE_URL=database_url)


@pytest.fixture
async def api(settings: Settings, keys: dict[str, str]) -> AsyncIterator[Api]:
    """`async with api(tenant) as http:` an HTTP client of the app with that tenant's key."""
    async with in_process_api(settings) as client_for:
        yield lambda tenant: client_for(keys[tenant])


async def finished_run(pool: Pool, objective: str, agent: str = "calc", tenant: str = ONE) -> str:
    """A run that has succeeded (written to Postgres as the workflow would)."""
    async with pool.connection() as conn:
        run, _, _ = await runs.create_run(
            conn, tenant_id=tenant, agent_name=agent, agent_version=1, objective=objective
        )
        await runs.finish(
            conn, run.id, outcome="succeeded", reason=None, result="390", progress=RunProgress()
        )
    return run.id


def error_messages(response: httpx.Response) -> str:
    """The message and every validation message of an error body, in one string."""
    error = response.json()["error"]
    return " | ".join([error["message"], *(e["msg"] for e in error["details"].get("errors", []))])


async def test_cases_are_created_listed_filtered_and_deleted(api: Api) -> None:
    async with api(ONE) as http:
        created = await http.post(
            "/v1/agents/calc/eval-cases",
            json={"objective": "17 * 23?", "checks": [NUMERIC], "tags": ["math", "math"],
                  "guard": True},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        case = created.json()
        assert case["id"].startswith("case-") and case["split"] == split_of(case["id"])
        assert case["agent"] == "calc" and case["source_run_id"] is None and case["created_at"]
        assert case["tags"] == ["math"] and case["guard"] is True
        assert case["checks"][0]["kind"] == "numeric" and case["checks"][0]["value"] == 391
        judged = await http.post(
            "/v1/agents/calc/eval-cases",
            json={"objective": "Explain 17 * 23.", "rubric": "Shows the steps.", "tags": ["prose"]},
        )
        assert judged.status_code == 201, judged.text
        rubric_case = judged.json()

        listed = (await http.get("/v1/agents/calc/eval-cases")).json()
        assert [c["id"] for c in listed] == [case["id"], rubric_case["id"]]
        tagged = (await http.get("/v1/agents/calc/eval-cases", params={"tag": "prose"})).json()
        assert [c["id"] for c in tagged] == [rubric_case["id"]]
        in_split = await http.get("/v1/agents/calc/eval-cases", params={"split": case["split"]})
        assert case["id"] in [c["id"] for c in in_split.json()]
        assert all(c["split"] == case["split"] for c in in_split.json())
        assert (await http.get("/v1/agents/clerk/eval-cases")).json() == []

        got = await http.get(f"/v1/agents/calc/eval-cases/{case['id']}")
        assert got.status_code == 200 and got.json() == case
        # A case belongs to its agent: another agent's path does not find it.
        assert_error(await http.get(f"/v1/agents/clerk/eval-cases/{case['id']}"), 404, "not_found")

        deleted = await http.delete(f"/v1/agents/calc/eval-cases/{case['id']}")
        assert deleted.status_code == 204 and deleted.content == b""
        assert_error(await http.get(f"/v1/agents/calc/eval-cases/{case['id']}"), 404, "not_found")
        again = await http.delete(f"/v1/agents/calc/eval-cases/{case['id']}")
        assert_error(again, 404, "not_found")
        assert "not found" in error_messages(again)


async def test_invalid_cases_are_422_with_clear_messages(api: Api) -> None:
    async with api(ONE) as http:
        for body, expected in [
            ({"objective": "x"}, "a case needs checks or a rubric"),
            ({"objective": "x", "checks": [{"kind": "regex", "value": "(unclosed"}]},
             "the regex does not compile"),
            ({"objective": "x", "checks": [{"kind": "numeric", "value": "many"}]},
             "a numeric check needs a number"),
            ({"objective": "x", "checks": [{"kind": "teleport"}]}, "Input should be"),
            ({"objective": "x", "rubric": "r", "tags": ["no spaces"]}, "tag 'no spaces' must"),
            ({"objective": "", "rubric": "r"}, "at least 1 character"),
            ({"objective": "x", "rubric": "r", "colour": "red"}, "Extra inputs are not permitted"),
        ]:  # fmt: skip
            response = await http.post("/v1/agents/calc/eval-cases", json=body)
            assert_error(response, 422, "invalid_request")
            assert expected in error_messages(response), (body, response.text)
        bad_split = await http.get("/v1/agents/calc/eval-cases", params={"split": "test"})
        assert_error(bad_split, 422, "invalid_request")
        bad_name = await http.post("/v1/agents/bad name!/eval-cases", json={"objective": "x"})
        assert_error(bad_name, 422, "invalid_request")


async def test_other_tenants_agents_and_cases_are_404(api: Api) -> None:
    async with api(ONE) as one, api(TWO) as two:
        case = (
            await one.post(
                "/v1/agents/calc/eval-cases", json={"objective": "2 + 2?", "checks": [NUMERIC]}
            )
        ).json()
        body = {"objective": "x", "rubric": "r"}
        for response in [
            await two.post("/v1/agents/calc/eval-cases", json=body),
            await two.get("/v1/agents/calc/eval-cases"),
            await two.get(f"/v1/agents/calc/eval-cases/{case['id']}"),
            await two.delete(f"/v1/agents/calc/eval-cases/{case['id']}"),
            await one.post("/v1/agents/nobody/eval-cases", json=body),
            await one.get("/v1/agents/nobody/eval-cases"),
        ]:
            assert_error(response, 404, "not_found")
        assert "agent 'calc' not found" in error_messages(
            await two.post("/v1/agents/calc/eval-cases", json=body)
        )
        # Still there for its owner.
        assert (await one.get(f"/v1/agents/calc/eval-cases/{case['id']}")).status_code == 200


async def test_a_run_with_an_expected_answer_becomes_a_case_once(api: Api, pool: Pool) -> None:
    run_id = await finished_run(pool, "What is 17 * 23?")
    async with api(ONE) as http, api(TWO) as other:
        rated = await http.post(
            f"/v1/runs/{run_id}/feedback", json={"rating": 2, "comment": "off by one",
                                                 "expected": " 391 "},
        )  # fmt: skip
        assert rated.status_code == 200, rated.text
        assert rated.json() == {
            "run_id": run_id,
            "rating": 2,
            "comment": "off by one",
            "expected": " 391 ",
        }
        async with pool.connection() as conn:
            stored = await runs.get_feedback(conn, ONE, run_id)
        assert stored is not None and stored.expected == " 391 "

        assert_error(await other.post(f"/v1/runs/{run_id}/eval-case"), 404, "not_found")
        created = await http.post(f"/v1/runs/{run_id}/eval-case", json={"tags": ["from-run"]})
        assert created.status_code == 201, created.text
        case = created.json()
        assert case["objective"] == "What is 17 * 23?" and case["agent"] == "calc"
        assert case["source_run_id"] == run_id and case["expected"] == " 391 "
        assert case["tags"] == ["from-run"] and case["guard"] is False
        (check,) = case["checks"]
        assert (check["kind"], check["value"], check["tolerance"]) == ("numeric", 391, 1e-6)

        # Twice: the same case, whatever the second body says.
        again = await http.post(f"/v1/runs/{run_id}/eval-case", json={"guard": True})
        assert again.status_code == 200 and again.json() == case
        assert (await http.get(f"/v1/agents/calc/eval-cases/{case['id']}")).json() == case


async def test_a_run_becomes_a_case_with_given_checks_or_a_text_answer(
    api: Api, pool: Pool
) -> None:
    text_run, checked_run, bare_run, rated_run = [
        await finished_run(pool, f"objective {n}") for n in range(4)
    ]
    async with api(ONE) as http:
        await http.post(
            f"/v1/runs/{text_run}/feedback",
            json={"rating": 1, "expected": "The capital  of France\nis Paris."},
        )
        text_case = (await http.post(f"/v1/runs/{text_run}/eval-case")).json()
        assert text_case["checks"] == [
            {"kind": "contains", "value": "The capital of France is Paris.", "tolerance": 0.0,
             "path": None, "tool": None, "arguments": {}, "case_sensitive": False}
        ]  # fmt: skip

        given = await http.post(
            f"/v1/runs/{checked_run}/eval-case",
            json={"checks": [{"kind": "exact", "value": "ok"}], "guard": True},
        )
        assert given.status_code == 201, given.text
        assert given.json()["checks"][0]["kind"] == "exact" and given.json()["guard"] is True
        assert given.json()["expected"] is None

        for run_id, why in [(bare_run, "has no feedback"), (rated_run, "has no expected answer")]:
            if run_id == rated_run:
                await http.post(f"/v1/runs/{run_id}/feedback", json={"rating": 4})
            response = await http.post(f"/v1/runs/{run_id}/eval-case")
            assert_error(response, 422, "invalid_request")
            message = error_messages(response)
            assert why in message
            assert "give checks or a rubric, or rate the run with an expected answer first" in (
                message
            )
        bad_tag = await http.post(
            f"/v1/runs/{bare_run}/eval-case", json={"rubric": "r", "tags": ["a b"]}
        )
        assert_error(bad_tag, 422, "invalid_request")
        assert "cannot become an eval case: tags: Value error, tag 'a b'" in error_messages(bad_tag)
        bad_regex = await http.post(
            f"/v1/runs/{bare_run}/eval-case", json={"checks": [{"kind": "regex", "value": "("}]}
        )
        assert_error(bad_regex, 422, "invalid_request")
        assert "the regex does not compile" in error_messages(bad_regex)
        assert_error(await http.post("/v1/runs/run_nope/eval-case"), 404, "not_found")
        blank = await http.post(f"/v1/runs/{bare_run}/feedback", json={"rating": 3, "expected": ""})
        assert_error(blank, 422, "invalid_request")


@pytest.mark.parametrize(
    ("expected", "kind", "value"),
    [
        ("391", "numeric", 391),
        ("-2.5.", "numeric", -2.5),
        ("1,024", "numeric", 1024),
        ("1e3", "numeric", 1000.0),
        ("1e999", "contains", "1e999"),
        ("391 apples", "contains", "391 apples"),
        ("  Paris\n", "contains", "Paris"),
    ],
)
def test_expected_answers_make_numeric_or_contains_checks(
    expected: str, kind: str, value: object
) -> None:
    check = expected_check(expected)
    assert (check.kind, check.value) == (kind, value)
    assert check.tolerance == (1e-6 if kind == "numeric" else 0)


async def test_versions_show_their_lineage(api: Api, pool: Pool) -> None:
    async with pool.connection() as conn:
        await agents.create_version(conn, ONE, "lineage", SPEC)
        candidate = await agents.add_candidate(
            conn, ONE, "lineage", SPEC.model_copy(update={"instructions": "Compute carefully."}),
            parent=1, evolution_id="evo-1", rationale="runs skipped the carry " * 10,
        )  # fmt: skip
        await agents.release(conn, ONE, "lineage", candidate.version)
        await agents.rollback(conn, ONE, "lineage", 1)
    async with api(ONE) as http:
        versions = (await http.get("/v1/agents/lineage/versions")).json()
    lineage = [
        (v["version"], v["status"], v["parent_version"], v["cause"], v["evolution_id"])
        for v in versions
    ]
    assert lineage == [
        (3, "released", 2, "rollback", None),
        (2, "released", 1, "evolution", "evo-1"),
        (1, "released", None, "manual", None),
    ]
    assert versions[1]["rationale"].startswith("runs skipped the carry")
    assert versions[0]["rationale"] == "rollback to version 1"
    assert versions[2]["rationale"] is None


async def test_the_cli(
    settings: Settings, keys: dict[str, str], pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(settings)

    def run(*args: str) -> Result:
        with TestClient(app, base_url="http://colony") as http:
            client = ColonyClient(make_settings(COLONY_API_KEY=keys[ONE]))
            http.headers["Authorization"] = f"Bearer {keys[ONE]}"
            client._http = http  # type: ignore[assignment]  # an httpx-like client over the app
            for module in (cli_evolution, cli_runs):
                monkeypatch.setattr(module, "api_client", lambda: client)
            return CliRunner().invoke(cli, list(args), env={"COLUMNS": "250"})

    async def colony(*args: str) -> Result:
        return await asyncio.to_thread(run, *args)

    added = await colony(
        "eval-cases", "add", "clerk", "--objective", "File the memo.",
        "--check", json.dumps({"kind": "contains", "value": "filed"}),
        "--check", json.dumps({"kind": "tool_called", "tool": "calculator"}),
        "--tag", "office", "--guard",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    case_id = added.output.split()[2]
    assert case_id.startswith("case-")
    assert 'guard · contains "filed"; tool_called calculator' in added.output
    rubric = await colony(
        "eval-cases", "add", "clerk", "--objective", "Tidy up.", "--rubric", "Neat."
    )
    assert rubric.exit_code == 0 and "rubric" in rubric.output

    listed = await colony("eval-cases", "list", "clerk")
    assert listed.exit_code == 0, listed.output
    assert "eval cases of clerk (2)" in listed.output and case_id in listed.output
    assert "office" in listed.output and "File the memo." in listed.output
    tagged = await colony("eval-cases", "list", "clerk", "--tag", "office")
    assert "(1)" in tagged.output and "Tidy up." not in tagged.output
    split = split_of(case_id)
    in_split = await colony("eval-cases", "list", "clerk", "--split", split)
    assert case_id in in_split.output
    shown = await colony("eval-cases", "show", "clerk", case_id)
    assert shown.exit_code == 0 and json.loads(shown.output)["id"] == case_id

    # The API's reasons are shown, one per line; bad JSON never leaves the machine.
    invalid = await colony(
        "eval-cases",
        "add",
        "clerk",
        "--objective",
        "x",
        "--check",
        '{"kind": "regex", "value": "("}',
    )
    assert invalid.exit_code == 1 and "checks.0: Value error, the regex does not compile" in (
        invalid.output
    )
    neither = await colony("eval-cases", "add", "clerk", "--objective", "x")
    assert neither.exit_code == 1 and "a case needs checks or a rubric" in neither.output
    not_json = await colony("eval-cases", "add", "clerk", "--objective", "x", "--check", "{no")
    assert not_json.exit_code == 2 and "is not valid JSON" in not_json.output
    not_object = await colony("eval-cases", "add", "clerk", "--objective", "x", "--check", "[]")
    assert not_object.exit_code == 2 and "must be a JSON object" in not_object.output

    deleted = await colony("eval-cases", "delete", "clerk", case_id)
    assert deleted.exit_code == 0 and f"deleted eval case {case_id}" in deleted.output
    gone = await colony("eval-cases", "delete", "clerk", case_id)
    assert gone.exit_code == 1 and "not found" in gone.output

    # Feedback with an expected answer, then the run as a case.
    run_id = await finished_run(pool, "How many memos?", agent="clerk")
    unrated = await colony("eval-cases", "from-run", run_id)
    assert unrated.exit_code == 1 and "rate the run with an expected answer first" in unrated.output
    rated = await colony("feedback", run_id, "--rating", "2", "--expected", "12")
    assert rated.exit_code == 0 and f"rated {run_id}: 2/5" in rated.output
    from_run = await colony("eval-cases", "from-run", run_id, "--guard", "--tag", "memo")
    assert from_run.exit_code == 0, from_run.output
    assert "of clerk" in from_run.output and "guard · numeric 12 ± 1e-06" in from_run.output
    async with pool.connection() as conn:
        stored = await runs.get_feedback(conn, ONE, run_id)
    assert stored is not None and stored.expected == "12"

    # Lineage.
    async with pool.connection() as conn:
        await agents.add_candidate(
            conn, ONE, "clerk", SPEC.model_copy(update={"instructions": "File memos."}),
            parent=1, evolution_id="evo-42", rationale="Memos were left unfiled. " * 20,
        )  # fmt: skip
    history = await colony("agents", "history", "clerk")
    assert history.exit_code == 0, history.output
    rows = [line for line in history.output.splitlines() if "│" in line]
    assert "lineage of clerk" in history.output
    assert any("candidate" in r and "evolution" in r and "evo-42" in r for r in rows)
    assert any("released" in r and "manual" in r for r in rows)
    assert "Memos were left unfiled." in history.output and "..." in history.output
    missing = await colony("agents", "history", "nobody")
    assert missing.exit_code == 1 and "agent 'nobody' not found" in missing.output
