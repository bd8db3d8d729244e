"""The execution store, the one owner of SQL: schema, migrations, the run transaction,
definitions, tokens and stats.
"""
