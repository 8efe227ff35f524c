"""`ecrm api`: Segment-compatible ingestion, the profile API, metrics and the dashboard."""
