"""closedloop: the stages of the loop (one module each) and the few modules they share."""
