"""Fault-matrix tests: one module per group of reliability.md section 6; tests/faults/README.md maps every row."""
