"""User-facing errors: each carries a one-line message the CLI prints before exiting non-zero."""


class MetaINRError(Exception):
    """Base class for errors caused by user input (data, configs, checkpoints, bitstreams)."""


class DataError(MetaINRError):
    """Missing, empty, corrupt or wrongly shaped input data."""


class ConfigError(MetaINRError):
    """Invalid or inconsistent configuration."""


class CheckpointError(MetaINRError):
    """Missing, damaged or incompatible checkpoint."""


class DivergenceError(MetaINRError):
    """Training produced a non-finite loss or parameters."""
