"""The hub's database: tables, migrations, connection pools, the embedded server."""
