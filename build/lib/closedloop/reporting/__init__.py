"""The benchmark report: the pull-request comment and its HTML page."""
