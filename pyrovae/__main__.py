"""``python -m pyrovae`` and the ``pyrovae`` command: start the command line, stopping cleanly on
Ctrl-C or SIGTERM even while torch and Pyro are still being imported."""

from __future__ import annotations

import signal
import sys


def main() -> None:
    """Import the command line (seconds: torch, Pyro) and run it; a SIGINT or SIGTERM that arrives
    outside a command's own handling ends with one line and exit code 130 or 143, no traceback."""
    from .signals import Stopped, exit_code, received, stop_on_sigterm

    try:
        with stop_on_sigterm():
            from .cli import main as cli

            cli(prog_name="pyrovae")
    except (KeyboardInterrupt, Stopped) as stop:
        name = getattr(stop, "signal_name", "SIGINT")
        print(f"pyrovae: stopped by {name}", file=sys.stderr)
        sys.exit(exit_code(stop))
    except Exception:  # a module left half-imported by the stop fails in its own way: that is the stop
        name = received()
        if name is None:
            raise
        print(f"pyrovae: stopped by {name}", file=sys.stderr)
        sys.exit(128 + int(signal.Signals[name]))


if __name__ == "__main__":
    main()
