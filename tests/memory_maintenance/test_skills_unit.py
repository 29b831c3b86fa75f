"""Clustering, parsing and the fallback skill: the pure parts of memory maintenance."""

import numpy as np

from activities.memory.maintenance import (
    cluster_indices,
    clustering_text,
    common_tool_sequence,
    distill_messages,
    episode_objective,
    episode_summary,
    fallback_skill,
    parse_skill,
)
from core.memory.maintenance import SkillCluster


def unit(*rows: list[float]) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float32)
    normed: np.ndarray = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return normed


def test_clusters_group_near_rows_and_drop_singletons() -> None:
    vectors = unit([1, 0, 0], [0.95, 0.05, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.97, 0.1], [0, 0, 1])
    assert cluster_indices(vectors, 0.9, 2, 10) == [[0, 1, 2], [3, 4]]
    assert cluster_indices(vectors, 0.9, 3, 10) == [[0, 1, 2]]
    assert cluster_indices(vectors, 0.9, 2, 2) == [[0, 1], [3, 4]]  # capped, nearest kept
    assert cluster_indices(vectors[:1], 0.9, 2, 10) == []


def test_the_densest_row_seeds_its_cluster() -> None:
    # Row 1 is near 0 and 2, which are not near each other: it seeds, and takes both.
    vectors = unit([1, 0.3, 0], [1, 1, 0], [0.3, 1, 0])
    assert cluster_indices(vectors, 0.8, 2, 10) == [[1, 0, 2]]


def test_parse_skill_accepts_what_models_write() -> None:
    plain = '{"name": "Convert currencies", "trigger": "Money conversions", "procedure": "1. x"}'
    assert parse_skill(plain) == ("Convert currencies", "Money conversions", "1. x")
    fenced = 'Sure!\n```json\n{"Name": "A", "When": "b", "Steps": ["fetch", "2. add"]}\n```'
    assert parse_skill(fenced) == ("A", "b", "1. fetch\n2. add")
    nested = 'x {"skill": {"oops": 1}} {"name": "N", "how": "do it", "trigger": "t"}'
    assert parse_skill(nested) == ("N", "t", "do it")


def test_parse_skill_rejects_unusable_answers() -> None:
    for text in (None, "", "I cannot do that.", '{"name": "x"}', "{broken", '["name"]'):
        assert parse_skill(text) is None
    assert parse_skill('{"name": " ", "trigger": "t", "procedure": "p"}') is None


def test_fallback_skill_from_the_cluster() -> None:
    cluster = SkillCluster(
        agent_name="travel",
        episode_ids=["b", "a"],
        objectives=["Convert 100 US dollars to euros", "Convert 250 US dollars to euros"],
        summaries=["Fetched the rate", "Computed it"],
        tool_sequences=[["http_fetch", "calculator", "calculator"], ["http_fetch", "calculator"]],
    )
    skill = fallback_skill(cluster)
    assert skill.fallback
    assert skill.name == "convert dollars euros"
    assert skill.trigger == "Tasks like: Convert 100 US dollars to euros"
    assert skill.procedure.splitlines() == [
        "1. Use `http_fetch`.",
        "2. Use `calculator`.",
        "3. Answer with what the tools returned.",
    ]
    assert skill.tools == ["http_fetch", "calculator"]
    assert skill.content.startswith("Skill: convert dollars euros\nWhen: Tasks like:")
    # The key depends on the episodes only, not on their order.
    assert cluster.key == cluster.model_copy(update={"episode_ids": ["a", "b"]}).key


def test_fallback_skill_without_tools() -> None:
    cluster = SkillCluster(
        agent_name="poet", episode_ids=["1", "2"], objectives=["Write a haiku", "A haiku"]
    )
    skill = fallback_skill(cluster)
    assert skill.name == "write haiku"  # the most common words, in order of appearance
    assert skill.procedure.startswith("1. Answer directly")


def test_common_tool_sequence() -> None:
    assert common_tool_sequence([]) == []
    assert common_tool_sequence([[], ["a"], ["b", "b", "c"], ["b", "c"]]) == ["b", "c"]
    assert common_tool_sequence([["a"], ["b"]]) == ["a"]


def test_episode_fields_and_prompt() -> None:
    content = "Objective: Convert 5 USD\nOutcome: succeeded\nSummary: Used the rate.\nDone."
    assert episode_objective(content, {}) == "Convert 5 USD"
    assert episode_objective(content, {"objective": "Other"}) == "Other"
    assert episode_summary(content) == "Used the rate.\nDone."
    assert clustering_text("Do it", ["a", "b", "a"]) == "Do it (tools: a, b)"
    cluster = SkillCluster(
        agent_name="travel",
        episode_ids=["1", "2"],
        objectives=["One", "Two"],
        summaries=["S1", ""],
        tool_sequences=[["calculator"], []],
    )
    prompt = distill_messages(cluster)[1].content or ""
    assert "1. Objective: One\n   Summary: S1\n   Tools used, in order: calculator" in prompt
    assert "2. Objective: Two\n\nWrite" in prompt
