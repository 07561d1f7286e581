"""``python -m gateway.cli``: the ``voiceai`` command without the installed script."""

import sys

from gateway.cli.command import main

sys.exit(main())
