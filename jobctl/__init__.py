"""jobctl: run shell commands on a cluster of machines, coordinated through one database."""

__version__ = "0.1.0"
