"""Verification: the plan checker, the catalogue of tiny configs and cases, reference processors.

The runtime never imports this package (`tests/test_structure.py`)."""
