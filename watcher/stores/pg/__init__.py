"""The PostgreSQL store: the same ports as the SQLite one, for several replicas on one database."""
