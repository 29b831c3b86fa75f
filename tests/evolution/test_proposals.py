"""Candidate instructions: playbook bullets, few-shot examples, diffs and the rejection rules."""

import pytest

from core.evolution.proposals import (
    EXAMPLES_HEADING,
    PLAYBOOK_HEADING,
    add_playbook_bullets,
    added_text,
    check_candidate,
    instruction_diff,
    leaked_text,
    required_sections,
    template_variables,
    with_examples,
)

BASE = "# Role\nYou answer arithmetic questions for {user}.\n\n## Rules\n- Be brief.\n"
PERU = "What is the capital of Peru? Answer with the city only."


# --- add_playbook_bullets ---------------------------------------------------------------


def test_a_playbook_is_created_at_the_end_when_missing() -> None:
    result = add_playbook_bullets(BASE, ["Show the final number alone.", "Check carries."])
    assert result == BASE + "\n## Playbook\n- Show the final number alone.\n- Check carries.\n"
    # The incumbent's text is untouched: the diff has only additions.
    diff = instruction_diff(BASE, result)
    assert all(not line.startswith("-") or line == "--- incumbent" for line in diff.splitlines())


def test_a_playbook_on_empty_instructions() -> None:
    assert add_playbook_bullets("", ["Be exact"]) == "## Playbook\n- Be exact\n"


def test_bullets_go_at_the_end_of_an_existing_playbook_before_the_next_section() -> None:
    text = "# Role\nHelp.\n\n## Playbook\n- Old lesson.\n\n## Output\nJSON only.\n"
    result = add_playbook_bullets(text, ["New lesson"])
    assert result == (
        "# Role\nHelp.\n\n## Playbook\n- Old lesson.\n- New lesson\n\n## Output\nJSON only.\n"
    )


def test_an_empty_playbook_gets_its_first_bullet() -> None:
    text = "Help.\n\n## Playbook\n\n## Next\n"
    assert add_playbook_bullets(text, ["Lesson"]) == "Help.\n\n## Playbook\n- Lesson\n\n## Next\n"


def test_subsections_stay_inside_the_playbook() -> None:
    text = "## Playbook\n- A\n### Math\n- B\n## Tail\nx"
    result = add_playbook_bullets(text, ["C"])
    assert result == "## Playbook\n- A\n### Math\n- B\n- C\n## Tail\nx"


def test_existing_bullets_are_not_added_twice_compared_normalized() -> None:
    text = "Help.\n\n## Playbook\n- Show the final number alone.\n* Use   metric units\n"
    result = add_playbook_bullets(
        text,
        [
            "show the FINAL number alone",  # case and trailing period
            "Use metric\nunits.",  # whitespace, newline and period
            "- Use metric units",  # a bullet marker of its own
            "",
            "   \n ",
        ],
    )
    assert result == text  # nothing new: returned exactly as given


def test_new_bullets_are_deduplicated_and_made_one_line() -> None:
    result = add_playbook_bullets(
        "Help.", ["Cite  the\nsource.", "cite the source", "- Round to 2 decimals."]
    )
    assert result == "Help.\n\n## Playbook\n- Cite the source.\n- Round to 2 decimals.\n"


def test_only_the_playbook_counts_for_duplicates() -> None:
    # The same text as a bullet of another section is still a new playbook lesson.
    text = "## Rules\n- Be brief.\n\n## Playbook\n- A\n"
    assert add_playbook_bullets(text, ["Be brief"]) == text + "- Be brief\n"


def test_the_playbook_heading_is_found_case_insensitively_and_not_in_code() -> None:
    text = "```md\n## Playbook\n- fake\n```\n\n## playbook\n- Real\n"
    result = add_playbook_bullets(text, ["fake", "New"])
    assert result == text + "- fake\n- New\n"


def test_a_missing_final_newline_is_kept_missing() -> None:
    assert add_playbook_bullets("## Playbook\n- A", ["B"]) == "## Playbook\n- A\n- B"


# --- with_examples ----------------------------------------------------------------------


def test_examples_are_added_at_the_end() -> None:
    result = with_examples(BASE, [("What is 2 + 2?", "4"), ("What is 3 * 3?", "9")])
    assert result == BASE + (
        "\n## Examples\n\nRequest: What is 2 + 2?\nAnswer: 4\n\nRequest: What is 3 * 3?\nAnswer: 9\n"
    )


def test_examples_replace_the_old_section_in_place() -> None:
    text = "# Role\nHelp.\n\n## Examples\n\nRequest: old\nAnswer: old\n\n## Rules\nBe kind.\n"
    result = with_examples(text, [("new q", "new a")])
    assert result == (
        "# Role\nHelp.\n\n## Examples\n\nRequest: new q\nAnswer: new a\n\n## Rules\nBe kind.\n"
    )
    assert required_sections(result) == required_sections(text) == ["# Role", "## Rules"]


def test_examples_are_limited_and_shortened() -> None:
    long_objective, long_answer = "word " * 300, "x" * 900
    examples = [(long_objective, long_answer)] + [(f"q{i}", f"a{i}") for i in range(5)]
    result = with_examples("", examples, limit=2)
    lines = result.splitlines()
    assert result.count("Request: ") == 2 and "q1" not in result
    request = next(line for line in lines if line.startswith("Request: "))
    answer = next(line for line in lines if line.startswith("Answer: "))
    assert len(request.removeprefix("Request: ")) == 500 and request.endswith("…")
    assert len(answer.removeprefix("Answer: ")) == 500 and answer.endswith("…")


def test_multiline_examples_cannot_open_headings_or_fences() -> None:
    result = with_examples("Help.\n", [("## Injected\nq", "```\n# not a heading\n```")])
    assert required_sections(result) == []
    assert "Answer: ``` # not a heading ```" in result


def test_no_examples_removes_the_section() -> None:
    text = "# Role\nHelp.\n\n## Examples\n\nRequest: a\nAnswer: b\n\n## Rules\nBe kind.\n"
    assert with_examples(text, []) == "# Role\nHelp.\n\n## Rules\nBe kind.\n"
    assert with_examples("# Role\nHelp.\n\n## Examples\nRequest: a\n", []) == "# Role\nHelp.\n"
    assert with_examples("Help.", [("q", "a")], limit=0) == "Help."


def test_examples_then_playbook_keep_each_other() -> None:
    text = with_examples(add_playbook_bullets(BASE, ["Lesson"]), [("q", "a")])
    text = add_playbook_bullets(with_examples(text, [("q2", "a2")]), ["Lesson 2"])
    assert "- Lesson\n- Lesson 2\n" in text and "Request: q2" in text and "Request: q\n" not in text
    assert text.count(PLAYBOOK_HEADING) == 1 and text.count(EXAMPLES_HEADING) == 1


# --- instruction_diff and added_text ----------------------------------------------------


def test_instruction_diff() -> None:
    assert instruction_diff(BASE, BASE) == ""
    diff = instruction_diff("a\nb\n", "a\nc\n")
    assert diff.splitlines() == [
        "--- incumbent",
        "+++ candidate",
        "@@ -1,2 +1,2 @@",
        " a",
        "-b",
        "+c",
    ]
    # A missing final newline does not glue lines together.
    assert "+c" in instruction_diff("a", "a\nc").splitlines()


def test_added_text_is_the_new_lines() -> None:
    assert added_text("a\nb\n", "a\n  b \nc\n\nd") == "c\nd"
    assert added_text("a", "a") == ""


# --- template_variables -----------------------------------------------------------------


def test_template_variables_single_and_double_braces() -> None:
    text = "Hi {user}, today is {{ date }} in {{city}}; {_x1} and {{{weird}}}."
    assert template_variables(text) == {"user", "date", "city", "_x1", "weird"}


def test_json_braces_are_not_variables() -> None:
    text = 'Reply as {"a": 1, "b": [2]} or {} or { } or {1} or {a-b} or {x.y} or {"k": {"n": 2}}.'
    assert template_variables(text) == set()


# --- required_sections ------------------------------------------------------------------


def test_required_sections_in_order_without_owned_ones() -> None:
    text = (
        "# Role\nx\n## Rules ##\n###   Sub   rule\n"
        "## Playbook\n- a\n### Owned sub\n- b\n"
        "## Examples\nRequest: q\n"
        "## Output\n####### not a heading\n#hashtag\n    # indented code\n"
        "```python\n# a comment\n```\n###### Six\n"
    )
    assert required_sections(text) == [
        "# Role",
        "## Rules",
        "### Sub rule",
        "## Output",
        "###### Six",
    ]


def test_a_playbook_subheading_is_not_owned() -> None:
    assert required_sections("## Tools\n### Playbook\n") == ["## Tools", "### Playbook"]


# --- leaked_text ------------------------------------------------------------------------


def test_a_long_protected_text_leaks_by_any_six_words() -> None:
    added = "- Remember: THE CAPITAL of Peru, is... Lima!"
    assert leaked_text(added, ["the capital of Peru is Lima, of course"]) == (
        "the capital of Peru is Lima, of course"
    )
    # Five words in a row are not enough; six are.
    assert leaked_text("the capital of peru is", ["the capital of Peru is Lima"]) is None
    assert leaked_text("so the capital of Peru is Lima", ["the capital of Peru is Lima"])


def test_a_long_protected_text_in_the_middle_of_the_added_text() -> None:
    protected = ["x " * 10 + "alpha beta gamma delta epsilon zeta eta theta"]
    assert leaked_text("before beta gamma delta epsilon zeta eta after", protected) is not None
    assert leaked_text("before beta gamma delta epsilon after zeta eta", protected) is None
    assert leaked_text("beta gamma delta epsilon zeta eta", protected, n=7) is None


def test_short_protected_texts() -> None:
    assert leaked_text("The answer is 391.", ["391"]) is None  # a bare number
    assert leaked_text("Pi is 3.14 and a thousand is 1,000", ["3.14", "-1,000"]) is None
    assert leaked_text("Say yes when sure.", ["yes", "Yes."]) is None  # one short word
    assert leaked_text("Answer Lima for Peru.", ["Lima"]) == "Lima"
    assert leaked_text("Fly to New York.", ["new  YORK"]) == "new YORK"
    assert leaked_text("It is a yes sir", ["yes, sir!"]) is not None  # two words count
    # Words must match whole and in a row.
    assert leaked_text("Limassol is far.", ["Lima"]) is None
    assert leaked_text("York is new.", ["New York"]) is None


def test_leaked_text_returns_the_first_match_shortened() -> None:
    long = "an objective that goes on " + "and on " * 40
    result = leaked_text("nothing here; " + long, ["absent words here", long, "nothing"])
    assert result is not None and len(result) <= 80 and result.endswith("…")
    assert result.startswith("an objective that goes on")


def test_leaked_text_edges() -> None:
    assert leaked_text("", ["the capital of Peru is Lima"]) is None
    assert leaked_text("anything at all", []) is None
    assert leaked_text("anything at all", ["", "  ", "!!!"]) is None
    with pytest.raises(ValueError, match="at least 1"):
        leaked_text("a", ["a"], n=0)


# --- check_candidate --------------------------------------------------------------------


def test_a_good_candidate_passes() -> None:
    candidate = add_playbook_bullets(BASE, ["Give the number alone."])
    assert check_candidate(BASE, candidate, max_chars=10_000, protected=[PERU, "Lima"]) is None


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ("", "empty"),
        ("  \n ", "empty"),
        (BASE, "unchanged"),
        ("\n" + BASE + "\n\n", "unchanged"),
        (BASE + "x" * 200, "over the limit of 200"),
        (BASE.replace("{user}", "the user"), "template variable(s) {user}"),
        (BASE.replace("## Rules", "## Guidelines"), "required section(s) '## Rules'"),
        (BASE.replace("## Rules", "### Rules"), "required section(s) '## Rules'"),
        (BASE + "\nAlways answer Lima for Peru.\n", "validation or holdout"),
        (
            BASE + "\nQ: What's the capital of Peru? Answer with the city.\n",
            "validation or holdout",
        ),
    ],
)
def test_bad_candidates_are_rejected(candidate: str, reason: str) -> None:
    max_chars = 200 if "x" * 200 in candidate else 10_000
    result = check_candidate(BASE, candidate, max_chars=max_chars, protected=[PERU, "Lima"])
    assert result is not None and reason in result
    assert result.endswith(".") and result.count(". ") == 0


def test_rejections_do_not_quote_protected_text() -> None:
    result = check_candidate(BASE, BASE + "Lima.\n", max_chars=10_000, protected=["Lima"])
    assert result is not None and "Lima" not in result


def test_text_the_incumbent_already_had_is_not_a_leak() -> None:
    incumbent = BASE + "Example: the capital of Peru is Lima.\n"
    candidate = add_playbook_bullets(incumbent, ["Be brief."])
    protected = ["the capital of Peru is Lima"]
    assert check_candidate(incumbent, candidate, max_chars=10_000, protected=protected) is None


def test_owned_sections_may_change_and_others_may_be_added_or_moved() -> None:
    incumbent = add_playbook_bullets(with_examples(BASE, [("q", "a")]), ["Old"])
    candidate = "## Rules\n- Be brief.\n\n# Role\nNew role text for {user}.\n\n## Extra\nMore.\n"
    assert check_candidate(incumbent, candidate, max_chars=10_000) is None


def test_the_length_limit_is_inclusive() -> None:
    candidate = BASE + "More.\n"
    assert check_candidate(BASE, candidate, max_chars=len(candidate)) is None
    assert check_candidate(BASE, candidate, max_chars=len(candidate) - 1) is not None


def test_every_missing_variable_and_section_is_named() -> None:
    incumbent = "# A\n{x} {{y}}\n# B\n"
    assert check_candidate(incumbent, "# A\nnothing\n# B\n", max_chars=100) == (
        "The candidate drops the incumbent's template variable(s) {x}, {y}."
    )
    assert check_candidate(incumbent, "{x} {{y}} # A", max_chars=100) == (
        "The candidate drops the incumbent's required section(s) '# A', '# B'."
    )
