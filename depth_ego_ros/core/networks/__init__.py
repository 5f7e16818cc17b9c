"""One file per network."""
