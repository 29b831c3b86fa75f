"""Candidate instructions for evolution cycles: how they are built, and when they are refused.

Pure logic, no I/O and no model calls. A cycle's proposers call it to turn evidence into
candidate versions of an agent's instructions, and to check every candidate before it is
evaluated.

Two kinds of edit are built here, in sections that evolution owns:

- **Incremental playbook edits** (ACE): new lessons are appended as one-line bullets to a
  `## Playbook` section, and the rest of the instructions stays byte for byte the same.
  A whole rewrite by a model tends to "collapse" the context: details that took many
  cycles to learn are summarized away, and the diff is hard to review. Appending bullets
  keeps what was learnt, dedupes repeated lessons, and gives a diff of a few `+` lines.
  Whole rewrites (GEPA's reflective mutation) are still allowed; they are written
  elsewhere and pass the same checks.
- **Few-shot demonstrations** (DSPy): an `## Examples` section of (request, answer) pairs
  from successful runs. It needs no model to write prose, so evolution works even when
  the agent's own model is tiny.

Every candidate, however written, is checked by `check_candidate`, which rejects and
never repairs: empty or unchanged instructions, instructions over the length limit, a
template variable (`{name}`, `{{name}}`) or a required section (a heading other than
the two above) of the incumbent that is missing, and text that copies protected material.

The anti-leak rule: protected texts are the objectives, expected answers and check values
of validation and holdout cases, which decide promotion and must stay unseen. A candidate
that copies them would pass its evaluation by recall, not by skill. Only the text a
candidate adds is searched (what the incumbent already had is not the candidate's doing),
after normalizing both sides to lowercase words without punctuation:

- a protected text of at least `n` words (6 by default) leaks when any `n` consecutive
  words of it appear in the added text;
- a shorter one leaks when all its words appear as a contiguous run in the added text,
  unless it is only a number (`391`, `3.14`) or a single word shorter than 4 characters
  (`yes`): such answers occur in ordinary prose and prove nothing.
"""

import difflib
import re
from collections.abc import Iterator, Sequence
from typing import Final

PLAYBOOK_HEADING: Final = "## Playbook"
EXAMPLES_HEADING: Final = "## Examples"

MAX_EXAMPLE_OBJECTIVE_CHARS: Final = 500
MAX_EXAMPLE_ANSWER_CHARS: Final = 500
LEAK_SNIPPET_CHARS: Final = 80
ELLIPSIS: Final = "…"

# An ATX heading (CommonMark: up to 3 spaces of indent, 1-6 '#', then a space or the end).
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_BULLET = re.compile(r"^\s*[-*+][ \t]+(.*)$")
_DOUBLE_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")
_SINGLE_VARIABLE = re.compile(r"(?<!\{)\{([A-Za-z_]\w*)\}(?!\})")
_WORD = re.compile(r"\w+")
_OWNED: Final = frozenset({PLAYBOOK_HEADING.lower(), EXAMPLES_HEADING.lower()})


def add_playbook_bullets(instructions: str, bullets: Sequence[str]) -> str:
    """ACE-style incremental edit: append new bullets to the instructions' Playbook section.

    Each bullet becomes one line `- text` (newlines and runs of whitespace collapsed, a
    leading bullet marker dropped) at the end of the `## Playbook` section, which is
    created at the end of the instructions when missing. A bullet already in the section,
    or given twice, is not added again (compared normalized: case, whitespace, trailing
    period); empty bullets are ignored. Nothing else changes; with nothing to add, the
    instructions come back as they were.
    """
    lines = instructions.splitlines()
    span = _section(lines, PLAYBOOK_HEADING)
    existing = lines[span[0] + 1 : span[1]] if span else []
    seen = {_bullet_key(m.group(1)) for line in existing if (m := _BULLET.match(line))}
    new: list[str] = []
    for bullet in bullets:
        text = _one_line(bullet)
        if marker := _BULLET.match(text):
            text = marker.group(1).strip()
        key = _bullet_key(text)
        if key and key not in seen:
            seen.add(key)
            new.append(f"- {text}")
    if not new:
        return instructions
    if span is None:
        return _append_section(instructions, [PLAYBOOK_HEADING, *new])
    end = span[1]
    while end > span[0] + 1 and not lines[end - 1].strip():
        end -= 1  # after the section's last line, before the blank lines that end it
    return _join(lines[:end] + new + lines[end:], instructions)


def with_examples(instructions: str, examples: Sequence[tuple[str, str]], limit: int = 3) -> str:
    """DSPy-style few-shot demonstrations: set the instructions' Examples section.

    The `## Examples` section is replaced (or added at the end) by up to `limit`
    (objective, answer) pairs, each a block `Request: ...` / `Answer: ...` of one line per
    field (newlines collapsed, so no example can open a heading or a code fence), texts
    over 500 characters shortened with an ellipsis. With no examples (or `limit` <= 0)
    the section is removed.
    """
    lines = instructions.splitlines()
    span = _section(lines, EXAMPLES_HEADING)
    body: list[str] = []
    for objective, answer in examples[: max(limit, 0)]:
        body += [
            "",
            f"Request: {_shorten(objective, MAX_EXAMPLE_OBJECTIVE_CHARS)}",
            f"Answer: {_shorten(answer, MAX_EXAMPLE_ANSWER_CHARS)}",
        ]
    section = [EXAMPLES_HEADING, *body] if body else []
    if span is None:
        return _append_section(instructions, section) if section else instructions
    start, end = span
    before, after = lines[:start], lines[end:]
    if section and after:
        section.append("")  # keep a blank line before the next heading
    if not section:
        while before and not before[-1].strip():
            before.pop()  # drop the blank lines that separated the removed section
        if before and after:
            before.append("")
    return _join(before + section + after, instructions)


def instruction_diff(old: str, new: str) -> str:
    """A unified diff (difflib) of two instructions, labelled incumbent/candidate; "" when equal."""
    if old == new:
        return ""
    diff = difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile="incumbent", tofile="candidate", lineterm=""
    )
    return "\n".join(diff)


def template_variables(text: str) -> set[str]:
    """Names of template variables in instructions: `{name}` and `{{name}}`.

    Only identifiers count (spaces are allowed inside double braces, as in Jinja), so
    JSON-looking braces such as `{"a": 1}` and `{}` are not variables.
    """
    return set(_DOUBLE_VARIABLE.findall(text)) | set(_SINGLE_VARIABLE.findall(text))


def required_sections(text: str) -> list[str]:
    """Markdown headings (`#` .. `######`) of the instructions, in order.

    Each is given normalized (`## Title`: whitespace collapsed, closing `#`s dropped).
    Headings inside fenced code blocks do not count, nor do the Playbook and Examples
    sections, which evolution owns (their headings and any subheadings under them).
    """
    sections: list[str] = []
    owned_level: int | None = None  # the level of the owned section we are in, if any
    for _, level, heading in _headings(text.splitlines()):
        if owned_level is not None and level > owned_level:
            continue
        owned_level = level if heading.lower() in _OWNED else None
        if owned_level is None:
            sections.append(heading)
    return sections


def leaked_text(candidate_added: str, protected: Sequence[str], n: int = 6) -> str | None:
    """The first protected text that the added text copies (shortened to 80 chars), else None.

    Protected texts are the objectives, expected answers and check values of validation
    and holdout cases. Both sides are compared as lowercase words without punctuation. A
    protected text of at least `n` words leaks when any `n` consecutive words of it appear
    in the added text; a shorter one leaks when all its words appear there as a contiguous
    run, unless it is only a number or a single word shorter than 4 characters (so "391"
    or "yes" alone does not leak, but "the capital of Peru is Lima" does).

    Raises:
        ValueError: `n` is below 1.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    added = _words(candidate_added)
    if not added:
        return None
    added_ngrams = set(_ngrams(added, n))
    added_joined = f" {' '.join(added)} "
    for text in protected:
        words = _words(text)
        if len(words) >= n:
            leaks = any(gram in added_ngrams for gram in _ngrams(words, n))
        else:
            leaks = not _trivial(words) and f" {' '.join(words)} " in added_joined
        if leaks:
            return _shorten(text, LEAK_SNIPPET_CHARS)
    return None


def added_text(old: str, new: str) -> str:
    """The lines of `new` that are not in `old` (what a candidate adds), joined by newlines.

    Lines compare with surrounding whitespace stripped; blank lines are left out.
    """
    kept = {line.strip() for line in old.splitlines()}
    return "\n".join(line for line in new.splitlines() if line.strip() and line.strip() not in kept)


def check_candidate(
    incumbent: str,
    candidate: str,
    *,
    max_chars: int,
    protected: Sequence[str] = (),
) -> str | None:
    """Why a candidate's instructions must be rejected (None: acceptable).

    Reject, never repair: empty instructions; unchanged ones (ignoring whitespace at either
    end); longer than `max_chars`; a template variable of the incumbent missing; a
    required section (heading) of the incumbent missing; added text that copies
    validation or holdout material (`leaked_text` on `added_text`). The reason is one
    sentence naming what is wrong. A leak's reason does not quote the protected text, so
    that recording or showing the reason (to a person or to the next cycle's proposer)
    cannot spread holdout material.
    """
    if not candidate.strip():
        return "The candidate's instructions are empty."
    if candidate.strip() == incumbent.strip():
        return "The candidate's instructions are unchanged from the incumbent's."
    if len(candidate) > max_chars:
        return (
            f"The candidate's instructions are {len(candidate)} characters long, "
            f"over the limit of {max_chars}."
        )
    if missing := sorted(template_variables(incumbent) - template_variables(candidate)):
        names = ", ".join(f"{{{name}}}" for name in missing)
        return f"The candidate drops the incumbent's template variable(s) {names}."
    kept = set(required_sections(candidate))
    if lost := [h for h in dict.fromkeys(required_sections(incumbent)) if h not in kept]:
        names = ", ".join(f"'{heading}'" for heading in lost)
        return f"The candidate drops the incumbent's required section(s) {names}."
    if leaked_text(added_text(incumbent, candidate), protected) is not None:
        return "The candidate copies text of a validation or holdout case."
    return None


def _headings(lines: Sequence[str]) -> Iterator[tuple[int, int, str]]:
    """(index, level, normalized heading) of each ATX heading outside fenced code blocks."""
    fence: str | None = None
    for index, line in enumerate(lines):
        if opening := _FENCE.match(line):
            marker = opening.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is None and (heading := _HEADING.match(line)):
            hashes, title = heading.group(1), " ".join((heading.group(2) or "").split())
            yield index, len(hashes), f"{hashes} {title}".rstrip()


def _section(lines: Sequence[str], heading: str) -> tuple[int, int] | None:
    """[start, end) of the first section under `heading` (case-insensitive), else None.

    The section runs to the next heading of the same or a higher level, or to the end.
    """
    start: int | None = None
    start_level = 0
    for index, level, found in _headings(lines):
        if start is None:
            if found.lower() == heading.lower():
                start, start_level = index, level
        elif level <= start_level:
            return start, index
    return None if start is None else (start, len(lines))


def _append_section(instructions: str, section: list[str]) -> str:
    """The instructions with a section added at the end, after one blank line."""
    body = instructions.rstrip()
    if not body:
        return "\n".join(section) + "\n"
    return f"{body}\n\n" + "\n".join(section) + "\n"


def _join(lines: list[str], original: str) -> str:
    """Lines joined back, ending with a newline when the original did (or was empty)."""
    text = "\n".join(lines)
    return text + "\n" if original.endswith("\n") or not original else text


def _one_line(text: str) -> str:
    """The text with newlines and runs of whitespace collapsed to single spaces."""
    return " ".join(text.split())


def _bullet_key(text: str) -> str:
    """How bullets compare: case-insensitive, whitespace collapsed, trailing periods dropped."""
    return _one_line(text).lower().rstrip(".").rstrip()


def _shorten(text: str, limit: int) -> str:
    """One line of at most `limit` characters, ending with an ellipsis when cut."""
    line = _one_line(text)
    if len(line) <= limit:
        return line
    return line[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def _words(text: str) -> list[str]:
    """Normalized words: lowercase, punctuation stripped."""
    return _WORD.findall(text.lower())


def _ngrams(words: Sequence[str], n: int) -> Iterator[tuple[str, ...]]:
    """Every run of `n` consecutive words."""
    return (tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _trivial(words: Sequence[str]) -> bool:
    """Whether a short protected text proves nothing when found.

    That is: no words, only a number (`391`, `3.14`), or one word shorter than 4 characters.
    """
    if not words:
        return True
    if all(word.isdigit() for word in words):
        return True
    return len(words) == 1 and len(words[0]) < 4
