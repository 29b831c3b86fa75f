"""The Pareto frontier of versions across cycles, and the parents drawn from it."""

from core.evolution.frontier import Scored, frontier, parents


def scores(table: dict[int, dict[str, float | None]]) -> list[Scored]:
    return [Scored(v, c, s) for v, cases in table.items() for c, s in cases.items()]


def test_versions_best_somewhere_stay_and_dominated_ones_go() -> None:
    table: dict[int, dict[str, float | None]] = {
        1: {"a": 1.0, "b": 0.0, "c": 0.0},  # best on a only
        2: {"a": 0.0, "b": 1.0, "c": 1.0},  # best on b and c
        3: {"a": 0.0, "b": 1.0, "c": 0.0},  # best on b, but 2 covers it: dominated
        4: {"a": None, "b": 0.0, "c": 0.0},  # best nowhere (None is 0)
    }
    assert frontier(scores(table)) == [2, 1]


def test_a_tie_keeps_the_newer_version() -> None:
    assert frontier(scores({1: {"a": 1.0}, 2: {"a": 1.0}})) == [2]


def test_no_results_no_frontier_and_the_incumbent_alone_as_parent() -> None:
    assert frontier([]) == []
    assert parents([], 5, 3) == [5, 5, 5]


def test_parents_start_with_the_incumbent_and_take_the_frontier_in_turn() -> None:
    assert parents([7, 5, 6], 5, 4) == [5, 7, 6, 5]
