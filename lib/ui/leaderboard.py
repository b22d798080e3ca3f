"""What the Leaderboard page shows, and the cut-off lines of the Inspect page; no Streamlit here.

Students see every user's public score and their own rank; instructors also see the private
score and the private rank (the final ranking, as on Kaggle). User names arrive as table
cells (a dataframe shows them as plain text) or escaped for markdown (lib.ui.text).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from lib.eval import cutoffs
from lib.eval.leaderboard import Entry, Standing, rank_users
from lib.jobs.queue import acting_names
from lib.ui.text import as_plain_markdown

EMPTY = "–"


def cutoff_lines(metrics: dict) -> list[str]:
    """The Inspect page's sentences on the course's cut-offs for a checkpoint's recorded metrics."""
    try:
        settings = cutoffs.load_settings()
    except ValueError as err:
        return [f"The cut-offs cannot be read: {as_plain_markdown(str(err))}"]
    return cutoffs.long_text(cutoffs.verdicts(metrics, settings))


def is_me(user: str, me: Iterable[str]) -> bool:
    """Whether a job's user is the person acting as ``me`` (names compared as the job queue does)."""
    return bool(acting_names(user) & acting_names(list(me)))


def standings(entries: Sequence[Entry]) -> tuple[list[Standing], dict[str, int]]:
    """Each user's best run by public AUC, ranked; and the private rank of those same runs
    (a student's best public run is the one they would submit; the private part grades it)."""
    public = rank_users(entries, "public_auc")
    chosen = [Entry(s.user, s.run, s.public_auc, s.private_auc) for s in public]
    private = {s.user: s.rank for s in rank_users(chosen, "private_auc")}
    return public, private


def _score(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def board_rows(ranked: list[Standing], private_ranks: dict[str, int], me: Iterable[str],
               show_private: bool) -> list[dict]:
    """The table: rank, user, run, public AUC; the private columns only when ``show_private``."""
    me = list(me)
    rows = []
    for standing in ranked:
        row = {"rank": standing.rank, "user": standing.user, "you": "◀" if is_me(standing.user, me) else "",
               "best run": standing.run, "public AUC": _score(standing.public_auc)}
        if show_private:
            row["private AUC"] = _score(standing.private_auc)
            row["private rank"] = private_ranks.get(standing.user)
        rows.append(row)
    return rows


def my_rank_text(ranked: list[Standing], me: Iterable[str]) -> str:
    """Markdown: "You are **3rd** of 12 on the public board (AUC 0.912, run ...)" or how to get there."""
    me = list(me)
    for standing in ranked:
        if is_me(standing.user, me):
            score = EMPTY if standing.public_auc is None else f"{standing.public_auc:.4f}"
            return (f"You are **#{standing.rank}** of {len(ranked)} on the public board, with public AUC "
                    f"{score} (run {as_plain_markdown(standing.run)}).")
    if not acting_names(me):
        return "Type your name in the sidebar (or sign in) to find your own rank."
    return "None of your runs is on the board yet: a run appears once it has saved a best checkpoint."
