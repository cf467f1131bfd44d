"""``python -m vulnattest``."""

from vulnattest.cli import main

main()
