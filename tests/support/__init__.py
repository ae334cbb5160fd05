"""What the tests share that is not a fixture: paths, run configs, messages, fake results.

Not tests: pytest collects nothing here (no ``test_*`` modules). A test module imports
from here, never from another test module, so each test file can move or go on its own.
Subprocess code in the tests imports from here too; keep these modules light (no torch
at import) where a child process measures what it imports.
"""
