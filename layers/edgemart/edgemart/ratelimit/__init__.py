"""Sliding-window rate limiting: pure window logic (`window`), a backend protocol (`base`),
one module per backend, the shared-with-local-fallback wrapper, policies and the middleware."""
