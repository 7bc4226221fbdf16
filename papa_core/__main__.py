"""Command line: ``python -m papa_core demo [...]``."""
from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv=None) -> int:
    from . import demo
    from .errors import PapaError

    parser = argparse.ArgumentParser(prog="python -m papa_core", description="ComfyUI-PAPA engine tools")
    sub = parser.add_subparsers(dest="command", required=True)
    demo.build_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            return demo.run(args)
    except PapaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the session folder holds every completed round", file=sys.stderr)
        return 130
    except EOFError:  # --interactive with its input closed before the last round
        print("the input ended before the last round: the session folder holds every completed round",
              file=sys.stderr)
        return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
