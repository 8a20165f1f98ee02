"""The gate: the verdict on a candidate from the checks declared in conf/gates/."""
