"""Rollout: a prediction's role (the version that answered, or the one that scored the request
off the response path as a shadow), its compute time, and, on shadow rows, how the candidate
agreed with the stable version; an index to find a request's rows by text.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot alter a table in place (PostgreSQL runs plain ALTER TABLEs).
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("role", sa.String(8), nullable=False, server_default="answer"))
        batch.add_column(sa.Column("compute_ms", sa.Float, nullable=True))
        batch.add_column(sa.Column("agree_top1", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("jaccard", sa.Float, nullable=True))
        batch.add_column(sa.Column("score_delta", sa.Float, nullable=True))
    op.create_index("ix_predictions_request_id_position", "predictions", ["request_id", "position"])


def downgrade() -> None:
    op.drop_index("ix_predictions_request_id_position", table_name="predictions")
    with op.batch_alter_table("predictions") as batch:
        for column in ("score_delta", "jaccard", "agree_top1", "compute_ms", "role"):
            batch.drop_column(column)
