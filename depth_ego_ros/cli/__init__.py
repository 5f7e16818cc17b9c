"""The depth-ego command line."""
