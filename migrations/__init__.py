"""Numbered schema migrations, applied in order by peewee's ``playhouse.migrations.Runner``."""
