"""A multi-step pipeline: score product reviews, guarded by a check and a metric bound.

    clean ──> score ──> summarize
        └───> count ──┘   (count and score run in parallel)
    not_empty: check on count (error)

Outside a pipeline every function below is plain Python (see test_reviews.py).
"""

from __future__ import annotations

from gristmill import Gristmill, check, pipeline, step

POSITIVE = {"good", "great", "love", "excellent", "fine"}
NEGATIVE = {"bad", "awful", "hate", "broken", "poor"}


@step
def clean(reviews: list) -> list:
    """Lower-case, strip, drop empty reviews."""
    return [r.strip().lower() for r in reviews if isinstance(r, str) and r.strip()]


@step(cache=True)
def score(reviews: list) -> list:
    """One score per review: positive minus negative words (cached: same reviews, same
    scores)."""
    scores = []
    for review in reviews:
        words = set(review.replace(",", " ").replace(".", " ").split())
        scores.append(len(words & POSITIVE) - len(words & NEGATIVE))
    return scores


@step
def count(reviews: list) -> int:
    return len(reviews)


@step(outputs={"mean": "number", "share_positive": "number"})
def summarize(scores: list, total: int) -> dict:
    mean = sum(scores) / total if total else 0.0
    share = sum(1 for s in scores if s > 0) / total if total else 0.0
    # recorded on the node's execution; the pipeline's metric bound reads it
    Gristmill(progress=False).record_metric_value("share_positive", share)
    return {"mean": mean, "share_positive": share}


@check(severity="error")
def not_empty(total: int) -> bool:
    return total > 0


@pipeline(metric_bounds={"share_positive": {"min": 0.2, "severity": "warning"}})
def reviews_pipeline(reviews: list) -> dict:
    cleaned = clean(reviews)
    total = count(cleaned)
    not_empty(total)
    summary = summarize(scores=score(cleaned), total=total)
    return {"mean": summary["mean"], "share_positive": summary["share_positive"]}
