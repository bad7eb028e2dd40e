"""`python -m vardbio` is the `vardbio` command (also under `accelerate launch -m vardbio`)."""
import sys

from vardbio.cli import main

sys.exit(main())
