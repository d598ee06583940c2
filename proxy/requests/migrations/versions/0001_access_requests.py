"""Access requests, the decisions on them, and the open request per employee and site.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_requests",
        sa.Column("number", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("year", sa.Integer, nullable=False),
        sa.Column("employee", sa.String(128), nullable=False, index=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("department", sa.String(256), index=True),
        sa.Column("title", sa.String(256)),
        sa.Column("sites", sa.JSON, nullable=False),
        sa.Column("paths", sa.JSON, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("until", sa.Date, nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("escalated", sa.Boolean, nullable=False),
        sa.Column("grant_id", sa.String(64)),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "request_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request", sa.Integer, sa.ForeignKey("access_requests.number"), nullable=False, index=True),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("approver", sa.String(128), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("approved", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("delegated_by", sa.String(128)),
    )
    # One open request per employee and site: the primary key refuses a second.
    op.create_table(
        "open_requests",
        sa.Column("employee", sa.String(128), primary_key=True),
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("request", sa.Integer, sa.ForeignKey("access_requests.number"), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("open_requests")
    op.drop_table("request_decisions")
    op.drop_table("access_requests")
