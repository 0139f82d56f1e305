"""One module per `meshlm` command (see COMMANDS in experiments/cli.py). A command imports libraries, never another
command; modules whose names start with `_` are helpers the commands share."""
