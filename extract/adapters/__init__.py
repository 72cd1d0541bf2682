"""Built-in adapters (``--adapter reference``). Importing this package does not load torch."""
