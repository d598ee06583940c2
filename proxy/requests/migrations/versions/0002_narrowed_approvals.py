"""What an approval allowed, where it is less than was asked (sites, pages, last day).

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
    # Null: approved as it stood. Kept with the decision, as evidence of what the approver allowed.
    op.add_column("request_decisions", sa.Column("narrowed", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("request_decisions", "narrowed")
