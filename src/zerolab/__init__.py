"""zerolab: a lab of sandbox, Swift, PXE and Galera nodes, brought up from zero."""

__version__ = "0.1.0"
