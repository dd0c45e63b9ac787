"""The worker service: pulls jobs and processes them."""
