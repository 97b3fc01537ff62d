"""agripatch.engine."""
