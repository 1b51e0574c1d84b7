"""DVC stage entry points (``python -m pipelines.<stage> <item>``): argument parsing and wiring only."""
