"""agripatch.data."""
