"""Training with Lightning: the module, the trainer and the model card."""
