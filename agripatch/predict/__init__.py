"""agripatch.predict."""
