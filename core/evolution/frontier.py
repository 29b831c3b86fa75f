"""The per-case Pareto frontier of an agent's versions, across evolution cycles (GEPA).

A version is on the frontier when, on at least one validation case, no version
evaluated on that case scored higher. Versions that are best somewhere keep ideas the
single best version lacks, so the next cycle's candidates grow from all of them, not
only from the winner. Pure logic, no I/O.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Scored:
    """One evaluation: a version's score on a case (None: no valid result, a 0)."""

    version: int
    case_id: str
    score: float | None


def frontier(results: Iterable[Scored]) -> list[int]:
    """Versions best on at least one case, most such cases first, then newest first.

    Dominated versions are dropped: one whose set of best cases is contained in
    another's (a tie keeps the newer version).
    """
    by_case: dict[str, dict[int, float]] = defaultdict(dict)
    for r in results:
        score = r.score or 0.0
        by_case[r.case_id][r.version] = max(score, by_case[r.case_id].get(r.version, 0.0))
    wins: dict[int, set[str]] = defaultdict(set)
    for case_id, scores in by_case.items():
        top = max(scores.values())
        for version, score in scores.items():
            if score == top:
                wins[version].add(case_id)
    return _undominated(wins)


def _undominated(wins: Mapping[int, set[str]]) -> list[int]:
    kept = []
    for version, cases in wins.items():
        dominated = any(
            other != version and cases <= other_cases and (cases < other_cases or other > version)
            for other, other_cases in wins.items()
        )
        if not dominated:
            kept.append(version)
    return sorted(kept, key=lambda v: (-len(wins[v]), -v))


def parents(front: list[int], incumbent: int, count: int) -> list[int]:
    """`count` parents for the next candidates, in turn from the incumbent and the frontier.

    The incumbent comes first; the incumbent alone when the frontier is empty.
    """
    pool = [incumbent, *(v for v in front if v != incumbent)]
    return [pool[i % len(pool)] for i in range(count)]
