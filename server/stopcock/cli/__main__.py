"""`python -m stopcock.cli`: the same as the `stopcock` command."""

from stopcock.cli import main

if __name__ == "__main__":
    main()
