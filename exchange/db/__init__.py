"""The hub's database: tables, migrations, connection pools.

The finance tables are declared in their own module on the same metadata; importing it
here makes every user of ``exchange.db.tables.metadata`` (alembic, the schema test) see
them. It only imports ``exchange.db.tables``, which imports nothing from this package.
"""

from exchange.db import finance_tables as finance_tables
