"""Tools for a person's machine: the CLI, the demo, an embedded S3 server, the SAM template reader, the webhook, synthetic sound."""
