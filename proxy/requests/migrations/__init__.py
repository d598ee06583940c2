"""The request store's schema migrations (Alembic), applied by `RequestStore.migrate`."""
