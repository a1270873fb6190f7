"""Live quality and drift: a version's reference profile, captured on its validation rows at
publish (:mod:`.profile`), and the figures of its logged predictions and their feedback against
it (:mod:`.figures`, :mod:`.drift`), and how a candidate's answers agree with the stable
version's (:mod:`.agreement`). Plain numpy and the standard library: no database, no
torch; the rows come from whoever reads them (``shared.inference_log`` in the API).
"""

from shared.live.agreement import Agreement, agreement, canary_share
from shared.live.drift import psi
from shared.live.figures import LiveFigures, RowLike, live_figures, top_tags_for_labels
from shared.live.profile import (
    PROFILE_FILE,
    SCORE_EDGES,
    TOKEN_EDGES,
    build_profile,
    histogram,
    load_profile,
    save_profile,
)

__all__ = [
    "PROFILE_FILE",
    "SCORE_EDGES",
    "TOKEN_EDGES",
    "Agreement",
    "LiveFigures",
    "RowLike",
    "agreement",
    "build_profile",
    "canary_share",
    "histogram",
    "live_figures",
    "load_profile",
    "psi",
    "save_profile",
    "top_tags_for_labels",
]
