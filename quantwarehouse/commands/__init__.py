"""One module per `orchestrate.py` subcommand."""
