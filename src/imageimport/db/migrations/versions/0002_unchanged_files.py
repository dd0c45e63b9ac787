"""what a re-import compares: a listed file's modification time, and the imports of a folder

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("import_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("modified", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("imports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_imports_provider_folder_id", ["provider", "folder_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("imports", schema=None) as batch_op:
        batch_op.drop_index("ix_imports_provider_folder_id")
    with op.batch_alter_table("import_items", schema=None) as batch_op:
        batch_op.drop_column("modified")
