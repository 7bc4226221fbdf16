"""Setup, demo and maintenance tools; the Python ones run from the repository root as ``python -m tools.<name>``.

(``scripts/`` holds only the webui extension entry: Forge and A1111 load every ``scripts/*.py`` as a script.)
"""
