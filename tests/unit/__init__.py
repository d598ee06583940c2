"""Unit tests, in folders that mirror the code (audit/, directory/, identity/, metrics/, reports/, addons/).

The __init__.py files make each folder a package (unit.audit, unit.directory, ...), so test modules
in different folders may share a basename (audit/test_config.py, metrics/test_config.py).
"""
