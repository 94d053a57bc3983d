"""durable-jobs: strictly typed durable background jobs."""
