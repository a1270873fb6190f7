"""The inference log: predictions the API answered and the feedback reported for them, in a
SQL database (a SQLite file by default, PostgreSQL when a URL names one), through SQLAlchemy 2
Core with Alembic-managed schema versions. Independent of the model code: no torch, no numpy.

Import from here only: the modules behind it are its private layout.
"""

from shared.inference_log.engine import DatabaseError, connect, database_url
from shared.inference_log.feedback import (
    FeedbackResult,
    NotLogged,
    import_feedback,
    record_feedback,
)
from shared.inference_log.migrate import upgrade
from shared.inference_log.queries import (
    LabelledRow,
    WindowRow,
    labelled_rows,
    recent_versions,
    window,
)
from shared.inference_log.rollout import Paired, RolloutRows, VersionActivity, rollout_rows
from shared.inference_log.rows import ROLE_ANSWER, ROLE_SHADOW, PredictionRow, title_hash
from shared.inference_log.writer import LogObserver, PredictionLog

__all__ = [
    "ROLE_ANSWER",
    "ROLE_SHADOW",
    "DatabaseError",
    "FeedbackResult",
    "LabelledRow",
    "LogObserver",
    "NotLogged",
    "Paired",
    "PredictionLog",
    "PredictionRow",
    "RolloutRows",
    "VersionActivity",
    "WindowRow",
    "connect",
    "database_url",
    "import_feedback",
    "labelled_rows",
    "recent_versions",
    "record_feedback",
    "rollout_rows",
    "title_hash",
    "upgrade",
    "window",
]
