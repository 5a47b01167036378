"""``python -m factoryctl``."""

from factoryctl.cli.main import entry

if __name__ == "__main__":
    entry()
