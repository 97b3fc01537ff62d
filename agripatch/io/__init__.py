"""agripatch.io."""
