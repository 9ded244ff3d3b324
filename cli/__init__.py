"""The ``chorus`` command: a thin dispatcher over the components' subcommands."""
