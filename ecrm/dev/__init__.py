"""Dev-only helpers of the demo and the benchmark: synthetic traffic, worker processes."""
