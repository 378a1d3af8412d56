"""The test-suite. A package, so that its shared code is imported by name: `tests.helpers` (see
tests/helpers/__init__.py); the repository root is put on sys.path by pytest (`pythonpath` in
pyproject.toml)."""
