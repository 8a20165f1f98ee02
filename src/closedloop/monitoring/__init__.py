"""Live monitoring: per-window numbers, a label-free accuracy estimate, the page and alerts."""
