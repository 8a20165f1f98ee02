"""Networks and pickle-free model directories (plain torch: no Lightning here)."""
