"""agripatch.pipeline."""
