"""The reference prediction server and the traffic simulator."""
