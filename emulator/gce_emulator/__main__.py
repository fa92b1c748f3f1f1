"""`python -m gce_emulator`: starts the emulator (see the package's docstring)."""
import sys

from .server import main

sys.exit(main())
