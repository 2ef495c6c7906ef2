"""Entry points: translate HTTP requests and CloudEvents into service calls."""
