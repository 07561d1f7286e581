"""tests/bench."""

import os

# The benchmark meshes run plaintext unless a section asks for TLS (gateway --tls on|both):
# every process they start inherits this. VOICEAI_TLS=off is the only way to plaintext.
os.environ.setdefault("VOICEAI_TLS", "off")
