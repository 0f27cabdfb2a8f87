"""``python -m asyncapy``: the command line (see ``asyncapy.cli``)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
