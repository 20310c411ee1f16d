"""One-off studies that chose skflow's recipe; each docstring gives its commands."""
