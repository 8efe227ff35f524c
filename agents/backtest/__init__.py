"""A rules file replayed over ClickHouse history through the same customer step as the worker."""
