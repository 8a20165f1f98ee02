"""Production capture: the prediction and feedback store, its export, and reading it back."""
