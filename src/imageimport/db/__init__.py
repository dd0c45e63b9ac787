"""Persistence: models, engines, migrations and the queries the services share."""
