"""`python -m jobctl` runs the command line."""

from jobctl.cli import main

if __name__ == "__main__":
    main()
