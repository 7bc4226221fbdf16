"""The test suite (``bash tools/test.sh``); shared helpers live in ``papa_testkit``."""
