"""How a run is put together: the sacred experiment, its config and its check, commands, DDP, loggers."""
