"""The `quantscope` command line."""
