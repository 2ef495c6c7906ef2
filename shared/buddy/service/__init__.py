"""Service layer: use cases over the domain, talking to the world through ports."""
