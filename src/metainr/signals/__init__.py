"""Signals as (coordinate, value) pairs: converters, loaders and datasets per modality."""
