"""Outside a pipeline the steps are plain Python: unit-test them as such."""

from __future__ import annotations

from flows.reviews import clean, count, not_empty, reviews_pipeline, score


def test_steps_are_plain_functions() -> None:
    cleaned = clean(["Great, love it ", "", "awful"])
    assert cleaned == ["great, love it", "awful"]
    assert score(cleaned) == [2, -1]
    assert count(cleaned) == 2 and not_empty(2) is True


def test_the_graph() -> None:
    graph = reviews_pipeline.record()
    assert [n["name"] for n in graph.nodes] == ["clean", "count", "not_empty", "score",
                                                 "summarize"]
    assert graph.nodes[3]["cache"] is True
