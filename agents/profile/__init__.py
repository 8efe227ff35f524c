"""Live profiles: the RFM fold (pure), the ClickHouse rows of what it did, the keeper that runs
the customer step over a batch inside one Redis unit."""
