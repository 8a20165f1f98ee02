"""models/registry.yaml: promotion, rollback, the champion and deployment."""
