"""AWS adapters: boto3 clients, registry (AMIs + SSM channels), sandbox, rotator I/O."""
