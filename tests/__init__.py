"""The test suite (``bash scripts/test.sh``); shared helpers live in ``papa_testkit``."""
