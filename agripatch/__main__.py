"""`python -m agripatch ...` (what torchrun launches): the same CLI as the `agripatch` command."""

from agripatch.cli import main

if __name__ == "__main__":
    main()
