"""The distributed mode on one machine: real PostgreSQL, NATS JetStream and SeaweedFS S3 from
pip packages (the `devstack` extra), the API and workers. See `imageimport dev-stack`."""

from imageimport.devstack.run import DevStackOptions, run_dev_stack

__all__ = ["DevStackOptions", "run_dev_stack"]
