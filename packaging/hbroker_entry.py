"""Entry point of the single-file binary (`packaging/hbroker.spec`): the `hbroker` command.

`hbroker --check-bundle FILE` is the build's own check (`bundle_check.py`), not a user command;
everything else goes to `hbroker.cli`, the same CLI as the Python package.
"""

from __future__ import annotations

import sys


def main() -> int:
    if sys.argv[1:2] == ["--check-bundle"]:
        import bundle_check

        return bundle_check.check_main(sys.argv[2:])
    from hbroker.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
