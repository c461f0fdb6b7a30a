"""The hub simulator: an I/O-free authentication engine and the thin HTTP service around it."""
